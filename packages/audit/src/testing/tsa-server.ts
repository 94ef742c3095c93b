/**
 * A real RFC 3161 TSA for tests, on loopback: Debian's `openssl ts -reply` behind a
 * tiny node:http endpoint. It makes its own CA and TSA certificate (extendedKeyUsage
 * critical timeStamping, as RFC 3161 §2.3 requires) in a temp directory.
 *
 * Only for tests: it shells out per request and keeps no state worth keeping.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface TestTsa {
  /** `http://127.0.0.1:<port>/tsa` */
  url: string
  /** PEM of the TSA's root CA (the trust anchor a verifier needs). */
  caPem: string
  caPath: string
  /** PEM of the TSA signing certificate. */
  certPath: string
  dir: string
  /** Requests answered so far. */
  requests(): number
  close(): Promise<void>
}

/** True when an `openssl` binary with the `ts` command is on PATH. */
export async function hasOpenssl(): Promise<boolean> {
  try {
    await run('openssl', ['ts', '-help'], { timeout: 5000 })
    return true
  } catch (err) {
    // `openssl ts -help` exits 0 on 3.x; older ones print usage and exit 1, which still means it exists.
    return (err as { code?: unknown }).code !== 'ENOENT' && typeof (err as { stderr?: unknown }).stderr === 'string'
  }
}

const TSA_CNF = `[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = DIR
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.1.1
other_policies = 1.3.6.1.4.1.57264.1.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
`

/** Creates the CA and TSA certificate in `dir` with openssl. */
export async function makeTsaPki(dir: string, opts: { eku?: boolean } = {}): Promise<void> {
  const o = (args: string[]) => run('openssl', args, { cwd: dir, timeout: 30_000 })
  await o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '3650', '-subj', '/CN=keel test TSA CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  await o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'tsa.key', '-out', 'tsa.csr', '-subj', '/CN=keel test TSA'])
  await writeFile(
    join(dir, 'tsa-ext.cnf'),
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n' +
      (opts.eku === false ? '' : 'extendedKeyUsage=critical,timeStamping\n') +
      'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
  )
  await o(['x509', '-req', '-in', 'tsa.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'tsa.pem',
    '-days', '3650', '-extfile', 'tsa-ext.cnf'])
  await writeFile(join(dir, 'serial'), '01\n')
  await writeFile(join(dir, 'tsa.cnf'), TSA_CNF.replace('DIR', dir))
}

/** Starts the TSA on 127.0.0.1:0. */
export async function startTestTsa(opts: { eku?: boolean } = {}): Promise<TestTsa> {
  const dir = await mkdtemp(join(tmpdir(), 'keel-tsa-'))
  await makeTsaPki(dir, opts)
  let n = 0
  let seq = 0
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > 64 * 1024) req.destroy()
      else chunks.push(c)
    })
    req.on('end', () => {
      void (async () => {
        const id = ++seq
        const q = join(dir, `req-${id}.tsq`)
        const r = join(dir, `resp-${id}.tsr`)
        try {
          if (req.method !== 'POST' || req.headers['content-type'] !== 'application/timestamp-query') {
            res.writeHead(415).end()
            return
          }
          await writeFile(q, Buffer.concat(chunks))
          await run('openssl', ['ts', '-reply', '-config', join(dir, 'tsa.cnf'), '-queryfile', q, '-out', r], { cwd: dir, timeout: 30_000 })
          const body = await readFile(r)
          n++
          res.writeHead(200, { 'content-type': 'application/timestamp-reply', 'content-length': body.length }).end(body)
        } catch {
          res.writeHead(500).end()
        } finally {
          await rm(q, { force: true })
          await rm(r, { force: true })
        }
      })()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/tsa`,
    caPem: await readFile(join(dir, 'ca.pem'), 'utf8'),
    caPath: join(dir, 'ca.pem'),
    certPath: join(dir, 'tsa.pem'),
    dir,
    requests: () => n,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
