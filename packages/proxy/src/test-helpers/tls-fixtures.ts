/**
 * Test fixtures: real ClientHellos captured on loopback (node's tls.connect and
 * `openssl s_client`), crafted ClientHellos, and a throwaway certificate.
 * Test-only; excluded from the build.
 */
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'

/** Listen on 127.0.0.1:0, let `connect(port)` start a client, and return the first bytes it sends. */
export async function captureFirstBytes(connect: (port: number) => () => void, quietMs = 150): Promise<Buffer> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      let stop: (() => void) | undefined
      const timer = setTimeout(() => reject(new Error('no client connected')), 10_000)
      server.once('connection', (socket) => {
        const chunks: Buffer[] = []
        let quiet: NodeJS.Timeout | undefined
        socket.on('error', () => {})
        socket.on('data', (c: Buffer) => {
          chunks.push(c)
          clearTimeout(quiet)
          quiet = setTimeout(() => {
            clearTimeout(timer)
            socket.destroy()
            stop?.()
            resolve(Buffer.concat(chunks))
          }, quietMs)
        })
      })
      stop = connect(port)
    })
  } finally {
    server.close()
  }
}

/** A ClientHello from node's TLS client. */
export function captureNodeHello(options: tls.ConnectionOptions = {}): Promise<Buffer> {
  return captureFirstBytes((port) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options })
    s.on('error', () => {})
    return () => s.destroy()
  })
}

/** A ClientHello from `openssl s_client` (the child is killed by its PID once captured). */
export function captureOpensslHello(args: string[]): Promise<Buffer> {
  return captureFirstBytes((port) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], {
      stdio: ['pipe', 'ignore', 'ignore'],
    })
    child.on('error', () => {})
    return () => {
      if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL')
    }
  })
}

/** A self-signed P-256 certificate for `names`, made with openssl in a temp dir. */
export function makeCert(names: string[]): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'keel-proxy-cert-'))
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
        '-subj', `/CN=${names[0] ?? 'localhost'}`,
        '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
      ],
      { stdio: 'ignore' },
    )
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

// ---- crafted hellos ---------------------------------------------------------------

const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff])
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff])
const vec8 = (b: Buffer): Buffer => Buffer.concat([Buffer.from([b.length]), b])
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b])

export const ext = (type: number, data: Buffer): Buffer => Buffer.concat([u16(type), vec16(data)])

export const sniExt = (...names: Array<string | Buffer>): Buffer =>
  ext(0, vec16(Buffer.concat(names.map((n) => Buffer.concat([Buffer.from([0]), vec16(Buffer.from(n))])))))

export const alpnExt = (...protocols: string[]): Buffer =>
  ext(0x10, vec16(Buffer.concat(protocols.map((p) => vec8(Buffer.from(p))))))

export const echExt = (): Buffer => ext(0xfe0d, Buffer.from([0, 0, 1, 0, 1, 7, 0, 0, 0, 0]))

export const supportedVersionsExt = (): Buffer => ext(0x2b, vec8(Buffer.from([3, 4, 3, 3])))

/** A ClientHello handshake message (header + body) with the given extensions. */
export function helloMessage(extensions: Buffer[] | undefined, options: { sessionId?: Buffer } = {}): Buffer {
  const body = Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7), // random
    vec8(options.sessionId ?? Buffer.alloc(32, 1)),
    vec16(Buffer.from([0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f])),
    vec8(Buffer.from([0])),
    ...(extensions === undefined ? [] : [vec16(Buffer.concat(extensions))]),
  ])
  return Buffer.concat([Buffer.from([1]), u24(body.length), body])
}

/** Wrap handshake bytes in TLS records of the given fragment sizes (the last one takes the rest). */
export function records(handshake: Buffer, sizes: number[] = [], type = 22): Buffer {
  const out: Buffer[] = []
  let off = 0
  for (const size of sizes) {
    if (off >= handshake.length) break
    const frag = handshake.subarray(off, off + size)
    out.push(Buffer.from([type, 3, 1]), u16(frag.length), frag)
    off += frag.length
  }
  if (off < handshake.length) {
    const frag = handshake.subarray(off)
    out.push(Buffer.from([type, 3, 1]), u16(frag.length), frag)
  }
  return Buffer.concat(out)
}

/** A complete crafted ClientHello in one record. */
export function craftedHello(extensions: Buffer[] | undefined): Buffer {
  return records(helloMessage(extensions))
}
