#!/usr/bin/env node
/**
 * Load agent: holds N connections to a TCP echo server through the sandbox for a fixed
 * time, each sending numbered messages and checking every byte that comes back.
 *
 *   node load.mjs '{"host":"echo.test","port":7,"connections":1000,"durationMs":60000,
 *                   "messageBytes":256,"intervalMs":0,"readyFile":"...","doneFile":"..."}'
 *
 * Each connection loops: write one message, wait for exactly that message to be echoed,
 * (wait intervalMs), repeat, until the duration is over. A byte that comes back wrong,
 * late (> 10 s), or not at all, or a connection that closes early, is a loss.
 * Prints one `LOAD {json}` line. Every wait is bounded.
 */
import net from 'node:net'
import { lookup } from 'node:dns/promises'
import { writeFileSync } from 'node:fs'

const cfg = JSON.parse(process.argv[2] ?? '{}')
const host = cfg.host ?? 'echo.test'
const port = cfg.port ?? 7
const connections = cfg.connections ?? 1000
const durationMs = cfg.durationMs ?? 60_000
const messageBytes = cfg.messageBytes ?? 256
const intervalMs = cfg.intervalMs ?? 0
const STALL_MS = 10_000

const { address } = await lookup(host, { family: 4 })
const stats = { connections, connected: 0, failedToConnect: 0, messages: 0, bytesSent: 0, bytesEchoed: 0, corrupt: 0, stalled: 0, closedEarly: 0, errors: {} }
const sockets = []
let stopping = false

function message(id, seq) {
  const head = `${id}:${seq}:`
  return Buffer.from(head.padEnd(messageBytes, String.fromCharCode(97 + (seq % 26))))
}

function run(id) {
  return new Promise((resolve) => {
    const s = net.connect({ host: address, port })
    sockets.push(s)
    let seq = 0
    let expected
    let got = Buffer.alloc(0)
    let stall
    let done = false
    let isConnected = false
    const finish = (how) => {
      if (done) return
      done = true
      clearTimeout(stall)
      if (how) stats[how]++
      resolve()
    }
    const send = () => {
      if (stopping) return finish()
      expected = message(id, seq++)
      got = Buffer.alloc(0)
      s.write(expected)
      stats.bytesSent += expected.length
      clearTimeout(stall)
      stall = setTimeout(() => finish('stalled'), STALL_MS)
    }
    s.setNoDelay(true)
    s.once('connect', () => {
      isConnected = true
      stats.connected++
      connectedNow()
      send()
    })
    s.on('data', (chunk) => {
      got = got.length === 0 ? chunk : Buffer.concat([got, chunk])
      if (got.length < expected.length) return
      stats.bytesEchoed += Math.min(got.length, expected.length)
      if (got.length !== expected.length || !got.equals(expected)) return finish('corrupt')
      stats.messages++
      if (intervalMs > 0) setTimeout(send, intervalMs)
      else send()
    })
    s.on('error', (e) => {
      stats.errors[e.code ?? e.message] = (stats.errors[e.code ?? e.message] ?? 0) + 1
    })
    s.on('close', () => {
      if (!isConnected) finish('failedToConnect')
      finish(stopping ? undefined : 'closedEarly')
    })
  })
}

let readyAt
function connectedNow() {
  if (stats.connected === connections && cfg.readyFile) {
    readyAt = Date.now()
    writeFileSync(cfg.readyFile, String(readyAt))
  }
}

const started = Date.now()
const all = Array.from({ length: connections }, (_, i) => run(i))
const stopTimer = setTimeout(() => (stopping = true), durationMs)
await Promise.all(all)
clearTimeout(stopTimer)
const elapsed = Date.now() - (readyAt ?? started)
if (cfg.doneFile) writeFileSync(cfg.doneFile, String(Date.now()))
for (const s of sockets) s.destroy()
console.log(
  'LOAD ' +
    JSON.stringify({
      ...stats,
      elapsedMs: elapsed,
      connectMs: readyAt === undefined ? null : readyAt - started,
      messagesPerSecond: Math.round(stats.messages / (elapsed / 1000)),
      echoedBytesPerSecond: Math.round(stats.bytesEchoed / (elapsed / 1000)),
    }),
)
