/**
 * Test set-up for the privileged suites: throwaway network namespaces (made with `ip`,
 * which tests may use; the library itself never shells out) and node children inside
 * them. Everything made here is tracked and torn down by {@link cleanup}, which the
 * suites call from afterEach, so a failing test leaves nothing behind.
 *
 * Network rule: traffic only to loopback or inside namespaces made here. The namespaces
 * have only `lo` plus AnyIP routes, so every address is local and no packet can leave.
 * The host's routes, links and ruleset are never touched.
 */
import { afterAll, afterEach, beforeEach, expect } from 'vitest'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readlinkSync } from 'node:fs'
import type { Server } from 'node:net'

/** Why the privileged suites skip, or undefined when they can run. */
export const SKIP_REASON: string | undefined =
  process.platform !== 'linux'
    ? 'needs Linux network namespaces'
    : process.getuid?.() !== 0
      ? 'needs root (network namespaces, nftables); run as root or in CI'
      : !['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].some((p) => existsSync(p))
        ? 'needs iproute2 (`ip`) to make test namespaces'
        : undefined

const namespaces = new Set<string>()
const children = new Set<ChildProcess>()
const servers = new Set<Server>()

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

/** The calling thread's network namespace, e.g. `net:[4026531840]`. */
export function threadNetns(): string {
  return readlinkSync('/proc/thread-self/ns/net')
}

/** A fresh namespace `keel-t-<random>` with lo up and AnyIP routes for IPv4 and IPv6. */
export function makeNetns(): string {
  const name = `keel-t-${randomBytes(5).toString('hex')}`
  ip('netns', 'add', name)
  namespaces.add(name)
  ip('-n', name, 'link', 'set', 'lo', 'up')
  ip('-n', name, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo')
  ip('-n', name, '-6', 'route', 'add', 'local', '::/0', 'dev', 'lo')
  return name
}

/** A fresh `keel-t-<random>` name, deleted by cleanup if something makes it. */
export function trackedNetnsName(): string {
  const name = `keel-t-${randomBytes(5).toString('hex')}`
  namespaces.add(name)
  return name
}

/** Delete one namespace now (it is also forgotten by cleanup). */
export function deleteNetns(name: string): void {
  namespaces.delete(name)
  try {
    ip('netns', 'delete', name)
  } catch {
    // already gone
  }
}

/** Run a command inside `ns` and return its stdout (for independent cross-checks). */
export function execInNetns(ns: string, file: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, file, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Start `node -e script ...args` inside `ns`, tracked for cleanup. */
export function spawnNodeInNetns(ns: string, script: string, args: string[], ipc = false): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], {
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

/** Reject after `ms` with `what` in the message, unless `promise` settles first. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
    }),
  ])
}

function stderrOf(child: ChildProcess): () => string {
  let text = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (text += d))
  return () => text.trim()
}

// Made inside the namespace, handed to the parent over IPC, then the child exits: the
// same hand-off keel's launcher uses (DESIGN.md, data path step 3).
const LISTENER = `
const net = require('node:net')
const [host, ipv6Only] = [process.argv[1], process.argv[2] === '1']
const server = net.createServer()
server.on('error', (e) => { console.error(e.message); process.exit(2) })
server.listen({ host, port: 0, ipv6Only }, () => process.send('server', server))
process.on('disconnect', () => process.exit(0))
`

/**
 * A TCP server whose listening socket lives inside `ns` while this process stays in its
 * own namespace. Its accepted sockets are in `ns`.
 */
export async function listenInNetns(ns: string, host: string, ipv6Only = false): Promise<Server> {
  const child = spawnNodeInNetns(ns, LISTENER, [host, ipv6Only ? '1' : '0'], true)
  const stderr = stderrOf(child)
  const server = await withTimeout(
    new Promise<Server>((resolve, reject) => {
      child.once('message', (_msg, handle) => resolve(handle as Server))
      child.once('error', reject)
      child.once('exit', (code, signal) =>
        reject(new Error(`listener child exited (${code ?? signal}) before sending its server: ${stderr()}`)),
      )
    }),
    15_000,
    `listener in ${ns}`,
  )
  servers.add(server)
  child.disconnect()
  return server
}

const CLIENT = `
const net = require('node:net')
const socket = net.connect({ host: process.argv[1], port: Number(process.argv[2]) })
socket.on('error', (e) => { console.error(e.message); process.exit(2) })
socket.on('close', () => process.exit(0))
socket.resume()
`

/**
 * Connect from inside `ns` to host:port and wait until `server` accepts it; returns what
 * `onAccept` returns for the accepted socket (called synchronously), then closes it.
 */
export async function acceptFromNetns<T>(
  ns: string,
  server: Server,
  host: string,
  port: number,
  onAccept: (socket: import('node:net').Socket) => T,
): Promise<T> {
  const accepted = new Promise<T>((resolve, reject) => {
    server.once('connection', (socket) => {
      try {
        resolve(onAccept(socket))
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)))
      } finally {
        socket.destroy()
      }
    })
  })
  const client = spawnNodeInNetns(ns, CLIENT, [host, String(port)])
  const stderr = stderrOf(client)
  const clientFailed = new Promise<never>((_, reject) => {
    client.once('exit', (code, signal) => {
      if (code !== 0) reject(new Error(`client to ${host}:${port} failed (${code ?? signal}): ${stderr()}`))
    })
  })
  return withTimeout(Promise.race([accepted, clientFailed]), 15_000, `connection to ${host}:${port} from ${ns}`)
}

/** Close servers, kill children (by PID, only ours), delete namespaces. Never throws. */
export async function cleanup(): Promise<void> {
  for (const server of servers) {
    server.close()
  }
  servers.clear()
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  children.clear()
  for (const name of [...namespaces]) deleteNetns(name)
}

/**
 * A fresh test namespace for each test of the calling `describe`, deleted afterwards even
 * when the test fails; after each test, asserts the calling thread never changed namespace.
 * Returns a getter for the current test's namespace name; `.callerNetns()` is the calling
 * thread's namespace as it was before the test.
 */
export function useNetnsPerTest(): (() => string) & { callerNetns(): string } {
  let ns = ''
  let callerNetns = ''
  beforeEach(() => {
    callerNetns = threadNetns()
    ns = makeNetns()
  })
  afterEach(async () => {
    try {
      expect(threadNetns()).toBe(callerNetns)
    } finally {
      await cleanup()
    }
  })
  afterAll(cleanup)
  return Object.assign(() => ns, { callerNetns: () => callerNetns })
}
