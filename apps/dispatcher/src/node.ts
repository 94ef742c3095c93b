/**
 * Serving the app on Node: standalone on a TCP port, or in process inside `keel run`.
 *
 * In process, the proxy terminates TLS for a `via: dispatcher` name with the per-sandbox CA
 * and hands the decrypted `tls.TLSSocket` to {@link InProcessServer.handleConnection} with the
 * connection's {@link SandboxOrigin}. The socket is emitted into a plain `http.Server`
 * (no listening port), whose request listener is the Hono app; the app reads the origin
 * back from the request's socket, so identity comes from the sandbox, not from headers.
 */
import { createServer, type RequestListener, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { getRequestListener } from '@hono/node-server'
import type { DispatcherApp } from './app.js'
import { setSocketOrigin, type SandboxOrigin } from './origin.js'

/** A Node `(req, res)` listener for the app. */
export function createNodeListener(app: DispatcherApp): RequestListener {
  return getRequestListener(app.fetch)
}

function newServer(app: DispatcherApp): Server {
  const server = createServer(createNodeListener(app))
  // Held (challenged) calls and long streams outlive Node's default request timeout.
  server.requestTimeout = 0
  server.headersTimeout = 60_000
  server.keepAliveTimeout = 65_000
  return server
}

export interface InProcessServer {
  /** The http.Server the sockets are emitted into; it never listens. */
  readonly server: Server
  /**
   * Serves HTTP/1.1 on an already-decrypted socket (e.g. a TLSSocket the proxy terminated).
   * Precondition: nothing has been read from the socket's HTTP stream yet.
   */
  handleConnection(socket: Duplex, origin: SandboxOrigin): void
  /** Stops serving: closes idle keep-alive connections, ends active ones. */
  close(): Promise<void>
}

export function createInProcessServer(app: DispatcherApp): InProcessServer {
  const server = newServer(app)
  const sockets = new Set<Duplex>()
  return {
    server,
    handleConnection(socket, origin) {
      setSocketOrigin(socket, origin)
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      server.emit('connection', socket)
    },
    close() {
      server.closeIdleConnections()
      for (const s of sockets) s.destroy()
      sockets.clear()
      return Promise.resolve()
    },
  }
}

export interface ServeOptions {
  host?: string
  port?: number
}

export interface ServedDispatcher {
  server: Server
  /** e.g. `http://127.0.0.1:8787` */
  url: string
  port: number
  close(): Promise<void>
}

/** Listens on `host:port` (127.0.0.1:0 by default) and resolves once listening. */
export async function serveDispatcher(app: DispatcherApp, options: ServeOptions = {}): Promise<ServedDispatcher> {
  const server = newServer(app)
  const host = options.host ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const shownHost = host.includes(':') ? `[${host}]` : host
  return {
    server,
    url: `http://${shownHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
