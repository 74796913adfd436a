/**
 * Small questions about a Raft cluster configuration.
 * @module
 */

/** Whether `o` has its own property `k`. */
export const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k)

/** Whether `node` is a voter or a learner of the Raft configuration `cfg`. */
export const isMember = (cfg: { voters: Record<string, string>; learners: Record<string, string> }, node: string): boolean =>
  hasOwn(cfg.voters, node) || hasOwn(cfg.learners, node)
