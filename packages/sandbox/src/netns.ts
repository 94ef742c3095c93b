/**
 * The sandbox's network namespace: only `lo`, plus AnyIP routes (`local 0.0.0.0/0` and
 * `local ::/0` on lo), so every address is local and no packet can leave, whatever the
 * agent does to the ruleset. No veth, no host route: the host's network is never touched.
 *
 * Namespaces are named `keel-<id>` under /run/netns (iproute2's convention) so `keel gc`
 * can find what a killed launcher left behind. iproute2 is called with argument arrays.
 */
import { existsSync, readdirSync } from 'node:fs'
import { KeelError } from '@keel/core'
import { removeNetns, setLoopbackGsoMaxSize } from '@keel/nftables-napi'
import { run } from './exec.js'

export const NETNS_DIR = '/run/netns'
export const NETNS_PREFIX = 'keel-'

export interface Netns {
  name: string
  /** Path to bind-mounted namespace file, for setns (nsenter, the nft addon). */
  path: string
}

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`

export function isKeelNetnsName(name: string): boolean {
  return name.startsWith(NETNS_PREFIX) && /^[a-z0-9-]{1,64}$/.test(name)
}

/** `ip -batch` lines run inside a new namespace: lo up, then the AnyIP routes. */
export const NETNS_SETUP_BATCH = ['link set lo up', 'route add local 0.0.0.0/0 dev lo', 'route add local ::/0 dev lo', ''].join('\n')

/**
 * The largest packet the sandbox's lo builds (BIG TCP sizes, for IPv4 and IPv6): the
 * relay's read buffer (src/native/relay.cc, kReadBytes), so one send of it is one packet.
 * What it gains is measured in BENCHMARKS.md (sandbox notes). The host's lo is never
 * touched.
 */
export const LOOPBACK_GSO_BYTES = 256 * 1024

/**
 * Creates the namespace with lo up and the AnyIP routes, and lo's packet size raised
 * where the kernel allows it; removes the namespace again if a required step fails.
 */
export async function createNetns(name: string): Promise<Netns> {
  if (!isKeelNetnsName(name)) throw new KeelError('ERR_INTERNAL', `not a keel namespace name: ${name}`)
  try {
    await run('ip', ['netns', 'add', name])
  } catch (err) {
    throw new KeelError(
      'ERR_INTERNAL',
      `could not create network namespace ${name} (is this Linux with network namespaces, and are you root?): ${(err as Error).message}`,
      { cause: err },
    )
  }
  try {
    // One `ip` for the three steps (a batch stops at the first failing line, with a
    // non-zero exit): each process start costs several ms of every `keel run`. The
    // family of the last route comes from its prefix (::/0 is IPv6).
    await run('ip', ['-n', name, '-batch', '-'], 10_000, NETNS_SETUP_BATCH)
  } catch (err) {
    await deleteNetns(name).catch(() => {})
    throw new KeelError('ERR_INTERNAL', `could not set up network namespace ${name}: ${(err as Error).message}`, { cause: err })
  }
  const path = netnsPath(name)
  try {
    setLoopbackGsoMaxSize(path, LOOPBACK_GSO_BYTES)
  } catch {
    // Throughput only: kernels before 5.19 (IPv6) or 6.3 (IPv4) refuse sizes above 64 KiB,
    // and the sandbox works the same at lo's default.
  }
  return { name, path }
}

/**
 * Deletes a keel namespace, as `ip netns delete` does (detach the mount, unlink the file;
 * in-process through @keel/nftables-napi, without starting `ip`). A missing one is not an
 * error (teardown is idempotent).
 */
export async function deleteNetns(name: string): Promise<void> {
  if (!isKeelNetnsName(name)) throw new KeelError('ERR_INTERNAL', `refusing to delete non-keel namespace ${name}`)
  if (!existsSync(netnsPath(name))) return
  removeNetns(netnsPath(name))
}

/** Names of keel namespaces that exist now. */
export function listKeelNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR).filter(isKeelNetnsName)
  } catch {
    return []
  }
}
