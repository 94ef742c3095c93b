#!/usr/bin/env node
/**
 * Slowloris: opens connections that dribble a TLS ClientHello or an HTTP request head one
 * byte at a time, to hold keel's first-bytes peek open; meanwhile a normal request must
 * still be served at once. Every wait is bounded.
 *
 *   node slowloris.mjs '{"tls":"api.allowed.test","http":"plain.test","each":20,"byteEveryMs":300}'
 *
 * Prints `SLOWLORIS {json}`: how each slow connection ended and after how long, and how
 * long the normal request took.
 */
import net from 'node:net'
import { lookup } from 'node:dns/promises'
import { randomBytes } from 'node:crypto'

const cfg = JSON.parse(process.argv[2] ?? '{}')
const each = cfg.each ?? 20
const byteEveryMs = cfg.byteEveryMs ?? 300
const LIMIT_MS = 15_000

function clientHello(sni) {
  const name = Buffer.from(sni)
  const entry = Buffer.concat([Buffer.from([0, name.length >> 8, name.length & 0xff]), name])
  const list = Buffer.concat([Buffer.from([entry.length >> 8, entry.length & 0xff]), entry])
  const ext = Buffer.concat([Buffer.from([0, 0, list.length >> 8, list.length & 0xff]), list])
  const exts = Buffer.concat([Buffer.from([ext.length >> 8, ext.length & 0xff]), ext])
  const body = Buffer.concat([Buffer.from([3, 3]), randomBytes(32), Buffer.from([0, 0, 2, 0x13, 1, 1, 0]), exts])
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body])
  return Buffer.concat([Buffer.from([0x16, 3, 1, hs.length >> 8, hs.length & 0xff]), hs])
}

function slow(address, port, payload) {
  return new Promise((resolve) => {
    const started = performance.now()
    const s = net.connect({ host: address, port })
    let i = 0
    let sent = 0
    const done = (outcome) => {
      clearInterval(drip)
      clearTimeout(limit)
      s.destroy()
      resolve({ outcome, ms: Math.round(performance.now() - started), sent })
    }
    const dripOne = () => {
      if (i >= payload.length - 1) return // never send the last byte
      if (s.writable) {
        s.write(payload.subarray(i, i + 1))
        i++
        sent++
      }
    }
    // The first byte at once (inside keel's first-byte window), then one every byteEveryMs.
    s.once('connect', dripOne)
    const drip = setInterval(dripOne, byteEveryMs)
    const limit = setTimeout(() => done('still-open'), LIMIT_MS)
    s.on('error', (e) => done(e.code === 'ECONNRESET' ? 'reset' : `error-${e.code}`))
    s.on('data', () => done('answered'))
    s.on('close', () => done('closed'))
  })
}

function normalRequest(address, host) {
  return new Promise((resolve) => {
    const started = performance.now()
    const s = net.connect({ host: address, port: 80 })
    let data = ''
    const done = (outcome) => {
      clearTimeout(limit)
      s.destroy()
      resolve({ outcome, ms: Math.round(performance.now() - started), status: data.split(' ')[1] })
    }
    const limit = setTimeout(() => done('timeout'), 5000)
    s.on('connect', () => s.write(`GET /normal HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`))
    s.on('data', (d) => (data += d))
    s.on('end', () => done('ok'))
    s.on('error', (e) => done(`error-${e.code}`))
  })
}

const tlsAddress = (await lookup(cfg.tls ?? 'api.allowed.test', { family: 4 })).address
const httpAddress = (await lookup(cfg.http ?? 'plain.test', { family: 4 })).address
const hello = clientHello(cfg.tls ?? 'api.allowed.test')
const head = Buffer.from(`GET / HTTP/1.1\r\nHost: ${cfg.http ?? 'plain.test'}\r\nX-Pad: ${'a'.repeat(64)}\r\n\r\n`)
const slowOnes = [
  ...Array.from({ length: each }, () => slow(tlsAddress, 443, hello)),
  ...Array.from({ length: each }, () => slow(httpAddress, 80, head)),
]
await new Promise((r) => setTimeout(r, 1000))
const normal = await normalRequest(httpAddress, cfg.http ?? 'plain.test')
const results = await Promise.all(slowOnes)
const outcomes = {}
for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1
console.log(
  'SLOWLORIS ' +
    JSON.stringify({
      outcomes,
      minMs: Math.min(...results.map((r) => r.ms)),
      maxMs: Math.max(...results.map((r) => r.ms)),
      minSent: Math.min(...results.map((r) => r.sent)),
      normal,
    }),
)
