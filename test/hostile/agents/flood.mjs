#!/usr/bin/env node
/**
 * Connection flood: opens `count` connections at once to a TCP echo server and holds
 * every one that works, to push the sandbox past its connection limit.
 *
 *   node flood.mjs '{"host":"echo.test","port":7,"count":1200}'
 *
 * Each connection writes one byte and waits for the echo (held: it got through) or for
 * the connection to fail (reset/closed: refused at the limit), each bounded by 10 s.
 * Then it closes everything, and checks that a new connection works again.
 * Prints `FLOOD {json}`.
 */
import net from 'node:net'
import { lookup } from 'node:dns/promises'

const cfg = JSON.parse(process.argv[2] ?? '{}')
const host = cfg.host ?? 'echo.test'
const port = cfg.port ?? 7
const count = cfg.count ?? 1200
const WAIT_MS = 10_000

const { address } = await lookup(host, { family: 4 })
const sockets = []

function one() {
  return new Promise((resolve) => {
    const started = performance.now()
    const s = net.connect({ host: address, port })
    sockets.push(s)
    let settled = false
    const done = (outcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ outcome, ms: performance.now() - started })
    }
    const timer = setTimeout(() => done('timeout'), WAIT_MS)
    // Not a byte that could start an HTTP method (keel would wait for the rest of the head).
    s.on('connect', () => s.write('\0x'))
    s.once('data', () => done('echoed'))
    s.on('error', (e) => done(e.code === 'ECONNRESET' ? 'reset' : `error-${e.code ?? e.message}`))
    s.on('close', () => done('closed'))
  })
}

const results = await Promise.all(Array.from({ length: count }, one))
const outcomes = {}
let slowestFailMs = 0
for (const r of results) {
  outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1
  if (r.outcome !== 'echoed') slowestFailMs = Math.max(slowestFailMs, r.ms)
}
for (const s of sockets) s.destroy()
await new Promise((r) => setTimeout(r, 500))
// Slots are free again: a new connection gets through.
const after = await one()
sockets.at(-1)?.destroy()
console.log('FLOOD ' + JSON.stringify({ count, outcomes, slowestFailMs: Math.round(slowestFailMs), after: after.outcome }))
