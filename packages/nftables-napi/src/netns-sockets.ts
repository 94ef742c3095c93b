/**
 * Namespace helpers for the launcher, beside the nft calls that share their thread model
 * (src/native/netns.cc): making a sandbox's namespace, keel's sockets in it, removing it.
 *
 * Listening sockets made inside another network namespace, returned as fds (see
 * `listenInNetns` in src/native/netns.cc): the launcher adopts them with
 * `net.Server#listen({ fd })` and `dgram.Socket#bind({ fd })`, and every connection or
 * datagram on them belongs to that namespace, while the launcher stays where it is.
 * Made on a thread of their own that enters the namespace, as nft batches are.
 */
import { constants } from 'node:os'
import { dirname } from 'node:path'
import { KeelError } from '@keel/core'
import { loadNative } from './native.js'
import { NETNS_RUN_DIR, resolveNetns } from './nft.js'

export interface NetnsSocketSpec {
  /** TCP (bound and listening) or UDP (bound). */
  protocol: 'tcp' | 'udp'
  /** An IPv4 or IPv6 literal; IPv6 sockets are IPV6_V6ONLY. */
  address: string
  port: number
  /** listen(2) backlog for TCP. Default 511 (as Node's). */
  backlog?: number
}

/**
 * Creates the sockets in `netns` (a name under /run/netns or a path), in order, and
 * returns their fds (close-on-exec, non-blocking). All or nothing: on any failure the
 * ones made are closed and nothing is returned.
 * @throws KeelError `ERR_INTERNAL` naming the step and socket that failed (e.g. EADDRINUSE),
 *   `ERR_NFT_UNAVAILABLE` if the addon cannot load.
 */
export function listenInNetns(netns: string, specs: readonly NetnsSocketSpec[]): number[] {
  const path = resolveNetns(netns)
  const native = loadNative()
  const res = native.listenInNetns(
    path,
    specs.map((s) => ({
      tcp: s.protocol === 'tcp',
      family: s.address.includes(':') ? 6 : 4,
      address: s.address,
      port: s.port,
      ...(s.backlog === undefined ? {} : { backlog: s.backlog }),
    })),
  )
  if ('fds' in res) return res.fds
  throw new KeelError('ERR_INTERNAL', `could not make keel's sockets in network namespace ${path}: ${res.error}`)
}

/**
 * Removes a named namespace (a file under /run/netns, or any bind-mounted namespace
 * file): detaches its mount and unlinks it, as `ip netns delete` does, without starting
 * `ip`. A file that does not exist is not an error (teardown is idempotent).
 * @throws KeelError `ERR_INTERNAL` when the file exists and cannot be removed.
 */
export function removeNetns(netns: string): void {
  const path = resolveNetns(netns)
  const res = loadNative().removeNetns(path)
  if (res.errno !== undefined && res.errno !== constants.errno.ENOENT) {
    throw new KeelError('ERR_INTERNAL', `could not delete network namespace ${path}: ${res.error ?? `errno ${res.errno}`}`)
  }
}

export interface AddNetnsOptions {
  /**
   * Let lo build packets of up to this many bytes, for IPv4 and IPv6 (BIG TCP's
   * gso_max_size and gso_ipv4_max_size). Best effort: when the kernel refuses or ignores
   * it (IPv6 sizes above 64 KiB need Linux 5.19, IPv4 6.3; more than lo's tso_max_size is
   * EINVAL), `loopbackGsoError` says so and what lo has; the sizes are read back to know.
   * Default: lo's own (64 KiB).
   */
  loopbackGsoBytes?: number
}

/** Why addNetns failed: the failed step's errno (e.g. EEXIST, EPERM), when there is one. */
export class NetnsCreateError extends KeelError {
  constructor(
    message: string,
    readonly errno: number | undefined,
  ) {
    super('ERR_INTERNAL', message)
  }
}

/**
 * Makes a named network namespace ready for a sandbox, in-process: what `ip netns add`
 * and then `link set lo up`, `route add local 0.0.0.0/0 dev lo` and `route add local
 * ::/0 dev lo` inside it do, without starting `ip` (src/native/netns.cc, createNetns).
 * Any failure after the namespace file exists removes it again. Only names under
 * /run/netns: making the namespace makes its directory a shared mount point, as `ip`
 * does, which no other directory should become.
 * @returns why lo's packet size could not be raised, if it could not.
 * @throws NetnsCreateError (a KeelError, `ERR_INTERNAL`) naming the step that failed,
 *   with its errno (EEXIST: the name is taken; EPERM: not root).
 * @throws TypeError for a path outside /run/netns.
 */
export function addNetns(netns: string, options: AddNetnsOptions = {}): { loopbackGsoError?: string } {
  const path = resolveNetns(netns)
  if (dirname(path) !== NETNS_RUN_DIR) throw new TypeError(`addNetns makes namespaces under ${NETNS_RUN_DIR} only, not ${path}`)
  const res = loadNative().createNetns(path, options.loopbackGsoBytes ?? 0)
  if ('failedAt' in res) throw new NetnsCreateError(`could not create network namespace ${path}: ${res.error}`, res.errno)
  return res.loopbackGsoError === undefined ? {} : { loopbackGsoError: res.loopbackGsoError }
}
