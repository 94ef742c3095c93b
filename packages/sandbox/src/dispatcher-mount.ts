/**
 * The dispatcher inside `keel run` (DESIGN.md, data path step 7): names the policy routes
 * `via: dispatcher` get TLS termination with a per-sandbox CA, and the decrypted HTTP goes
 * to the dispatcher in process, with the sandbox's identity attached to the connection.
 *
 * ```
 * agent ──TLS to api.openai.com──▶ proxy (name, SNI checked) ──hook──▶ TLS terminator (leaf from the sandbox CA)
 *        ──▶ dispatcher.handleConnection(tls, { boundName, agent, bindingKey: sandbox id }) ──▶ provider, real key
 * ```
 *
 * Layering: the sandbox (L3) does not import apps/dispatcher (L4). It takes a
 * {@link SandboxDispatcher}, the small surface it needs, and the CLI builds one from
 * `createDispatcher` + `createInProcessServer` + the audit sink and owns its lifetime.
 *
 * Trust: the CA certificate (never its key) is written to the sandbox's state directory,
 * and the agent's NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE
 * and GIT_SSL_CAINFO point at bundles that hold it. Four of those *replace* a tool's trust
 * store, so each bundle is the store the variable would otherwise have meant (the file it
 * already named, else the system bundle) plus keel's CA: turning the dispatcher on never
 * breaks TLS to the agent's other, `direct` destinations. Only certificate blocks are
 * copied out of those files (the launcher runs as root and the bundle is world-readable).
 *
 * Secrets: the variables that hold the dispatcher's keys, and any variable whose value
 * contains one, are removed from the agent's environment. The real key lives only in keel.
 */
import { chmodSync, closeSync, constants, fstatSync, openSync, readSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { KeelError, NOOP_LOGGER, type AgentIdentity, type CompiledPolicy, type Logger } from '@keel/core'
import { createSandboxCa, createTlsTerminator, type DispatcherHook, type SandboxCa, type TlsTerminator } from '@keel/proxy'

/** Who is on the other end of a handed-over connection (apps/dispatcher's `SandboxOrigin`). */
export interface DispatcherOrigin {
  /** The name the agent dialed. */
  boundName: string
  agent: string
  project?: string
  /** The sandbox id: permits are bound to it. */
  bindingKey?: string
}

/**
 * What the sandbox needs from a dispatcher. apps/dispatcher's in-process server fits it;
 * the CLI builds one (see apps/cli `openRunDispatcher`) and closes it after the run.
 */
export interface SandboxDispatcher {
  /** Every name some provider serves (the config's `providers[].hosts`), lower-case. */
  readonly hosts: readonly string[]
  /** Environment variables that hold the dispatcher's secrets: never passed to the agent. */
  readonly secretEnv?: readonly string[]
  /** The dispatcher's secret values: an agent variable containing one is dropped. */
  secrets?(): readonly string[]
  /** Serves HTTP/1.1 on a decrypted socket. */
  handleConnection(socket: Duplex, origin: DispatcherOrigin): void
}

/** The variables that carry keel's CA to the agent. */
export const TRUST_ENV = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO'] as const

/** Where distributions keep the system trust bundle (Debian/Ubuntu, Fedora/RHEL, Alpine/BSD). */
export const SYSTEM_CA_BUNDLES: readonly string[] = [
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/cert.pem',
]

/** A trust file bigger than this is not read (the system bundle is ~200 KB). */
const MAX_TRUST_FILE_BYTES = 16 * 1024 * 1024
const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----/g
/** Secrets shorter than this are not matched against environment values (too many false hits). */
const MIN_SECRET_MATCH = 8

export interface DispatcherRoutes {
  /** Routes with `via: dispatcher`. */
  routes: readonly string[]
  /** Their `destinationHostnames`, as written (normalized): exact names and wildcard patterns. */
  patterns: readonly string[]
}

/** The `via: dispatcher` routes of a policy and the hostname patterns they match. */
export function dispatcherRoutes(policy: CompiledPolicy): DispatcherRoutes {
  const routes: string[] = []
  const patterns = new Set<string>()
  for (const route of policy.model.routes) {
    if (route.via !== 'dispatcher') continue
    routes.push(route.name)
    for (const rule of route.rules) for (const m of rule.matches) for (const p of m.destinationHostnames) patterns.add(p.text)
  }
  return { routes, patterns: [...patterns] }
}

/**
 * Checks the policy's dispatcher names against the dispatcher config, before anything
 * starts. An exact name no provider lists in `hosts` is a config mismatch (every call to
 * it would be refused): a KeelError `ERR_CONFIG_INVALID` naming it. A wildcard pattern
 * cannot be checked name by name; it yields a warning (and an error when it covers no
 * provider host at all).
 *
 * @returns warnings to show the user
 */
export function checkDispatcherHosts(routes: DispatcherRoutes, hosts: readonly string[]): string[] {
  const served = new Set(hosts.map((h) => h.toLowerCase()))
  const missing: string[] = []
  const warnings: string[] = []
  for (const p of routes.patterns) {
    const wildcard = p.startsWith('**.') ? 'any' : p.startsWith('*.') ? 'one' : undefined
    if (wildcard === undefined) {
      if (!served.has(p)) missing.push(p)
      continue
    }
    const base = p.slice(wildcard === 'any' ? 3 : 2)
    const covered = [...served].filter((h) => h.endsWith(`.${base}`) && (wildcard === 'any' || !h.slice(0, -base.length - 1).includes('.')))
    if (covered.length === 0) missing.push(p)
    else warnings.push(`${p} is routed via the dispatcher, which serves only ${covered.join(', ')} under it; other names get provider_endpoint_not_allowed`)
  }
  if (missing.length > 0) {
    throw new KeelError(
      'ERR_CONFIG_INVALID',
      `the policy routes ${missing.join(', ')} via: dispatcher, but no provider in the dispatcher config lists ${missing.length === 1 ? 'it' : 'them'} in hosts: add ${missing.length === 1 ? 'it' : 'them'} to a provider's hosts (config mismatch)`,
    )
  }
  return warnings
}

export interface DispatcherMountOptions {
  policy: CompiledPolicy
  dispatcher: SandboxDispatcher
  agent: AgentIdentity
  /** The sandbox id; the permit binding key. */
  sandboxId: string
  /** Budget/audit project for the sandbox's calls; the dispatcher config's default when absent. */
  project?: string
  /** Directory for the CA and bundle files: the sandbox's state directory (made 0755; removed at teardown). */
  dir: string
  /** The agent's environment before the mount. */
  env: NodeJS.ProcessEnv
  /** The system trust bundle; default the first of {@link SYSTEM_CA_BUNDLES} that exists; `null`: none. */
  systemBundle?: string | null
  handshakeTimeoutMs?: number
  logger?: Logger
}

export interface DispatcherMount {
  /** Pass as `onDispatcher` to createProxy. */
  readonly hook: DispatcherHook
  readonly ca: SandboxCa
  /** keel's CA certificate alone (PEM, 0644). */
  readonly caPath: string
  /** The agent's environment: trust variables pointed at bundles with keel's CA, secrets removed. */
  readonly env: NodeJS.ProcessEnv
  /** Problems the user should see (unreadable trust files, …). */
  readonly warnings: readonly string[]
  readonly terminator: TlsTerminator
}

/**
 * Creates the sandbox CA (name-constrained to the dispatcher names), writes its
 * certificate and the trust bundles into `dir`, and returns the proxy hook and the agent's
 * environment. Nothing here needs closing: the files go with the state directory, and the
 * CA key with the process.
 */
export async function createDispatcherMount(options: DispatcherMountOptions): Promise<DispatcherMount> {
  const logger = options.logger ?? NOOP_LOGGER
  const routes = dispatcherRoutes(options.policy)
  const ca = await createSandboxCa({ names: routes.patterns, commonName: `keel sandbox ${options.sandboxId} CA` })
  // Issue the exact names' leaves now, not on the agent's first connection.
  for (const p of routes.patterns) if (!p.startsWith('*')) ca.leafFor(p)

  // The agent (often not root) must read these whatever root's umask is.
  chmodSync(options.dir, 0o755)
  const caPath = join(options.dir, 'keel-ca.pem')
  writePublic(caPath, ca.certPem)
  const trust = writeTrustBundles({
    dir: options.dir,
    caPem: ca.certPem,
    caPath,
    env: options.env,
    systemBundle: options.systemBundle === undefined ? findSystemBundle() : options.systemBundle,
  })

  const { dispatcher, agent, sandboxId } = options
  const origin = (boundName: string): DispatcherOrigin => ({
    boundName,
    agent: agent.name,
    bindingKey: sandboxId,
    ...(options.project !== undefined ? { project: options.project } : {}),
  })
  const terminator = createTlsTerminator({
    ca,
    handle: (socket, ctx) => dispatcher.handleConnection(socket, origin(ctx.name)),
    logger,
    ...(options.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: options.handshakeTimeoutMs } : {}),
  })
  const env = scrubSecrets({ ...options.env, ...trust.env }, dispatcher)
  return { hook: terminator.hook, ca, caPath, env, warnings: trust.warnings, terminator }
}

/** Removes the dispatcher's secret variables, and any whose value contains a secret. */
export function scrubSecrets(env: NodeJS.ProcessEnv, dispatcher: Pick<SandboxDispatcher, 'secretEnv' | 'secrets'>): NodeJS.ProcessEnv {
  const out = { ...env }
  for (const name of dispatcher.secretEnv ?? []) delete out[name]
  const secrets = (dispatcher.secrets?.() ?? []).filter((s) => s.length >= MIN_SECRET_MATCH)
  if (secrets.length > 0) {
    for (const [name, value] of Object.entries(out)) {
      if (value !== undefined && secrets.some((s) => value.includes(s))) delete out[name]
    }
  }
  return out
}

/** Writes a file the agent reads: 0644 exactly (chmod, because `mode` is subject to the umask). */
function writePublic(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o644 })
  chmodSync(path, 0o644)
}

function findSystemBundle(): string | null {
  for (const path of SYSTEM_CA_BUNDLES) if (readCertificates(path).ok) return path
  return null
}

interface TrustBundleArgs {
  dir: string
  caPem: string
  caPath: string
  env: NodeJS.ProcessEnv
  systemBundle: string | null
}

/**
 * One bundle per distinct base store: the file a variable already names, else the system
 * bundle. NODE_EXTRA_CA_CERTS *adds* to node's built-in store, so without a file of its own
 * it gets keel's CA alone.
 */
function writeTrustBundles(args: TrustBundleArgs): { env: Record<string, string>; warnings: string[] } {
  const warnings: string[] = []
  const bundles = new Map<string, string>() // base store → bundle path
  const bundleFor = (base: string | null): string => {
    const key = base ?? ''
    const existing = bundles.get(key)
    if (existing !== undefined) return existing
    let certs: string[] = []
    if (base !== null) {
      const read = readCertificates(base)
      if (read.ok) certs = read.certs
      else warnings.push(`could not read the trust file ${base} (${read.error}); the agent's bundle holds keel's CA only`)
    }
    const path = join(args.dir, bundles.size === 0 ? 'ca-bundle.pem' : `ca-bundle-${bundles.size}.pem`)
    writePublic(path, [...certs, args.caPem.trim()].join('\n') + '\n')
    bundles.set(key, path)
    return path
  }
  const env: Record<string, string> = {}
  for (const name of TRUST_ENV) {
    const own = args.env[name]
    if (own !== undefined && own !== '') env[name] = bundleFor(own)
    else env[name] = name === 'NODE_EXTRA_CA_CERTS' ? args.caPath : bundleFor(args.systemBundle)
  }
  return { env, warnings }
}

/**
 * The PEM certificate blocks of a trust file: a regular file, at most 16 MiB. Only
 * certificates are copied out, never anything else the file might hold.
 */
function readCertificates(path: string): { ok: true; certs: string[] } | { ok: false; error: string } {
  let fd: number | undefined
  try {
    // O_NONBLOCK: a FIFO named by a variable must not hang the launcher (no effect on files).
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
    const st = fstatSync(fd)
    if (!st.isFile()) return { ok: false, error: 'not a regular file' }
    if (st.size > MAX_TRUST_FILE_BYTES) return { ok: false, error: `larger than ${MAX_TRUST_FILE_BYTES} bytes` }
    const buf = Buffer.alloc(st.size)
    let off = 0
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off)
      if (n === 0) break
      off += n
    }
    const certs = buf.subarray(0, off).toString('latin1').match(PEM_CERT_RE) ?? []
    return certs.length > 0 ? { ok: true, certs } : { ok: false, error: 'no PEM certificates in it' }
  } catch (err) {
    return { ok: false, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message }
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
