/**
 * The registration of a static name, with its worker's ref held in its own fields: one object a
 * name on every replica, where a registration and a ref object were two (at a million names, a
 * million objects fewer for the collector to mark, and about 70 bytes a name). It reads as any
 * {@link Registration} (`kind`, `ref`); `ref` makes a new {@link WorkerRef} at each read, so keep
 * the one you read rather than read it again in a loop.
 *
 * A static registration never changes once made (a name is registered, or unregistered, never
 * bound to another worker), which is what lets a snapshot in progress keep the object itself as a
 * name's value at its cut.
 * @module
 */
import type { Registration, RegistrationKind, WorkerRef } from './types.js'

/** A static name's registration (see the module documentation). */
export class StaticName implements Readonly<Registration> {
  /**
   * @param name - the name
   * @param sworm - the worker's sworm (one string shared by every registration)
   * @param refNode - the worker's node (the node record's string)
   * @param refInc - the worker's node incarnation (the node record's string)
   * @param id - the worker's id on that incarnation
   */
  constructor(
    readonly name: string,
    readonly sworm: string,
    readonly refNode: string,
    readonly refInc: string,
    readonly id: number,
  ) {}

  /** Always `'static'`. */
  get kind(): RegistrationKind {
    return 'static'
  }

  /** The worker answering to the name (a new object at each read). */
  get ref(): WorkerRef {
    return { sworm: this.sworm, node: this.refNode, inc: this.refInc, id: this.id }
  }

  /** A plain copy, as {@link RegistryState.registration} hands out. */
  copy(): Registration {
    return { name: this.name, ref: this.ref, kind: 'static' }
  }
}
