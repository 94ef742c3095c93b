/**
 * keel's sockets inside the sandbox: the proxy's TCP servers and the resolver's UDP and
 * TCP sockets, on 127.0.0.1 and ::1 of the sandbox's namespace, while the launcher stays
 * in the host namespace (DESIGN.md, data path step 3).
 *
 * The addon makes them on a thread that enters the namespace (`listenInNetns`, the same
 * mechanism as its nft calls) and hands back the fds, which are adopted here with
 * `net.Server#listen({ fd })` and `dgram.Socket#bind({ fd })`. Accepted connections and
 * datagrams belong to the sandbox; upstream dials come from the host. This replaces a
 * helper process (`nsenter node socket-child.js`, passing handles over IPC): a whole Node
 * start, ~40-100 ms of every `keel run` on a 2-core VM (bench/sandbox).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { closeSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { KeelError } from '@keel/core'
import { listenInNetns, type NetnsSocketSpec } from '@keel/nftables-napi'

export interface SandboxSockets {
  proxy: Server[]
  dnsTcp: Server[]
  dnsUdp: UdpSocket[]
}

export interface SandboxSocketPorts {
  proxyPort: number
  dnsPort: number
}

/**
 * A deep backlog: a burst of agent connections must queue, not be refused, while the
 * launcher is busy (the per-sandbox connection limit is enforced by the proxy).
 */
const BACKLOG = 4096

function adoptServer(fd: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen({ fd, backlog: BACKLOG }, () => {
      server.off('error', reject)
      resolve(server)
    })
  })
}

function adoptUdp(fd: number, type: 'udp4' | 'udp6'): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type })
    socket.once('error', reject)
    socket.bind({ fd }, () => {
      socket.off('error', reject)
      resolve(socket)
    })
  })
}

/**
 * Makes the six sockets inside `netnsPath` and adopts them. All or nothing: on failure
 * nothing stays open. `_timeoutMs` is kept for callers of the former child-process
 * hand-off; the sockets are made synchronously now.
 * @throws KeelError `ERR_INTERNAL` naming the socket that could not be made.
 */
export async function receiveSandboxSockets(netnsPath: string, config: SandboxSocketPorts, _timeoutMs?: number): Promise<SandboxSockets> {
  const specs: NetnsSocketSpec[] = [
    { protocol: 'tcp', address: '127.0.0.1', port: config.proxyPort, backlog: BACKLOG },
    { protocol: 'tcp', address: '::1', port: config.proxyPort, backlog: BACKLOG },
    { protocol: 'tcp', address: '127.0.0.1', port: config.dnsPort, backlog: BACKLOG },
    { protocol: 'tcp', address: '::1', port: config.dnsPort, backlog: BACKLOG },
    { protocol: 'udp', address: '127.0.0.1', port: config.dnsPort },
    { protocol: 'udp', address: '::1', port: config.dnsPort },
  ]
  let fds: number[]
  try {
    fds = listenInNetns(netnsPath, specs)
  } catch (err) {
    throw new KeelError('ERR_INTERNAL', `could not create keel's sockets in the sandbox: ${(err as Error).message}`, { cause: err })
  }
  const [proxy4, proxy6, dnsTcp4, dnsTcp6, dnsUdp4, dnsUdp6] = fds as [number, number, number, number, number, number]
  const adopted = await Promise.allSettled([
    adoptServer(proxy4),
    adoptServer(proxy6),
    adoptServer(dnsTcp4),
    adoptServer(dnsTcp6),
    adoptUdp(dnsUdp4, 'udp4'),
    adoptUdp(dnsUdp6, 'udp6'),
  ])
  const failed = adopted.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed) {
    for (const [i, r] of adopted.entries()) {
      if (r.status === 'fulfilled') r.value.close()
      else closeFd(fds[i]!)
    }
    throw new KeelError('ERR_INTERNAL', `could not adopt keel's sockets in the sandbox: ${(failed.reason as Error).message}`, {
      cause: failed.reason,
    })
  }
  const [p4, p6, t4, t6, u4, u6] = adopted.map((r) => (r as PromiseFulfilledResult<Server | UdpSocket>).value)
  return {
    proxy: [p4 as Server, p6 as Server],
    dnsTcp: [t4 as Server, t6 as Server],
    dnsUdp: [u4 as UdpSocket, u6 as UdpSocket],
  }
}

function closeFd(fd: number): void {
  try {
    // An fd Node did not take over (its adoption failed): close it ourselves.
    closeSync(fd)
  } catch {
    // already closed
  }
}
