/**
 * The README's first command, in a browser: `npm run demo` serves a live dashboard. Starts the demo
 * in dashboard mode with 20 workers, drives the page in headless Chromium (playwright-core), kills
 * the leader from its button and checks that a new leader shows and the dead node's workers show
 * on the survivors (worker counts sum back to 20). Screenshot: /tmp/sworm-dashboard.png.
 * Skipped when /usr/bin/chromium is missing.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { waitFor } from './helpers.js'

const CHROMIUM = '/usr/bin/chromium'
const WORKERS = 20
const SCREENSHOT = '/tmp/sworm-dashboard.png'

/** Start the demo in dashboard mode; resolves with its URL once it prints `DASHBOARD <url>`. */
function startDemo(): { child: ChildProcess; url: Promise<string>; output: () => string } {
  const script = fileURLToPath(new URL('../demo/run.js', import.meta.url))
  const child = spawn(process.execPath, [script, '--workers', String(WORKERS), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no DASHBOARD line within 60 s:\n${out}`)), 60_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /^DASHBOARD (http:\/\/\S+)$/m.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`the demo exited (code ${code}) before serving:\n${out}`))
    })
  })
  return { child, url, output: () => out }
}

t.test('the dashboard shows the cluster and a leader kill', { timeout: 180_000, skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)` }, async (t) => {
  const { chromium } = await import('playwright-core')
  const demo = startDemo()
  const exited = new Promise<number | null>((r) => demo.child.on('exit', (code) => r(code)))
  const profile = await mkdtemp(join(tmpdir(), 'sworm-chromium-'))
  t.teardown(async () => {
    if (demo.child.exitCode === null) demo.child.kill('SIGKILL')
    await rm(profile, { recursive: true, force: true })
  })
  const url = await demo.url
  t.comment(`dashboard at ${url}`)

  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1440, height: 1100 },
  })
  try {
    const page = context.pages()[0] ?? (await context.newPage())
    const pageErrors: string[] = []
    page.on('pageerror', (err) => pageErrors.push(String(err)))
    await page.goto(url)

    // five nodes, one leader, all workers placed
    // (page-side code as strings: the test compiles without the DOM types)
    await page.waitForFunction(
      `(() => {
        const cards = [...document.querySelectorAll('.node[data-node]')]
        const sum = cards.reduce((a, c) => a + Number(c.querySelector('.workers').textContent), 0)
        return cards.length === 5 && document.querySelectorAll('.node[data-role="leader"]').length === 1 && sum === ${WORKERS}
      })()`,
      undefined,
      { timeout: 30_000 },
    )
    const leader = await page.getAttribute('.node[data-role="leader"]', 'data-node')
    t.ok(leader, `leader shown: ${leader}`)
    const namesOn = async (): Promise<Array<[string, string[]]>> =>
      (await page.evaluate(
        `[...document.querySelectorAll('#names .col')].map((c) => [c.dataset.node, [...c.querySelectorAll('.chip')].map((x) => x.title.split(' on ')[0])])`,
      )) as Array<[string, string[]]>
    const namesBefore = (await namesOn()).find(([n]) => n === leader)![1]
    t.ok(namesBefore.length > 0, `the leader runs ${namesBefore.length} workers`)

    // kill the leader from its button
    await page.click(`.node[data-node="${leader}"] button[data-action="kill"]`)
    await page.waitForFunction(
      `(() => {
        const dead = ${JSON.stringify(leader)}
        const cards = [...document.querySelectorAll('.node[data-node]')]
        const deadCard = cards.find((c) => c.dataset.node === dead)
        const newLeader = cards.find((c) => c.dataset.role === 'leader' && c.dataset.node !== dead)
        const live = cards.filter((c) => c.dataset.state !== 'killed')
        const sum = live.reduce((a, c) => a + Number(c.querySelector('.workers').textContent), 0)
        return deadCard.dataset.state === 'killed' && newLeader !== undefined && live.length === 4 && sum === ${WORKERS}
      })()`,
      undefined,
      { timeout: 30_000 },
    )
    const newLeader = await page.getAttribute('.node[data-role="leader"]', 'data-node')
    t.not(newLeader, leader, `new leader ${newLeader}`)
    await page.waitForFunction(`/all \\d+ workers running again after/.test(document.querySelector('#banner').textContent)`, undefined, { timeout: 15_000 })
    const banner = (await page.textContent('#banner'))!.trim()
    t.match(banner, new RegExp(`all ${WORKERS} workers running again after [\\d.]+ m?s`), `banner: ${banner}`)

    // the dead node's names now show on the survivors (the name lists refresh on their own poll,
    // which may come a little after the counts)
    const settledNames = async (): Promise<boolean> => {
      const w = await namesOn()
      const live = new Set(w.filter(([n]) => n !== leader).flatMap(([, ns]) => ns))
      return w.find(([n]) => n === leader)![1].length === 0 && namesBefore.every((n) => live.has(n)) && live.size === WORKERS
    }
    await waitFor(settledNames, 10_000, 'the name lists to show every name on the live nodes').catch(() => {})
    const where = await namesOn()
    const deadCol = where.find(([n]) => n === leader)![1]
    t.equal(deadCol.length, 0, 'no names left on the dead node')
    const elsewhere = new Set(where.filter(([n]) => n !== leader).flatMap(([, ns]) => ns))
    t.same(namesBefore.filter((n) => !elsewhere.has(n)), [], "every one of the dead node's names runs on another node")
    t.equal(elsewhere.size, WORKERS, `${WORKERS} distinct names on the live nodes`)
    // the nodes' events come in batches over IPC, possibly a little after the counts settle
    const logHas = (re: RegExp): Promise<boolean> =>
      page
        .waitForFunction(`${re.toString()}.test(document.querySelector('#events').textContent)`, undefined, { timeout: 10_000 })
        .then(
          () => true,
          () => false,
        )
    t.ok(await logHas(new RegExp(`${newLeader} elected leader`)), 'the event log shows the election')
    t.ok(await logHas(new RegExp(`${leader} declared down`)), 'the event log shows the node declared down')
    t.ok(await logHas(new RegExp(`moved ${leader} →`)), 'the event log shows the moves')

    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    t.comment(`screenshot: ${SCREENSHOT}`)

    // the Rebalance button asks the leader to even the workers out
    t.equal(await page.isDisabled('#rebalance'), false, 'a Rebalance button, enabled while there is a leader')
    await page.click('#rebalance')
    t.ok(await logHas(/you asked for a rebalance/), 'the activity log shows the rebalance')

    // losing the majority is shown as what it is: unavailable by design, not "settling"
    const others = (await page.evaluate(`[...document.querySelectorAll('.node[data-node]')].filter((c) => c.dataset.state !== 'killed').map((c) => c.dataset.node)`)) as string[]
    for (const id of others.slice(0, 2)) await page.click(`.node[data-node="${id}"] button[data-action="kill"]`)
    await page.waitForFunction(`/no quorum: 2 of 5 nodes reachable/.test(document.querySelector('#banner').textContent)`, undefined, { timeout: 15_000 })
    t.match((await page.textContent('#banner'))!, /Unavailable by design/, 'with no majority the banner says so')
    t.same(pageErrors, [], 'no errors in the page')
  } finally {
    await context.close()
  }

  demo.child.kill('SIGINT')
  t.equal(await exited, 0, 'the demo exits 0 on SIGINT (after stopping its nodes)')
  t.match(demo.output(), /stopping the nodes/)
})
