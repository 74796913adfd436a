/* The Sworm demo dashboard: live state over Server-Sent Events from the demo process (/api/events),
 * actions POSTed to /api/action. Plain DOM, inline SVG charts. */
/* global document, window, EventSource, fetch, performance */
'use strict'

const $ = (sel) => document.querySelector(sel)
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v
    else if (k === 'text') e.textContent = v
    else e.setAttribute(k, v)
  }
  for (const k of kids) e.append(k)
  return e
}
const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'))
const fmtMs = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`)
const clock = (t) => {
  const d = new Date(t)
  const p = (n, w = 2) => String(n).padStart(w, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`
}
const colorOf = (id) => `var(--n${((parseInt(id.replace(/\D/g, ''), 10) || 1) - 1) % 7 + 1})`

let ids = []
let state = null
let names = {}
const cards = new Map()
/** name -> { node, at } when a name appeared on a node (for the arrival highlight). */
const arrived = new Map()
let firstNames = true

// ------------------------------------------------------------------ actions

async function act(body) {
  $('#actionError').textContent = ''
  try {
    const res = await fetch('/api/action', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const r = await res.json()
    if (!r.ok) $('#actionError').textContent = r.error
  } catch (err) {
    $('#actionError').textContent = String(err)
  }
}

$('#partition').addEventListener('click', () => {
  const nodes = [...document.querySelectorAll('.node input.side:checked')].map((c) => c.dataset.node)
  void act({ op: 'partition', nodes })
})
$('#heal').addEventListener('click', () => {
  for (const c of document.querySelectorAll('.node input.side')) c.checked = false
  void act({ op: 'heal' })
})
$('#register').addEventListener('click', () => void act({ op: 'register', count: 100 }))
$('#rebalance').addEventListener('click', () => void act({ op: 'rebalance' }))
$('#search').addEventListener('input', () => renderNames())

// ------------------------------------------------------------------ nodes

function card(id) {
  let c = cards.get(id)
  if (c) return c
  const root = el('div', { class: 'node', 'data-node': id, style: `--c:${colorOf(id)}` })
  const role = el('span', { class: 'badge role' })
  const st = el('span', { class: 'badge state' })
  const workers = el('span', { class: 'workers', text: '–' })
  const fill = el('div')
  const dl = el('dl')
  const kill = el('button', { class: 'danger', 'data-action': 'kill', text: 'Kill' })
  const restart = el('button', { 'data-action': 'restart', text: 'Restart' })
  const drain = el('button', { 'data-action': 'drain', text: 'Drain' })
  const side = el('input', { type: 'checkbox', class: 'side', 'data-node': id })
  kill.addEventListener('click', () => void act({ op: 'kill', node: id }))
  restart.addEventListener('click', () => void act({ op: 'restart', node: id }))
  drain.addEventListener('click', () => void act({ op: drain.dataset.action, node: id }))
  side.addEventListener('change', () => update())
  root.append(
    el('div', { class: 'top' }, el('span', { class: 'id', text: id }), role, st),
    el('div', { class: 'big' }, workers, el('small', { text: ' workers' })),
    el('div', { class: 'wbar' }, fill),
    dl,
    el('div', { class: 'actions' }, kill, restart, drain, el('label', { title: 'put this node on the cut-off side of the next partition' }, side, 'cut off')),
  )
  $('#nodes').append(root)
  c = { root, role, st, workers, fill, dl, kill, restart, drain, side }
  cards.set(id, c)
  return c
}

function nodeState(n) {
  if (!n.alive) return 'killed'
  if (n.partitioned) return 'partitioned'
  if (n.lease === false) return 'fenced'
  if (n.draining) return 'draining'
  return 'alive'
}

function renderNodes() {
  const s = state
  const max = Math.max(1, ...s.nodes.map((n) => n.supervised))
  for (const n of s.nodes) {
    const c = card(n.id)
    const ns = nodeState(n)
    const role = n.alive ? (n.role === 'follower' && n.voter === false ? 'learner' : (n.role ?? '…')) : '—'
    c.root.dataset.role = role
    c.root.dataset.state = ns
    c.role.className = `badge role ${role}`
    c.role.textContent = role === 'leader' ? 'LEADER' : role
    c.st.className = `badge state ${ns}`
    c.st.textContent = ns === 'alive' && n.catchingUp ? 'catching up' : ns === 'fenced' ? 'lease lost' : ns
    c.workers.textContent = n.alive ? num(n.supervised) : '0'
    c.fill.style.width = `${n.alive ? (100 * n.supervised) / max : 0}%`
    const rows = [
      ['term', num(n.term)],
      ['commit', num(n.commit)],
      ['applied', num(n.applied)],
      ['lease', n.lease === null ? '–' : n.lease ? '<span class="lease-ok">held</span>' : '<span class="lease-lost">lost</span>'],
      ['pid', n.pid ?? '–'],
    ]
    c.dl.innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('')
    const busy = (op) => s.busy.includes(`${op}:${n.id}`)
    c.kill.disabled = !n.alive || busy('kill')
    c.restart.disabled = n.alive || busy('restart')
    c.drain.dataset.action = n.draining ? 'undrain' : 'drain'
    c.drain.textContent = n.draining ? 'Undrain' : 'Drain'
    c.drain.disabled = !n.alive || busy('drain') || busy('undrain')
    c.side.disabled = !!s.partition
    if (s.partition) c.side.checked = s.partition.includes(n.id)
  }
}

// ------------------------------------------------------------------ header, banner, buttons

function update() {
  if (!state) return
  const s = state
  renderNodes()
  const leader = s.nodes.find((n) => n.id === s.leader)
  $('#subtitle').textContent = `${ids.length} node processes · ${num(s.total)} supervised workers`
  $('#summary').innerHTML = [
    `leader <b>${s.leader ?? '<span class="lease-lost">none</span>'}</b>${leader ? ` term ${leader.term}` : ''}`,
    `running on healthy nodes <b>${num(s.running)}</b> / ${num(s.total)}`,
    s.partition ? `<span class="lease-lost">partitioned: {${s.partition.join(', ')}} cut off</span>` : 'network whole',
    s.duplicates.length ? `<span class="lease-lost">running twice: ${s.duplicates.join(', ')}</span>` : '<span class="lease-ok">no name runs twice ✔</span>',
  ].map((x) => `<span>${x}</span>`).join('')
  const b = $('#banner')
  if (s.quorum && !s.quorum.ok) {
    // no majority: registrations and moves wait until one is back; this is the design, not a fault
    b.className = 'banner bad'
    b.innerHTML = `✘ no quorum: <b>${s.quorum.up} of ${s.quorum.of}</b> nodes reachable. Unavailable by design until a majority is back (nothing acknowledged is lost, no name runs twice).`
  } else if (s.pending.length) {
    const p = s.pending.reduce((a, x) => (x.ms > a.ms ? x : a))
    b.className = 'banner pending'
    b.innerHTML = `<span class="spinner"></span> settling after <b>${p.label}</b>: ${num(s.running)} / ${num(s.total)} workers running on healthy nodes… <span class="time">${fmtMs(p.ms)}</span>`
  } else if (s.banner) {
    b.className = `banner ${s.banner.kind}`
    b.innerHTML = `${s.banner.kind === 'ok' ? '✔' : s.banner.kind === 'bad' ? '✘' : '⚠'} ${esc(s.banner.text).replace(/after ([\d.]+ m?s)/, 'after <span class="time">$1</span>')} <span class="muted">· ${clock(s.banner.at)}</span>`
  }
  const checked = [...document.querySelectorAll('.node input.side:checked')].length
  $('#partition').disabled = !!s.partition || checked === 0 || checked >= ids.length || s.busy.includes('partition:')
  $('#heal').disabled = !s.partition || s.busy.includes('heal:')
  $('#register').disabled = !s.leader || s.busy.includes('register:')
  $('#rebalance').disabled = !s.leader || s.busy.includes('rebalance:')
  renderCharts()
  renderGroups()
}

const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])

// ------------------------------------------------------------------ charts (inline SVG)

function chart(svg, series, lines, opts) {
  const W = 600, H = 130, L = 34, R = 6, T = 8, B = 16
  const now = Math.floor(state.now / 1000)
  const x = (t) => L + ((t - (now - 60)) / 60) * (W - L - R)
  let max = opts.min
  for (const s of series) for (const l of lines) if (s[l.key] !== null && s[l.key] > max) max = s[l.key]
  max = niceMax(max)
  const y = (v) => T + (1 - v / max) * (H - T - B)
  let out = ''
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f)
    out += `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#243040" stroke-width="1"/>`
    out += `<text x="${L - 4}" y="${yy + 3}" text-anchor="end">${fmtAxis(max * f)}</text>`
  }
  for (const s of [60, 45, 30, 15, 0]) out += `<text x="${x(now - s)}" y="${H - 3}" text-anchor="middle">${s ? `-${s}s` : 'now'}</text>`
  for (const l of lines) {
    if (l.bars) {
      const w = Math.max(1, (W - L - R) / 60 - 1.5)
      for (const s of series) if (s[l.key]) out += `<rect x="${x(s.t) - w}" y="${y(s[l.key])}" width="${w}" height="${H - B - y(s[l.key])}" fill="${l.color}" opacity=".75"/>`
    } else {
      let d = ''
      let pen = false
      for (const s of series) {
        const v = s[l.key]
        if (v === null || v === undefined) { pen = false; continue }
        d += `${pen ? 'L' : 'M'}${x(s.t).toFixed(1)},${y(v).toFixed(1)}`
        pen = true
      }
      if (d) out += `<path d="${d}" fill="none" stroke="${l.color}" stroke-width="1.8" ${l.dash ? 'stroke-dasharray="4 3"' : ''}/>`
      for (const s of series) if (s[l.key] !== null && s[l.key] !== undefined) out += `<circle cx="${x(s.t)}" cy="${y(s[l.key])}" r="1.6" fill="${l.color}"/>`
    }
  }
  if (opts.note) out += `<text x="${W - R - 4}" y="${T + 10}" text-anchor="end">${opts.note}</text>`
  svg.innerHTML = out
}
const niceMax = (v) => {
  const p = Math.pow(10, Math.floor(Math.log10(v)))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
  return 10 * p
}
const fmtAxis = (v) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : v >= 10 ? Math.round(v) : v.toFixed(v >= 1 ? 1 : 2).replace(/\.?0+$/, '') || '0')

function renderCharts() {
  const s = state.series
  const last = [...s].reverse().find((x) => x.latMean !== null)
  const total = s.reduce((a, x) => a + x.reg, 0)
  chart($('#chartReg'), s, [{ key: 'reg', color: 'var(--accent)', bars: true }], { min: 10, note: `${num(total)} in the last minute` })
  chart($('#chartLat'), s, [{ key: 'latP99', color: 'var(--warn)', dash: true }, { key: 'latMean', color: 'var(--ok)' }], {
    min: 5,
    note: last ? `latest: mean ${last.latMean.toFixed(1)} ms, p99 ≤ ${last.latP99} ms (${num(last.commits)} commits)` : 'no commits in the last minute',
  })
}

// ------------------------------------------------------------------ names and groups

function onNames(next) {
  const now = performance.now()
  for (const [node, list] of Object.entries(next)) {
    const before = new Set(names[node] ?? [])
    if (!firstNames) for (const n of list) if (!before.has(n)) arrived.set(n, { node, at: now })
  }
  firstNames = false
  names = next
  for (const [n, a] of arrived) if (now - a.at > 4000) arrived.delete(n)
  renderNames()
}

const byNumber = (a, b) => {
  const na = Number(a.slice(a.lastIndexOf(':') + 1)), nb = Number(b.slice(b.lastIndexOf(':') + 1))
  return na - nb || (a < b ? -1 : a > b ? 1 : 0)
}

function renderNames() {
  const q = $('#search').value.trim().toLowerCase()
  const now = performance.now()
  const box = $('#names')
  box.textContent = ''
  let shown = 0, all = 0
  for (const id of ids) {
    const list = (names[id] ?? []).filter((n) => !q || n.toLowerCase().includes(q)).sort(byNumber)
    all += (names[id] ?? []).length
    shown += list.length
    const chips = el('div', { class: 'chips' })
    const LIMIT = 400
    for (const n of list.slice(0, LIMIT)) {
      const c = el('span', { class: 'chip', text: n.startsWith('counter:') ? n.slice(8) : n, title: `${n} on ${id}` })
      const a = arrived.get(n)
      if (a && a.node === id) {
        c.classList.add('new')
        c.style.animationDelay = `-${Math.round(now - a.at)}ms`
      }
      chips.append(c)
    }
    if (list.length > LIMIT) chips.append(el('span', { class: 'more', text: `+ ${num(list.length - LIMIT)} more` }))
    box.append(el('div', { class: 'col', 'data-node': id, style: `--c:${colorOf(id)}` }, el('h3', { text: `${id} · ${num(list.length)}` }), chips))
  }
  $('#nameCount').textContent = q ? `${num(shown)} of ${num(all)} match` : `${num(all)} running (counter:N shown as N)`
}

function renderGroups() {
  const box = $('#groups')
  const gs = Object.entries(state.groups ?? {})
  const key = JSON.stringify(gs)
  if (box.dataset.key === key) return
  box.dataset.key = key
  box.textContent = ''
  if (!gs.length) box.append(el('p', { class: 'muted', text: 'no groups' }))
  for (const [g, members] of gs) {
    const chips = el('div', { class: 'chips' })
    for (const m of [...members].sort((a, b) => byNumber(a.name, b.name))) {
      chips.append(el('span', { class: 'chip', style: `--c:${colorOf(m.node)}`, text: `${m.name}@${m.node}`, title: `${m.name} runs on ${m.node}` }))
    }
    box.append(el('div', { class: 'group' }, el('h3', { text: `${g} · ${members.length} member${members.length === 1 ? '' : 's'}` }), chips))
  }
}

// ------------------------------------------------------------------ event log

function addLog(e) {
  const ol = $('#events')
  const li = el('li', { class: e.kind, 'data-at': String(e.at) }, el('time', { text: clock(e.at) }), el('span', { text: e.text }))
  // newest first, in time order (node events arrive in batches, a little late)
  let after = ol.firstElementChild
  while (after && Number(after.dataset.at) > e.at) after = after.nextElementSibling
  ol.insertBefore(li, after)
  while (ol.children.length > 300) ol.lastChild.remove()
}

// ------------------------------------------------------------------ live connection

function connect() {
  const es = new EventSource('/api/events')
  es.addEventListener('hello', (m) => {
    const h = JSON.parse(m.data)
    ids = h.ids
    $('#events').textContent = ''
    for (const e of h.log) addLog(e)
    state = h.state
    firstNames = true
    onNames(h.names)
    update()
  })
  es.addEventListener('state', (m) => {
    state = JSON.parse(m.data)
    update()
  })
  es.addEventListener('names', (m) => onNames(JSON.parse(m.data)))
  es.addEventListener('log', (m) => addLog(JSON.parse(m.data)))
  es.onopen = () => {
    $('#conn').className = 'conn'
    $('#conn').textContent = 'live'
  }
  es.onerror = () => {
    $('#conn').className = 'conn off'
    $('#conn').textContent = 'offline'
  }
}
window.addEventListener('load', connect)
