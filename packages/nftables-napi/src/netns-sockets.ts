/**
 * Namespace helpers for the launcher, beside the nft calls that share their thread model
 * (src/native/netns.cc).
 *
 * Listening sockets made inside another network namespace, returned as fds (see
 * `listenInNetns` in src/native/netns.cc): the launcher adopts them with
 * `net.Server#listen({ fd })` and `dgram.Socket#bind({ fd })`, and every connection or
 * datagram on them belongs to that namespace, while the launcher stays where it is.
 * Made on a thread of their own that enters the namespace, as nft batches are.
 */
import { constants } from 'node:os'
import { KeelError } from '@keel/core'
import { loadNative } from './native.js'
import { resolveNetns } from './nft.js'

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

/**
 * Lets `lo` in `netns` build packets of up to `bytes`, for IPv4 and IPv6 (BIG TCP's
 * gso_max_size and gso_ipv4_max_size; see setLoopbackGso in src/native/netns.cc). A
 * sandbox's agent reaches keel's proxy over that lo, and bigger packets there mean
 * fewer wakeups and ACKs per byte on both sides of the hop.
 * @throws KeelError `ERR_INTERNAL` when the kernel refuses (IPv6 sizes above 64 KiB need
 *   Linux 5.19, IPv4 6.3; `bytes` above lo's tso_max_size is EINVAL) or the namespace
 *   cannot be entered.
 */
export function setLoopbackGsoMaxSize(netns: string, bytes: number): void {
  const path = resolveNetns(netns)
  const res = loadNative().setLoopbackGso(path, bytes)
  if (res.failedAt !== undefined) {
    throw new KeelError('ERR_INTERNAL', `could not set lo's packet size in network namespace ${path}: ${res.error ?? res.failedAt}`)
  }
}
