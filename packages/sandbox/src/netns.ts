/**
 * The sandbox's network namespace: only `lo`, plus AnyIP routes (`local 0.0.0.0/0` and
 * `local ::/0` on lo), so every address is local and no packet can leave, whatever the
 * agent does to the ruleset. No veth, no host route: the host's network is never touched.
 *
 * Namespaces are named `keel-<id>` under /run/netns (iproute2's convention, so `ip netns`
 * sees them) so `keel gc` can find what a killed launcher left behind. They are made and
 * removed in-process by @keel/nftables-napi, without starting `ip`.
 */
import { existsSync, readdirSync } from 'node:fs'
import { constants } from 'node:os'
import { isKeelError, KeelError } from '@keel/core'
import { addNetns, NETNS_RUN_DIR, removeNetns, type NetnsCreateError } from '@keel/nftables-napi'

/** iproute2's directory, the one addNetns makes namespaces in. */
export const NETNS_DIR = NETNS_RUN_DIR
export const NETNS_PREFIX = 'keel-'

export interface Netns {
  name: string
  /** Path to bind-mounted namespace file, for setns (nsenter, the nft addon). */
  path: string
  /** Why lo's packets stayed at 64 KiB (an older kernel), if they did. */
  loopbackGsoError?: string
}

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`

export function isKeelNetnsName(name: string): boolean {
  return name.startsWith(NETNS_PREFIX) && /^[a-z0-9-]{1,64}$/.test(name)
}

/**
 * The largest packet the sandbox's lo builds (BIG TCP sizes, for IPv4 and IPv6): the
 * relay's read buffer (src/native/relay.cc, kReadBytes), so one send of it is one packet.
 * What it gains is measured in BENCHMARKS.md (sandbox notes). The host's lo is never
 * touched.
 */
export const LOOPBACK_GSO_BYTES = 256 * 1024

/**
 * Creates the namespace with lo up, the AnyIP routes, and lo's packet size raised where
 * the kernel allows it; nothing is left behind if a required step fails.
 */
export async function createNetns(name: string): Promise<Netns> {
  if (!isKeelNetnsName(name)) throw new KeelError('ERR_INTERNAL', `not a keel namespace name: ${name}`)
  const path = netnsPath(name)
  let made: { loopbackGsoError?: string }
  try {
    // In-process (the addon), not `ip netns add` and `ip -n NAME -batch`: two process
    // starts were about 10 ms of every keel run.
    made = addNetns(path, { loopbackGsoBytes: LOOPBACK_GSO_BYTES })
  } catch (err) {
    // Not ours to reword: e.g. ERR_NFT_UNAVAILABLE when the addon cannot load (exit 125).
    if (!isKeelError(err) || err.code !== 'ERR_INTERNAL') throw err
    const errno = (err as NetnsCreateError).errno
    const hint = errno === constants.errno.EPERM || errno === constants.errno.EACCES ? ' (keel run needs root, with network namespaces in the kernel)' : ''
    throw new KeelError('ERR_INTERNAL', `${err.message}${hint}`, { cause: err })
  }
  // A kernel that refuses the bigger packets (IPv6 needs Linux 5.19, IPv4 6.3) leaves lo
  // at 64 KiB; the sandbox works the same, only bulk transfers cost more.
  return { name, path, ...made }
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
