// The app every pod runs: a Sworm node configured from the environment (see README.md).
// Build the image with this file and `npm install sworm` (or your app around it).
import { Sworm } from 'sworm'

const env = (k, d) => {
  const v = process.env[k] ?? d
  if (v === undefined) throw new Error(`environment variable ${k} is required`)
  return v
}

const sworm = await Sworm.start({
  name: env('SWORM_NAME', 'app'),
  nodeId: env('SWORM_NODE_ID'), // the pod name
  listen: env('SWORM_LISTEN'), // where the other pods reach this one
  dataDir: env('SWORM_DATA_DIR', '/data'),
  secret: env('SWORM_SECRET'),
  // the headless Service: every pod's address, also before it is ready
  discovery: { dns: env('SWORM_DNS'), expect: Number(env('SWORM_EXPECT', '3')) },
  voters: Number(env('SWORM_VOTERS', '5')),
  ...(process.env.SWORM_ZONE ? { zone: process.env.SWORM_ZONE } : {}),
  ...(process.env.SWORM_DEAD_NODE_TIMEOUT_MS ? { deadNodeTimeoutMs: Number(process.env.SWORM_DEAD_NODE_TIMEOUT_MS) } : {}),
  metricsPort: 9464, // GET /metrics, /status and /ready: the readiness probe reads /ready
  // stopOnSignals is on by default: SIGTERM hands this pod's workers over, then the pod exits
})
await sworm.ready()
console.log(`sworm node ${sworm.nodeId} is up`)
