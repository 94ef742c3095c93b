/**
 * Who is on the other end of a connection that `keel run` hands to the dispatcher in
 * process. The proxy terminates TLS for a `via: dispatcher` name and passes the decrypted
 * socket with its origin; the app reads it back from the Node request's socket. Requests
 * that arrive any other way (standalone `keel dispatcher serve`) have no origin.
 */
import type { IncomingMessage } from 'node:http'

export interface SandboxOrigin {
  /** The name the agent dialed (SNI / bound synthetic address), e.g. `api.openai.com`. */
  boundName: string
  /** The agent's identity, from the sandbox: the agent cannot override it with headers. */
  agent: string
  /** The project its calls are budgeted and audited under; config default when absent. */
  project?: string
  /** Binding key for permits (e.g. the sandbox id); the agent cannot choose it. */
  bindingKey?: string
}

const ORIGINS = new WeakMap<object, SandboxOrigin>()

/** Attaches an origin to a socket before it is emitted into the dispatcher's HTTP server. */
export function setSocketOrigin(socket: object, origin: SandboxOrigin): void {
  ORIGINS.set(socket, Object.freeze({ ...origin }))
}

/** The origin of a Node request, if its socket was handed over by the sandbox. */
export function originOfIncoming(incoming: IncomingMessage | undefined): SandboxOrigin | undefined {
  const socket = incoming?.socket
  return socket ? ORIGINS.get(socket) : undefined
}
