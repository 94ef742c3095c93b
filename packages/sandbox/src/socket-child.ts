/**
 * Runs inside the sandbox's network namespace for a moment: creates keel's listening
 * sockets there (the proxy's TCP servers and the resolver's UDP and TCP sockets, on
 * 127.0.0.1 and ::1), hands each one to the launcher over Node's IPC channel, and exits.
 * The launcher, which stays in the host namespace, then serves on those handles: accepted
 * connections and datagrams belong to the sandbox, upstream dials come from the host.
 *
 * Started as `nsenter --net=<ns> node socket-child.js <json>` by handoff.ts.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, type Server } from 'node:net'

export interface SocketChildConfig {
  proxyPort: number
  dnsPort: number
}

export type HandleKind = 'proxy4' | 'proxy6' | 'dnsTcp4' | 'dnsTcp6' | 'dnsUdp4' | 'dnsUdp6'
export type SocketChildMessage = { kind: 'handle'; handle: HandleKind } | { kind: 'error'; message: string }

function listenTcp(port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    // A deep backlog: a burst of agent connections must queue, not be refused, while the
    // launcher is busy (the per-sandbox connection limit is enforced by the proxy).
    server.listen({ port, host, backlog: 4096, ipv6Only: host.includes(':') }, () => resolve(server))
  })
}

function bindUdp(port: number, host: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host.includes(':') })
    socket.once('error', reject)
    socket.bind(port, host, () => resolve(socket))
  })
}

function send(kind: HandleKind, handle: Server | UdpSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    const message: SocketChildMessage = { kind: 'handle', handle: kind }
    process.send!(message, handle as Server, (err) => (err ? reject(err) : resolve()))
  })
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as SocketChildConfig
  const handles: [HandleKind, Server | UdpSocket][] = [
    ['proxy4', await listenTcp(config.proxyPort, '127.0.0.1')],
    ['proxy6', await listenTcp(config.proxyPort, '::1')],
    ['dnsTcp4', await listenTcp(config.dnsPort, '127.0.0.1')],
    ['dnsTcp6', await listenTcp(config.dnsPort, '::1')],
    ['dnsUdp4', await bindUdp(config.dnsPort, '127.0.0.1')],
    ['dnsUdp6', await bindUdp(config.dnsPort, '::1')],
  ]
  for (const [kind, handle] of handles) await send(kind, handle)
  // The launcher holds its own copies now; this process's copies must not keep it alive.
  for (const [, handle] of handles) handle.close()
}

if (typeof process.send === 'function') {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      const message: SocketChildMessage = { kind: 'error', message: err instanceof Error ? err.message : String(err) }
      process.send!(message, () => process.exit(1))
    },
  )
}
