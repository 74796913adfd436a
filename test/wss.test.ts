/**
 * The transport over TLS (`wss://`): nodes with a certificate signed by the cluster's CA talk;
 * a dialer that does not trust the certificate cannot reach the node. Certificates are made with
 * the `openssl` command at test time; the test is skipped where openssl is missing.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { WsHub } from '../src/net/hub.js'
import { silentLogger } from '../src/raft/types.js'
import { tempDir, waitFor } from './helpers.js'

const TLS_SECRET = '91d5f0a3c7e2b8469d1f5c0a3e7b2d84'

function haveOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

t.test('wss: authenticated, encrypted transport between two hubs', { skip: haveOpenssl() ? false : 'openssl not installed' }, async (t) => {
  const { dir, cleanup } = tempDir('sworm-tls-')
  t.teardown(cleanup)
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=sworm-test-ca')
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=127.0.0.1')
  const ext = join(dir, 'ext.cnf')
  execFileSync('sh', ['-c', `printf 'subjectAltName=IP:127.0.0.1\\n' > ${ext}`])
  ssl('x509', '-req', '-in', 'node.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.crt', '-days', '1', '-extfile', 'ext.cnf')
  const tls = { key: readFileSync(join(dir, 'node.key')), cert: readFileSync(join(dir, 'node.crt')), ca: readFileSync(join(dir, 'ca.crt')) }

  const a = new WsHub({ nodeId: 'a', listen: 'wss://127.0.0.1:0', secret: TLS_SECRET, tls, logger: silentLogger })
  const b = new WsHub({ nodeId: 'b', listen: 'wss://127.0.0.1:0', secret: TLS_SECRET, tls, logger: silentLogger })
  await a.start()
  await b.start()
  const ca = a.channel('g')
  const cb = b.channel('g')
  ca.setPeers({ b: `wss://127.0.0.1:${b.address.port}` })
  cb.setPeers({ a: `wss://127.0.0.1:${a.address.port}` })
  const got: unknown[] = []
  cb.onMessage((from, m) => got.push([from, m]))
  ca.send('b', { hello: 'over tls' })
  await waitFor(() => got.length === 1, 5000, 'a message over wss')
  t.same(got[0], ['a', { hello: 'over tls' }])

  // a dialer that does not trust the cluster CA cannot connect
  const stranger = new WsHub({ nodeId: 'c', listen: 'wss://127.0.0.1:0', secret: TLS_SECRET, tls: { key: tls.key, cert: tls.cert }, logger: silentLogger })
  await stranger.start()
  await t.rejects(stranger.discover(`wss://127.0.0.1:${a.address.port}`, 2000), { code: 'DISCOVERY' }, 'untrusted certificate refused')
  await Promise.all([a.close(), b.close(), stranger.close()])
})
