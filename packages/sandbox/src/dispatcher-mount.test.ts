import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import net, { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadPolicy, Reason, type CompiledPolicy } from '@keel/core'
import {
  checkDispatcherHosts,
  createDispatcherMount,
  dispatcherRoutes,
  scrubSecrets,
  TRUST_ENV,
  type DispatcherMount,
  type DispatcherOrigin,
  type SandboxDispatcher,
} from './dispatcher-mount.js'

const POLICY = `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: t }
spec:
  agents: [{ name: coder, labels: { team: a } }]
  routes:
    - name: llm
      via: dispatcher
      rules:
        - matches:
            - destinationHostnames: ["api.openai.test", "api.anthropic.test"]
              ports: [{ port: 443 }]
    - name: more-llm
      via: dispatcher
      rules:
        - matches:
            - destinationHostnames: ["*.mistral.test"]
    - name: direct
      rules:
        - matches:
            - destinationHostnames: ["registry.npmjs.org"]
`

const policyOf = (text: string): CompiledPolicy => loadPolicy([{ path: 'p.yaml', text }])

/** A throwaway self-signed certificate (a stand-in for a trust store entry). */
function selfSigned(dir: string, cn: string): string {
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, `${cn}.key`), '-out', join(dir, `${cn}.pem`), '-days', '1', '-subj', `/CN=${cn}`],
    { stdio: 'ignore' },
  )
  return readFileSync(join(dir, `${cn}.pem`), 'utf8')
}

describe('dispatcherRoutes / checkDispatcherHosts', () => {
  const routes = dispatcherRoutes(policyOf(POLICY))

  it('lists the via: dispatcher routes and their hostname patterns only', () => {
    expect(routes).toEqual({ routes: ['llm', 'more-llm'], patterns: ['api.openai.test', 'api.anthropic.test', '*.mistral.test'] })
    expect(dispatcherRoutes(policyOf(POLICY.replace(/via: dispatcher/g, 'via: direct')))).toEqual({ routes: [], patterns: [] })
  })

  it('accepts a config whose providers serve every exact name; warns about wildcards', () => {
    const warnings = checkDispatcherHosts(routes, ['api.openai.test', 'API.anthropic.test', 'eu.mistral.test'])
    expect(warnings).toEqual([expect.stringMatching(/^\*\.mistral\.test is routed via the dispatcher, which serves only eu\.mistral\.test under it/)])
  })

  it.each([
    ['an exact name no provider lists', ['api.openai.test', 'eu.mistral.test'], /routes api\.anthropic\.test via: dispatcher, but no provider .* lists it in hosts/],
    ['a wildcard that covers no provider host', ['api.openai.test', 'api.anthropic.test', 'a.b.mistral.test'], /routes \*\.mistral\.test via: dispatcher/],
    ['several', [], /routes api\.openai\.test, api\.anthropic\.test, \*\.mistral\.test via: dispatcher, but no provider .* lists them/],
  ])('fails at start on %s (config mismatch)', (_what, hosts, message) => {
    expect(() => checkDispatcherHosts(routes, hosts)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID', message: expect.stringMatching(message) }))
  })
})

describe('scrubSecrets', () => {
  it('drops the secret variables by name and any variable whose value holds a secret', () => {
    const env = { PATH: '/bin', KEEL_OPENAI_KEY: 'sk-real-1234567890', COPY: 'x sk-real-1234567890 y', SHORT: 'abc', OTHER: 'fine' }
    expect(scrubSecrets(env, { secretEnv: ['KEEL_OPENAI_KEY'], secrets: () => ['sk-real-1234567890', 'abc'] })).toEqual({
      PATH: '/bin',
      SHORT: 'abc', // secrets shorter than 8 characters are not matched by value
      OTHER: 'fine',
    })
  })
})

describe('createDispatcherMount', () => {
  let dir: string
  let work: string
  let systemPem: string
  let userPem: string
  let mount: DispatcherMount
  const handed: Array<{ origin: DispatcherOrigin; socket: Duplex }> = []
  const dispatcher: SandboxDispatcher = {
    hosts: ['api.openai.test', 'api.anthropic.test', 'eu.mistral.test'],
    secretEnv: ['KEEL_OPENAI_KEY'],
    secrets: () => ['sk-real-openai-0123456789'],
    handleConnection: (socket, origin) => {
      handed.push({ origin, socket })
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
    },
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keel-mount-state-'))
    work = mkdtempSync(join(tmpdir(), 'keel-mount-work-'))
    systemPem = selfSigned(work, 'system-root')
    userPem = selfSigned(work, 'user-root')
    writeFileSync(join(work, 'secret.txt'), 'root-only secret that is no certificate\n')
    mount = await createDispatcherMount({
      policy: policyOf(POLICY),
      dispatcher,
      agent: { name: 'coder', labels: { team: 'a' } },
      sandboxId: '0123456789',
      project: 'apollo',
      dir,
      systemBundle: join(work, 'system-root.pem'),
      env: {
        PATH: '/usr/bin',
        KEEL_OPENAI_KEY: 'sk-real-openai-0123456789',
        LEAKED: 'Bearer sk-real-openai-0123456789',
        SSL_CERT_FILE: join(work, 'user-root.pem'),
        REQUESTS_CA_BUNDLE: join(work, 'secret.txt'),
      },
    })
  })
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true })
    rmSync(work, { recursive: true, force: true })
  })

  it('points the five trust variables at files in the state directory, all 0644, and never writes a key', () => {
    for (const v of TRUST_ENV) expect(mount.env[v]?.startsWith(`${dir}/`), v).toBe(true)
    for (const f of readdirSync(dir)) {
      expect(statSync(join(dir, f)).mode & 0o777, f).toBe(0o644)
      expect(readFileSync(join(dir, f), 'utf8'), f).not.toMatch(/PRIVATE KEY/)
    }
    expect(readFileSync(mount.caPath, 'utf8')).toBe(mount.ca.certPem)
    expect(new X509Certificate(mount.ca.certPem).ca).toBe(true)
    expect(mount.ca.names).toEqual(['api.anthropic.test', 'api.openai.test', 'mistral.test'])
  })

  it('NODE_EXTRA_CA_CERTS (which adds to node’s store) gets keel’s CA alone', () => {
    expect(mount.env['NODE_EXTRA_CA_CERTS']).toBe(mount.caPath)
  })

  it('extends the store a variable already named instead of replacing it', () => {
    const bundle = readFileSync(mount.env['SSL_CERT_FILE']!, 'utf8')
    expect(bundle).toContain(userPem.trim())
    expect(bundle).toContain(mount.ca.certPem.trim())
    expect(bundle).not.toContain(systemPem.trim())
  })

  it('variables that named nothing get the system bundle plus keel’s CA (one shared file)', () => {
    expect(mount.env['CURL_CA_BUNDLE']).toBe(mount.env['GIT_SSL_CAINFO'])
    const bundle = readFileSync(mount.env['CURL_CA_BUNDLE']!, 'utf8')
    expect(bundle).toContain(systemPem.trim())
    expect(bundle).toContain(mount.ca.certPem.trim())
    expect(bundle).not.toContain(userPem.trim())
  })

  it('copies only certificates out of a named file, and warns when it holds none', () => {
    const bundle = readFileSync(mount.env['REQUESTS_CA_BUNDLE']!, 'utf8')
    expect(bundle).not.toContain('root-only secret')
    expect(bundle.trim()).toBe(mount.ca.certPem.trim())
    expect(mount.warnings).toEqual([expect.stringContaining(`could not read the trust file ${join(work, 'secret.txt')} (no PEM certificates in it)`)])
  })

  it('removes the dispatcher’s secrets from the agent’s environment', () => {
    expect(mount.env['KEEL_OPENAI_KEY']).toBeUndefined()
    expect(mount.env['LEAKED']).toBeUndefined()
    expect(mount.env['PATH']).toBe('/usr/bin')
  })

  it('issues leaves for the exact names at start', () => {
    expect(mount.ca.permits('api.openai.test')).toBe(true)
    expect(mount.ca.permits('registry.npmjs.org')).toBe(false)
  })

  it('hook: terminates TLS for the bound name and hands the socket over with the sandbox origin', async () => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.pause()
      mount.hook(socket, {
        agent: { name: 'coder', labels: {} },
        name: 'api.openai.test',
        port: 443,
        decision: { verdict: 'allow', reason: Reason.ALLOWED, via: 'dispatcher', route: 'llm' },
        head: Buffer.alloc(0),
        protocol: 'tls',
        sni: 'api.openai.test',
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const port = (server.address() as AddressInfo).port
      const body = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.openai.test', ca: mount.ca.certPem, ALPNProtocols: ['http/1.1'] })
        let got = ''
        s.on('data', (d: Buffer) => (got += d.toString()))
        s.on('end', () => resolve(got))
        s.on('error', reject)
      })
      expect(body).toMatch(/\r\n\r\nok$/)
      expect(handed).toHaveLength(1)
      expect(handed[0]!.origin).toEqual({ boundName: 'api.openai.test', agent: 'coder', bindingKey: '0123456789', project: 'apollo' })
      expect(handed[0]!.socket).toBeInstanceOf(tls.TLSSocket)
    } finally {
      server.close()
    }
  })

  it('does not hang on a FIFO named as a trust file', async () => {
    const fifo = join(work, 'fifo')
    execFileSync('mkfifo', [fifo])
    const d2 = mkdtempSync(join(tmpdir(), 'keel-mount-state-'))
    try {
      const m = await createDispatcherMount({
        policy: policyOf(POLICY),
        dispatcher,
        agent: { name: 'coder', labels: {} },
        sandboxId: 'abcdef0123',
        dir: d2,
        systemBundle: null,
        env: { SSL_CERT_FILE: fifo },
      })
      expect(m.warnings).toEqual([expect.stringContaining('not a regular file')])
      expect(readFileSync(m.env['CURL_CA_BUNDLE']!, 'utf8').trim()).toBe(m.ca.certPem.trim())
    } finally {
      rmSync(d2, { recursive: true, force: true })
    }
  })
})
