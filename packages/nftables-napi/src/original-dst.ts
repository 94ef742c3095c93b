/**
 * Where a NAT-redirected TCP connection was going: SO_ORIGINAL_DST (IPv4) or
 * IP6T_SO_ORIGINAL_DST (IPv6) on the accepted socket. conntrack keeps the tuple the
 * client sent before `redirect`/`dnat` rewrote it; the kernel hands it back through
 * getsockopt(2) on the accepted socket's fd.
 */
import type { Socket } from 'node:net'
import { KeelError } from '@keel/core'
import { systemError } from './errors.js'
import { loadNative, type NativeOriginalDstError } from './native.js'
import type { OriginalDestination } from './types.js'

const ENOENT = 2
/** errnos that mean "this fd is not a connected TCP/IP socket": a programmer error. */
const NOT_A_TCP_SOCKET = new Set(['EBADF', 'ENOTSOCK', 'EAFNOSUPPORT', 'ENOPROTOOPT', 'ENOTCONN'])

/**
 * The fd of a net.Socket. Node keeps it at `socket._handle.fd` on Linux (TCPWrap's `fd`
 * getter); it is not public API, so it is checked here rather than trusted.
 * @throws TypeError when the socket has no open handle with an fd.
 */
export function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle
  const fd = handle?.fd
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new TypeError(
      'originalDestination needs an open, accepted net.Socket: socket._handle.fd is ' +
        (handle ? String(fd) : 'missing (socket destroyed or not yet connected?)'),
    )
  }
  return fd
}

/**
 * The destination a client dialed before nftables redirected its connection to this
 * socket.
 *
 * A connection that was not redirected has no original destination: either conntrack has
 * no entry for it (ENOENT, e.g. no NAT ruleset in that namespace) or the entry's original
 * destination is this very socket (the client dialed the listener directly). Both throw
 * `ERR_NO_ORIGINAL_DST`, so a proxy can never mistake its own address for a target.
 *
 * An IPv4 connection accepted on a dual-stack IPv6 listener is reported as family 4.
 *
 * @throws KeelError `ERR_NO_ORIGINAL_DST` when the connection was not redirected by nat;
 *   TypeError when `socket` is not an open TCP/IP socket; KeelError `ERR_NFT_UNAVAILABLE`
 *   when the addon cannot load.
 * @example
 * server.on('connection', (socket) => {
 *   const { address, port, family } = originalDestination(socket)
 * })
 */
export function originalDestination(socket: Socket): OriginalDestination {
  return originalDestinationFromFd(socketFd(socket))
}

/** {@link originalDestination} for a raw fd of an accepted TCP socket. */
export function originalDestinationFromFd(fd: number): OriginalDestination {
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be an integer >= 0, got ${String(fd)}`)
  const res = loadNative().originalDst(fd)
  if ('errno' in res) throw errnoError(fd, res)
  if (res.address === res.localAddress && res.port === res.localPort) {
    throw new KeelError(
      'ERR_NO_ORIGINAL_DST',
      `connection was not redirected by nat: its original destination ${hostPort(res.address, res.port)} is this socket itself`,
    )
  }
  return { address: res.address, port: res.port, family: res.family }
}

function errnoError(fd: number, res: NativeOriginalDstError): Error {
  const cause = systemError(res.errno, res.syscall)
  const name = cause.code
  if (res.errno === ENOENT) {
    return new KeelError(
      'ERR_NO_ORIGINAL_DST',
      'connection was not redirected by nat: conntrack has no entry for it (SO_ORIGINAL_DST: ENOENT)',
      { cause },
    )
  }
  if (NOT_A_TCP_SOCKET.has(name)) {
    const what = res.socketFamily !== undefined && name === 'EAFNOSUPPORT' ? ` (address family ${res.socketFamily})` : ''
    return new TypeError(`fd ${fd} is not a connected TCP/IP socket${what}: ${res.syscall}: ${name}`, { cause })
  }
  return new KeelError('ERR_NO_ORIGINAL_DST', `cannot read the original destination: ${res.syscall}: ${name}`, { cause })
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}
