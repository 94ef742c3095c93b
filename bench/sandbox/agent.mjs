#!/usr/bin/env node
// The client side of bench/sandbox: runs as the agent inside `keel run`, inside `srt`, or
// directly on the host, and measures what the agent sees. Plain Node, no dependencies, so
// the same file runs unchanged in all three places (it is copied next to the CA, where the
// unprivileged agent user can read it).
//
//   node agent.mjs latency --host <ip|name> --port <n> --servername bulk.test --ca <pem> --count 1000
//   node agent.mjs bulk --scheme https|http --host <ip|name> --port <n> --servername bulk.test --ca <pem> --bytes 268435456
//
// --proxy-env: reach the destination through the proxy named in HTTPS_PROXY/HTTP_PROXY
// (srt's way: an HTTP CONNECT tunnel for HTTPS, an absolute-form request for HTTP), as a
// proxy-aware client does. --lookup: resolve --host once first (keel: the agent's DNS goes to
// keel's resolver, which answers with a synthetic address) and time that lookup.
//
// Every request opens a new connection (agent: false, Connection: close). Times come from
// process.hrtime inside this process. Prints one line: `BENCH <json>`.
import { lookup } from 'node:dns/promises'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'

const [mode, ...rest] = process.argv.slice(2)
const opt = {}
for (let i = 0; i < rest.length; i++) {
  const a = rest[i]
  if (!a.startsWith('--')) continue
  const next = rest[i + 1]
  if (next === undefined || next.startsWith('--')) opt[a.slice(2)] = true
  else opt[a.slice(2)] = rest[++i]
}

const ca = opt.ca ? readFileSync(opt.ca) : undefined
const port = Number(opt.port)
const servername = opt.servername
const scheme = opt.scheme ?? 'https'
let host = opt.host
const nowMs = () => Number(process.hrtime.bigint()) / 1e6

/** The proxy srt puts in the environment: http://user:token@localhost:3128. */
function proxyFromEnv() {
  const raw = process.env.HTTPS_PROXY ?? process.env.https_proxy ?? process.env.HTTP_PROXY ?? process.env.http_proxy
  if (!raw) throw new Error('--proxy-env: no HTTPS_PROXY/HTTP_PROXY in the environment')
  const u = new URL(raw)
  // localhost is the sandbox's own loopback; no lookup at all.
  const phost = u.hostname === 'localhost' ? '127.0.0.1' : u.hostname
  const auth = u.username ? 'Basic ' + Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64') : undefined
  return { host: phost, port: Number(u.port || 80), auth }
}
const proxy = opt['proxy-env'] ? proxyFromEnv() : undefined

const authority = () => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)

/** An HTTP CONNECT tunnel through the proxy; resolves to the raw socket. */
function connectTunnel(cb) {
  const s = net.connect({ host: proxy.host, port: proxy.port, noDelay: true })
  let buf = Buffer.alloc(0)
  const onData = (d) => {
    buf = Buffer.concat([buf, d])
    const end = buf.indexOf('\r\n\r\n')
    if (end < 0) return
    s.off('data', onData)
    s.pause()
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString('latin1'))
    if (!status || status[1] !== '200') return cb(new Error(`CONNECT ${authority()}: ${buf.subarray(0, end).toString('latin1').split('\r\n')[0]}`))
    if (end + 4 < buf.length) s.unshift(buf.subarray(end + 4))
    cb(null, s)
  }
  s.on('data', onData)
  s.once('error', cb)
  s.on('connect', () => {
    const lines = [`CONNECT ${authority()} HTTP/1.1`, `Host: ${authority()}`]
    if (proxy.auth) lines.push(`Proxy-Authorization: ${proxy.auth}`)
    s.write(lines.join('\r\n') + '\r\n\r\n')
  })
}

/** Options for one request on a brand-new connection. */
function requestOptions(path) {
  const headers = { Host: servername ? `${servername}:${port}` : authority(), Connection: 'close' }
  if (scheme === 'http') {
    if (proxy) {
      // Plain HTTP through a forward proxy: absolute-form target, sent to the proxy.
      return { host: proxy.host, port: proxy.port, path: `http://${authority()}${path}`, agent: false, headers: { ...headers, ...(proxy.auth ? { 'Proxy-Authorization': proxy.auth } : {}) } }
    }
    return { host, port, path, agent: false, headers }
  }
  const tlsOptions = { servername, ca, ALPNProtocols: ['http/1.1'] }
  if (proxy) {
    return {
      host,
      port,
      path,
      // No agent: with one (even agent: false), Node ignores createConnection.
      agent: undefined,
      headers,
      createConnection: (_o, oncreate) => {
        connectTunnel((err, raw) => {
          if (err) return oncreate(err)
          const t = tls.connect({ socket: raw, ...tlsOptions })
          oncreate(null, t)
        })
      },
    }
  }
  return { host, port, path, agent: false, headers, servername, ca, ALPNProtocols: ['http/1.1'] }
}

/** One GET on a new connection; resolves to the body length. */
function get(path, onChunk) {
  return new Promise((resolve, reject) => {
    const lib = scheme === 'http' ? http : https
    const req = lib.request({ method: 'GET', ...requestOptions(path) }, (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        return reject(new Error(`GET ${path}: HTTP ${res.statusCode}`))
      }
      let n = 0
      res.on('data', (d) => {
        n += d.length
        onChunk?.(n)
      })
      res.on('end', () => resolve(n))
      res.on('error', (err) => reject(new Error(`GET ${path}: ${err.message} after ${n} bytes of the body`, { cause: err })))
    })
    req.setTimeout(30_000, () => req.destroy(new Error(`GET ${path}: no progress in 30 s`)))
    req.on('error', reject)
    req.end()
  })
}

async function main() {
  const out = { mode, scheme, via: proxy ? 'proxy' : 'direct' }
  if (opt.lookup) {
    const t = nowMs()
    const r = await lookup(host, { family: 4 })
    out.lookupMs = nowMs() - t
    out.lookupAddress = r.address
    host = r.address
  }
  out.host = host
  if (mode === 'latency') {
    const count = Math.min(Number(opt.count ?? 1000), 100_000)
    const warmup = Math.min(Number(opt.warmup ?? 20), 1000)
    const path = opt.path ?? '/bytes/64'
    const samples = []
    for (let i = 0; i < warmup + count; i++) {
      const t = nowMs()
      const n = await get(path)
      const ms = nowMs() - t
      if (n !== 64 && path === '/bytes/64') throw new Error(`short body: ${n}`)
      if (i >= warmup) samples.push(ms)
    }
    out.samples = samples.map((x) => Math.round(x * 1000) / 1000)
  } else if (mode === 'bulk') {
    const bytes = Math.min(Number(opt.bytes ?? 256 * 1024 * 1024), 8 * 1024 ** 3)
    const t = nowMs()
    let first = 0
    const n = await get(`/bytes/${bytes}`, () => {
      if (first === 0) first = nowMs()
    })
    const end = nowMs()
    if (n !== bytes) throw new Error(`got ${n} bytes of ${bytes}`)
    out.bytes = n
    out.ms = end - t
    out.firstByteMs = first - t
    out.mbPerS = n / 1e6 / ((end - t) / 1000)
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
  process.stdout.write(`BENCH ${JSON.stringify(out)}\n`)
}

main().catch((err) => {
  process.stderr.write(`agent: ${err?.stack ?? err}\n`)
  process.exit(1)
})
