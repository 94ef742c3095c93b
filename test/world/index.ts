/**
 * The fake world: a small internet on loopback, in the host network namespace
 * (DESIGN.md "Tests never leave the machine").
 *
 * - A dns2 DNS server on 127.0.0.1 (UDP and TCP on one port) answering the `.test`
 *   names in {@link WORLD_HOSTS} with 127.0.0.x addresses, and counting every query it
 *   receives (`world.dns.queries`) so tests can prove what reached "upstream".
 * - HTTPS and plain HTTP servers, one pair per 127.0.0.x address, with leaf
 *   certificates from a test CA made at test time with node-forge (cached per process;
 *   the CA PEM is written to a temp file for `SSL_CERT_FILE` / `curl --cacert`). They
 *   answer JSON naming the server and echoing method, path, Host and SNI, and stream
 *   `n` bytes at `/bytes/<n>` (for throughput benches).
 * - A TCP echo server on echo.test's address.
 *
 * Ports: the sandbox's proxy dials the *real* address it resolves for a name plus the
 * port the agent used, so each host must be reachable at (its 127.0.0.x, the port the
 * test uses). Each host group has its own 127.0.0.x (Linux routes all of 127.0.0.0/8 to
 * `lo` with no setup), so fixed ports do not collide between hosts. By default, as root,
 * the natural ports 443 / 80 / 7 are used, so URLs look real (`https://api.allowed.test/`)
 * and examples/fake-world.yaml can name them. Without root the defaults are
 * 18443 / 18080 / 18007. Two worlds with servers cannot run at once on the same ports:
 * the privileged vitest project runs files one at a time. Pass `ports` to choose
 * others (0 = any free port, read back from `world.hosts[name].ports`), or
 * `dnsOnly: true` when a test needs just the DNS server (the unit tests in packages/dns
 * do, and run in parallel).
 *
 * Nothing here sends a packet beyond 127.0.0.0/8 and ::1, and nothing touches the
 * host's routes, links or ruleset.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import type dgram from 'node:dgram'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import dns2 from 'dns2'
import forge from 'node-forge'

const { Packet } = dns2

// ------------------------------------------------------------------ the host table

export interface WorldHostSpec {
  name: string
  /** A records. */
  a?: readonly string[]
  /** AAAA records. */
  aaaa?: readonly string[]
  /** A CNAME to another world name (the answer carries the chain, as real resolvers do). */
  cname?: string
  /** Answer TTL, seconds. Default 60. */
  ttl?: number
  /** Answer this rcode instead of records. */
  rcode?: 'NXDOMAIN' | 'SERVFAIL'
  /** Never answer (an upstream that times out for this name). */
  silent?: boolean
  /** Servers on the host's first A address. */
  https?: boolean
  http?: boolean
  echo?: boolean
}

const range = (n: number, f: (i: number) => string): string[] => Array.from({ length: n }, (_, i) => f(i))

/**
 * Every name the world knows. Any other `*.test` name is NXDOMAIN (with an SOA, negative
 * TTL 5 s); names outside `.test` are REFUSED (the world is not the internet).
 */
export const WORLD_HOSTS: readonly WorldHostSpec[] = [
  { name: 'api.allowed.test', a: ['127.0.0.2'], aaaa: ['::1'], https: true, http: true },
  { name: 'www.allowed.test', a: ['127.0.0.2'], https: true, http: true },
  { name: 'other.test', a: ['127.0.0.3'], https: true, http: true },
  { name: 'legacy.test', a: ['127.0.0.3'], https: true, http: true },
  { name: 'cdn.test', a: ['127.0.0.4'], https: true, http: true },
  { name: 'a.cdn.test', a: ['127.0.0.4'], https: true, http: true },
  { name: 'b.cdn.test', a: ['127.0.0.4'], https: true, http: true },
  { name: 'short-ttl.test', a: ['127.0.0.5'], ttl: 1, https: true, http: true },
  { name: 'echo.test', a: ['127.0.0.6'], echo: true },
  { name: 'plain.test', a: ['127.0.0.7'], http: true },
  { name: 'bulk.test', a: ['127.0.0.8'], https: true, http: true },
  { name: 'evil.test', a: ['127.0.0.9'], https: true, http: true },
  { name: 'alias.test', cname: 'api.allowed.test' },
  { name: 'v6only.test', aaaa: ['::1'] },
  { name: 'big.test', a: range(100, (i) => `127.0.1.${i + 1}`) },
  { name: 'nx.test', rcode: 'NXDOMAIN' },
  { name: 'servfail.test', rcode: 'SERVFAIL' },
  { name: 'blackhole.test', silent: true },
  // LLM provider names a policy routes `via: dispatcher` (test/dispatcher/sandbox.test.ts):
  // keel resolves them upstream like any allowed name, but never dials these addresses;
  // the dispatcher dials the provider endpoints from its config. No servers on purpose.
  { name: 'api.openai.test', a: ['127.0.0.20'] },
  { name: 'api.anthropic.test', a: ['127.0.0.21'] },
]

const DEFAULT_TTL = 60
/** RFC 1035 §4.1.1 (dns2's typings lack Packet.RCODE). */
const RCODE = { FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const
const NEGATIVE_TTL = 5

// ------------------------------------------------------------------ test CA

export interface TestCa {
  certPem: string
  keyPem: string
  /** A temp file holding `certPem` (for SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, curl --cacert). */
  path: string
}

export interface LeafCertificate {
  certPem: string
  keyPem: string
}

interface CaState extends TestCa {
  cert: forge.pki.Certificate
  key: forge.pki.rsa.PrivateKey
  leafKeyPem: string
  leafKey: forge.pki.rsa.PrivateKey
  leafPublic: forge.pki.rsa.PublicKey
  dir: string
}

let caState: CaState | undefined
const leafCache = new Map<string, LeafCertificate>()

/** RSA keys come from node's native generator (fast); forge builds and signs the certificates. */
function rsaKey(): { pem: string; key: forge.pki.rsa.PrivateKey; pub: forge.pki.rsa.PublicKey } {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  })
  const key = forge.pki.privateKeyFromPem(privateKey)
  return { pem: privateKey, key, pub: forge.pki.setRsaPublicKey(key.n, key.e) }
}

function serial(): string {
  // Positive (top bit clear), 16 random bytes.
  const b = randomBytes(16)
  b[0] = (b[0] ?? 0) & 0x7f
  return b.toString('hex')
}

function ca(): CaState {
  if (caState) return caState
  const { pem, key, pub } = rsaKey()
  const cert = forge.pki.createCertificate()
  cert.publicKey = pub
  cert.serialNumber = serial()
  cert.validity.notBefore = new Date(Date.now() - 60 * 60 * 1000)
  cert.validity.notAfter = new Date(Date.now() + 30 * 24 * 60 * 60 * 1000)
  const subject = [
    { name: 'commonName', value: 'keel fake-world test CA' },
    { name: 'organizationName', value: 'keel tests' },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(key, forge.md.sha256.create())
  const certPem = forge.pki.certificateToPem(cert)
  const dir = mkdtempSync(join(tmpdir(), 'keel-world-'))
  const path = join(dir, 'ca.pem')
  writeFileSync(path, certPem)
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  const leaf = rsaKey()
  caState = { certPem, keyPem: pem, path, cert, key, leafKeyPem: leaf.pem, leafKey: leaf.key, leafPublic: leaf.pub, dir }
  return caState
}

/** The process-wide test CA (created on first use). */
export function getTestCa(): TestCa {
  const { certPem, keyPem, path } = ca()
  return { certPem, keyPem, path }
}

/**
 * A leaf certificate from the test CA for `names` (DNS SANs) and `ips` (IP SANs).
 * Cached per process; every leaf shares one key to keep test start-up fast.
 */
export function issueLeafCertificate(names: readonly string[], ips: readonly string[] = []): LeafCertificate {
  const cacheKey = `${names.join(',')}|${ips.join(',')}`
  const cached = leafCache.get(cacheKey)
  if (cached) return cached
  const c = ca()
  const cert = forge.pki.createCertificate()
  cert.publicKey = c.leafPublic
  cert.serialNumber = serial()
  cert.validity.notBefore = new Date(Date.now() - 60 * 60 * 1000)
  cert.validity.notAfter = new Date(Date.now() + 7 * 24 * 60 * 60 * 1000)
  cert.setSubject([{ name: 'commonName', value: names[0] ?? ips[0] ?? 'localhost' }])
  cert.setIssuer(c.cert.subject.attributes)
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [...names.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))],
    },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: c.cert.generateSubjectKeyIdentifier().getBytes() },
  ])
  cert.sign(c.key, forge.md.sha256.create())
  const leaf = { certPem: forge.pki.certificateToPem(cert), keyPem: c.leafKeyPem }
  leafCache.set(cacheKey, leaf)
  return leaf
}

// ------------------------------------------------------------------ world types

export interface WorldPorts {
  https: number
  http: number
  echo: number
}

export interface WorldOptions {
  /** Ports for the host servers (0 = a free port per server). Defaults: see the module doc. */
  ports?: Partial<WorldPorts>
  /** Start only the DNS server (no CA, no HTTP/echo servers). */
  dnsOnly?: boolean
  /** DNS port on 127.0.0.1 (UDP and TCP). Default 0: a free port. */
  dnsPort?: number
}

export interface WorldHost {
  name: string
  /** The address its servers listen on (its first A record), if any. */
  address?: string
  a: readonly string[]
  aaaa: readonly string[]
  ttl: number
  /** Where its servers actually listen (absent when the host has no such server, or dnsOnly). */
  ports: Partial<WorldPorts>
}

export interface DnsQueryRecord {
  name: string
  /** `A`, `AAAA`, `TXT`, … or `TYPEnnn`. */
  type: string
  transport: 'udp' | 'tcp'
}

export interface WorldRequest {
  scheme: 'http' | 'https'
  /** Server address and port that took the request. */
  address: string
  port: number
  method: string
  path: string
  hostHeader?: string
  sni?: string
}

export interface WorldServer {
  kind: 'dns' | 'https' | 'http' | 'echo'
  address: string
  port: number
  /** Names served there. */
  names: string[]
}

export interface World {
  dnsAddress: '127.0.0.1'
  dnsPort: number
  /** The process-wide test CA (created on first access; dnsOnly worlds never need it). */
  ca: TestCa
  hosts: Record<string, WorldHost>
  ports: WorldPorts
  servers: WorldServer[]
  dns: {
    /** Every query the world's DNS server received, in order. */
    queries: DnsQueryRecord[]
    /** Queries for `name` (case-insensitive), optionally of one type. */
    count(name: string, type?: string): number
    reset(): void
  }
  http: { requests: WorldRequest[] }
  echo: { connections: { remoteAddress: string; remotePort: number }[] }
  /** Closes every server and connection. Idempotent. */
  stop(): Promise<void>
}

// ------------------------------------------------------------------ DNS

const TYPE_NAMES = new Map<number, string>(Object.entries(Packet.TYPE as Record<string, number>).map(([k, v]) => [v, k]))
const typeText = (t: number): string => TYPE_NAMES.get(t) ?? `TYPE${t}`
const HOSTS_BY_NAME = new Map(WORLD_HOSTS.map((h) => [h.name, h]))

type Dns2Packet = InstanceType<typeof Packet>
// dns2's resource records are plain objects whose fields depend on the type.
type Rr = Record<string, unknown> & { name: string; type: number; class: number; ttl: number }

const soa = (): Rr => ({
  name: 'test',
  type: Packet.TYPE.SOA,
  class: Packet.CLASS.IN,
  ttl: NEGATIVE_TTL,
  primary: 'ns.test',
  admin: 'hostmaster.test',
  serial: 1,
  refresh: 3600,
  retry: 600,
  expiration: 86400,
  minimum: NEGATIVE_TTL,
})

/** Builds the answer for one question, or `undefined` to stay silent. */
function worldAnswer(request: Dns2Packet): Dns2Packet | undefined {
  const response = Packet.createResponseFromRequest(request)
  response.header.aa = 1
  response.header.ra = 1
  const q = request.questions[0]
  if (!q || request.questions.length !== 1) {
    response.header.rcode = RCODE.FORMERR
    return response
  }
  const name = String(q.name).toLowerCase().replace(/\.$/, '')
  if (name !== 'test' && !name.endsWith('.test')) {
    response.header.rcode = RCODE.REFUSED
    return response
  }
  const answers: Rr[] = []
  let host = HOSTS_BY_NAME.get(name)
  // Follow CNAMEs inside the world (bounded: the table has no loops, but be safe).
  for (let hops = 0; host?.cname !== undefined && hops < 8; hops++) {
    answers.push({ name: host.name, type: Packet.TYPE.CNAME, class: Packet.CLASS.IN, ttl: host.ttl ?? DEFAULT_TTL, domain: host.cname })
    host = HOSTS_BY_NAME.get(host.cname)
  }
  if (host?.silent) return undefined
  if (!host || host.rcode === 'NXDOMAIN') {
    response.header.rcode = RCODE.NXDOMAIN
    response.answers = answers as never[]
    response.authorities = [soa()] as never[]
    return response
  }
  if (host.rcode === 'SERVFAIL') {
    response.header.rcode = RCODE.SERVFAIL
    return response
  }
  const ttl = host.ttl ?? DEFAULT_TTL
  if (q.type === Packet.TYPE.A || q.type === Packet.TYPE.ANY) {
    for (const address of host.a ?? []) answers.push({ name: host.name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl, address })
  }
  if (q.type === Packet.TYPE.AAAA || q.type === Packet.TYPE.ANY) {
    for (const address of host.aaaa ?? []) answers.push({ name: host.name, type: Packet.TYPE.AAAA, class: Packet.CLASS.IN, ttl, address })
  }
  if (q.type === Packet.TYPE.TXT) {
    answers.push({ name: host.name, type: Packet.TYPE.TXT, class: Packet.CLASS.IN, ttl, data: `world=${host.name}` })
  }
  response.answers = answers as never[]
  if (!answers.some((r) => r.type === q.type)) response.authorities = [soa()] as never[]
  return response
}

interface DnsHandle {
  port: number
  close(): Promise<void>
}

async function startDns(port: number, queries: DnsQueryRecord[]): Promise<DnsHandle> {
  const handler =
    (transport: 'udp' | 'tcp') =>
    (request: Dns2Packet, send: (response: Dns2Packet) => Promise<unknown>): void => {
      for (const q of request.questions ?? []) {
        queries.push({ name: String(q.name).toLowerCase().replace(/\.$/, ''), type: typeText(q.type), transport })
      }
      let response: Dns2Packet | undefined
      try {
        response = worldAnswer(request)
      } catch {
        response = undefined
      }
      if (response) send(response).catch(() => {})
    }
  let lastError: unknown
  // UDP first, then TCP on the same port; a free UDP port may be taken for TCP, so retry (bounded).
  for (let attempt = 0; attempt < 20; attempt++) {
    const udp = dns2.createUDPServer({ type: 'udp4' }) as unknown as dgram.Socket & { listen(p: number, a: string): Promise<void> }
    udp.on('request', handler('udp'))
    udp.on('requestError', () => {})
    udp.on('error', () => {})
    await udp.listen(port, '127.0.0.1')
    const udpPort = udp.address().port
    const tcp = dns2.createTCPServer() as unknown as net.Server
    tcp.on('request', handler('tcp'))
    tcp.on('requestError', () => {})
    const sockets = new Set<net.Socket>()
    tcp.on('connection', (s: net.Socket) => {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    })
    try {
      await listen(tcp, udpPort, '127.0.0.1')
    } catch (err) {
      lastError = err
      udp.close()
      if (port !== 0) break
      continue
    }
    return {
      port: udpPort,
      close: async () => {
        for (const s of sockets) s.destroy()
        await Promise.all([
          new Promise<void>((r) => {
            try {
              udp.close(() => r())
            } catch {
              r()
            }
          }),
          new Promise<void>((r) => tcp.close(() => r())),
        ])
      },
    }
  }
  throw lastError instanceof Error ? lastError : new Error('could not bind the world DNS server')
}

// ------------------------------------------------------------------ HTTP(S) and echo

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening)
      reject(err)
    }
    const onListening = (): void => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(port, host)
  })
}

const MAX_BULK_BYTES = 64 * 1024 ** 3
const BULK_CHUNK = Buffer.alloc(64 * 1024, 0x6b) // 'k'

function requestHandler(
  scheme: 'http' | 'https',
  address: string,
  names: readonly string[],
  requests: WorldRequest[],
): http.RequestListener {
  return (req, res) => {
    const socket = req.socket as net.Socket & { servername?: string | false }
    const sni = scheme === 'https' && typeof socket.servername === 'string' ? socket.servername : undefined
    const port = socket.localPort ?? 0
    const path = req.url ?? '/'
    requests.push({
      scheme,
      address,
      port,
      method: req.method ?? 'GET',
      path,
      ...(req.headers.host !== undefined ? { hostHeader: req.headers.host } : {}),
      ...(sni !== undefined ? { sni } : {}),
    })
    const bulk = /^\/bytes\/(\d{1,12})$/.exec(path.split('?')[0] ?? '')
    if (bulk) {
      const total = Number(bulk[1])
      if (total > MAX_BULK_BYTES) {
        res.writeHead(400).end('too many bytes\n')
        return
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
      let left = total
      const pump = (): void => {
        // Bounded by `total`; yields on back-pressure.
        while (left > 0 && !res.destroyed) {
          const chunk = left >= BULK_CHUNK.length ? BULK_CHUNK : BULK_CHUNK.subarray(0, left)
          left -= chunk.length
          if (!res.write(chunk)) {
            res.once('drain', pump)
            return
          }
        }
        if (!res.destroyed) res.end()
      }
      pump()
      return
    }
    // Drain any request body, then answer with who we are and what we saw.
    req.resume()
    req.on('end', () => {
      const hostHeader = req.headers.host
      const body = {
        world: true,
        host: sni ?? hostHeader?.replace(/:\d+$/, '') ?? null,
        names,
        address,
        port,
        scheme,
        method: req.method,
        path,
        hostHeader: hostHeader ?? null,
        sni: sni ?? null,
      }
      res.writeHead(200, { 'content-type': 'application/json', 'x-world-address': address })
      res.end(JSON.stringify(body) + '\n')
    })
  }
}

interface Closable {
  close(): Promise<void>
}

function closeHttp(server: http.Server | https.Server): Closable {
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

function defaultPorts(): WorldPorts {
  const root = typeof process.getuid === 'function' && process.getuid() === 0
  return root ? { https: 443, http: 80, echo: 7 } : { https: 18443, http: 18080, echo: 18007 }
}

/**
 * Starts the fake world. Always `await world.stop()` (e.g. in `afterAll`).
 *
 * @example
 * const world = await startWorld()
 * // https://api.allowed.test/ is 127.0.0.2:443 with a certificate from world.ca
 */
export async function startWorld(options: WorldOptions = {}): Promise<World> {
  const ports: WorldPorts = { ...defaultPorts(), ...options.ports }
  const queries: DnsQueryRecord[] = []
  const requests: WorldRequest[] = []
  const connections: { remoteAddress: string; remotePort: number }[] = []
  const closers: Closable[] = []
  const servers: WorldServer[] = []
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    await Promise.all(closers.splice(0).map((c) => c.close().catch(() => {})))
  }

  const hosts: Record<string, WorldHost> = {}
  for (const h of WORLD_HOSTS) {
    hosts[h.name] = {
      name: h.name,
      ...(h.a?.[0] !== undefined ? { address: h.a[0] } : {}),
      a: h.a ?? [],
      aaaa: h.aaaa ?? [],
      ttl: h.ttl ?? DEFAULT_TTL,
      ports: {},
    }
  }

  try {
    const dns = await startDns(options.dnsPort ?? 0, queries)
    closers.push(dns)
    servers.push({ kind: 'dns', address: '127.0.0.1', port: dns.port, names: [] })

    if (!options.dnsOnly) {
      // Group names by the address their servers live on.
      const byAddress = new Map<string, WorldHostSpec[]>()
      for (const h of WORLD_HOSTS) {
        const address = h.a?.[0]
        if (!address || !(h.https || h.http || h.echo)) continue
        byAddress.set(address, [...(byAddress.get(address) ?? []), h])
      }
      for (const [address, group] of byAddress) {
        const names = group.map((h) => h.name)
        if (group.some((h) => h.https)) {
          const httpsNames = group.filter((h) => h.https).map((h) => h.name)
          const contexts = new Map(
            httpsNames.map((n) => {
              const leaf = issueLeafCertificate([n], [address])
              return [n, tls.createSecureContext({ cert: leaf.certPem, key: leaf.keyPem })] as const
            }),
          )
          const fallback = issueLeafCertificate([httpsNames[0] ?? address], [address])
          const server = https.createServer(
            {
              cert: fallback.certPem,
              key: fallback.keyPem,
              // Per-name certificates chosen by SNI, as a CDN does; unknown names get the default one.
              SNICallback: (servername, cb) => cb(null, contexts.get(servername.toLowerCase())),
            },
            requestHandler('https', address, httpsNames, requests),
          )
          await listen(server, ports.https, address)
          closers.push(closeHttp(server))
          const port = (server.address() as net.AddressInfo).port
          servers.push({ kind: 'https', address, port, names: httpsNames })
          for (const n of httpsNames) (hosts[n] as WorldHost).ports.https = port
        }
        if (group.some((h) => h.http)) {
          const httpNames = group.filter((h) => h.http).map((h) => h.name)
          const server = http.createServer(requestHandler('http', address, httpNames, requests))
          await listen(server, ports.http, address)
          closers.push(closeHttp(server))
          const port = (server.address() as net.AddressInfo).port
          servers.push({ kind: 'http', address, port, names: httpNames })
          for (const n of httpNames) (hosts[n] as WorldHost).ports.http = port
        }
        if (group.some((h) => h.echo)) {
          const sockets = new Set<net.Socket>()
          const server = net.createServer((s) => {
            sockets.add(s)
            connections.push({ remoteAddress: s.remoteAddress ?? '', remotePort: s.remotePort ?? 0 })
            s.on('error', () => {})
            s.on('close', () => sockets.delete(s))
            s.pipe(s)
          })
          await listen(server, ports.echo, address)
          closers.push({
            close: () =>
              new Promise<void>((resolve) => {
                for (const s of sockets) s.destroy()
                server.close(() => resolve())
              }),
          })
          const port = (server.address() as net.AddressInfo).port
          servers.push({ kind: 'echo', address, port, names })
          for (const h of group.filter((g) => g.echo)) (hosts[h.name] as WorldHost).ports.echo = port
        }
      }
    }

    let caCache: TestCa | undefined
    return {
      dnsAddress: '127.0.0.1',
      dnsPort: dns.port,
      get ca(): TestCa {
        caCache ??= getTestCa()
        return caCache
      },
      hosts,
      ports,
      servers,
      dns: {
        queries,
        count: (name, type) => {
          const n = name.toLowerCase().replace(/\.$/, '')
          return queries.filter((q) => q.name === n && (type === undefined || q.type === type)).length
        },
        reset: () => {
          queries.length = 0
        },
      },
      http: { requests },
      echo: { connections },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
