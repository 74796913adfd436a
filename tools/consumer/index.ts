// A consumer of the published package: type-checked against the packed tarball by
// tools/package-check.sh (strict, NodeNext), then imported at run time.
import {
  Sworm,
  NoWorkerError,
  OutcomeUnknownError,
  SwormError,
  silentLogger,
  systemClock,
  type Clock,
  type ClusterConfig,
  type MultiCallResult,
  type RaftStorage,
  type StartSpec,
  type SwormOptions,
  type Transport,
  type Worker,
  type WorkerContext,
  type WorkerRef,
  type Abortable,
  AbortError,
  type DiscoveryOptions,
  type AutopilotStep,
} from 'sworm'

const options: SwormOptions = {
  name: 'consumer',
  nodeId: 'n1',
  listen: 'ws://127.0.0.1:4001',
  peers: { n1: 'ws://127.0.0.1:4001' },
  dataDir: '/tmp/consumer-sworm',
  secret: '3f9a1c7e5b2d8046a1e9c3b7d5f20846',
  logger: silentLogger,
  castBufferSize: 100,
  voters: 3,
  zone: 'a',
  autopilot: { stabilizationMs: 1000 },
  stopOnSignals: ['SIGTERM'],
}
const discovery: DiscoveryOptions = { dns: 'sworm.default.svc.cluster.local', expect: 3 }
const joining: SwormOptions = { ...options, peers: undefined, discovery, deadNodeTimeoutMs: 600_000 }
const onStep = (step: AutopilotStep): string => `${step.action} ${step.node}: ${step.reason}`

let context: WorkerContext | undefined
const worker: Worker = {
  init: (ctx) => {
    context = ctx
  },
  handleCall: (msg: unknown) => ({ echo: msg, token: context?.fencingToken }),
}
const abortable: Abortable = { signal: AbortSignal.timeout(1000) }
const spec: StartSpec = { module: './worker.js', fn: 'start', args: [1], restart: 'permanent' }
const clock: Clock = systemClock
const config: ClusterConfig | undefined = undefined
const storage: RaftStorage | undefined = undefined
const transport: Transport | undefined = undefined

export async function main(): Promise<void> {
  await using sworm = await Sworm.start(options)
  await sworm.ready()
  const ref: WorkerRef = sworm.spawn(worker)
  const won: boolean = await sworm.registerName('echo', ref)
  const sup: WorkerRef = await sworm.registerName('sup', spec)
  try {
    const reply = await sworm.call<{ echo: unknown }>('echo', 'hi', { timeout: 1000, ...abortable })
    const where: WorkerRef | undefined = await sworm.whereisNameConsistent('echo', abortable)
    console.log(where?.id)
    console.log(reply.echo, won, sup.node)
  } catch (err) {
    if (err instanceof OutcomeUnknownError || err instanceof NoWorkerError || err instanceof AbortError) console.log(err.code)
    else if (err instanceof SwormError) throw err
  }
  const all: Array<MultiCallResult<{ echo: unknown }>> = await sworm.multiCall('room', 'x')
  for (const r of all) console.log(r.ok ? r.value.echo : r.error.code)
  await sworm.stop({ drain: false })
  console.log(clock.now() > 0, config, storage, transport, joining.discovery?.dns, onStep)
}
