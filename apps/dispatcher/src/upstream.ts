/**
 * The upstream HTTP client: how managed execution dials an allowlisted endpoint.
 *
 * The default is built on node:http / node:https with keep-alive agents rather than the
 * global fetch: on Node 20 undici's fetch and its web streams cost over 1 ms per call on this
 * class of machine (bench/dispatcher), more than everything else keel does. A fetch-based
 * client ({@link fetchUpstream}) remains for tests and other runtimes.
 *
 * Redirects are never followed (the caller passes 3xx through), and response bodies are
 * not decoded: keel asks for `accept-encoding: identity` so it can read usage as it passes.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'

export interface UpstreamRequest {
  method: 'POST'
  headers: Record<string, string>
  body: Uint8Array
  /** Fail if the response headers have not arrived by then. */
  headersTimeoutMs: number
  /** Registers the abort hook: called if the client goes away; returns an unsubscribe. */
  onAbort(fn: () => void): () => void
}

export interface UpstreamResponse {
  status: number
  /** Lower-case names; repeated headers joined with ", " (set-cookie is never passed on). */
  headers: Readonly<Record<string, string>>
  /** The whole body. */
  bytes(): Promise<Uint8Array>
  /** The body as it arrives, chunk by chunk; `onChunk` sees each chunk before the consumer. */
  stream(onChunk: (chunk: Uint8Array) => void, onEnd: (outcome: 'complete' | 'cancelled' | 'error') => void): ReadableStream<Uint8Array>
  /** Discards the body. */
  discard(): void
}

export type UpstreamClient = (url: string, init: UpstreamRequest) => Promise<UpstreamResponse>

export interface NodeUpstreamOptions {
  /** Sockets per upstream origin. */
  maxSockets?: number
  /** Extra CA certificates for https endpoints (tests' fake providers). */
  ca?: string | Buffer | Array<string | Buffer>
}

function headerRecord(res: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined || k === 'set-cookie') continue
    out[k] = Array.isArray(v) ? v.join(', ') : v
  }
  return out
}

function nodeResponse(res: IncomingMessage): UpstreamResponse {
  let used = false
  const claim = (): void => {
    if (used) throw new TypeError('upstream body already used')
    used = true
  }
  return {
    status: res.statusCode ?? 502,
    headers: headerRecord(res),
    bytes() {
      claim()
      return new Promise<Uint8Array>((resolve, reject) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
        res.once('error', reject)
        res.once('aborted', () => reject(new Error('upstream response aborted')))
      })
    },
    stream(onChunk, onEnd) {
      claim()
      let finished = false
      const end = (outcome: 'complete' | 'cancelled' | 'error'): void => {
        if (finished) return
        finished = true
        onEnd(outcome)
      }
      return new ReadableStream<Uint8Array>({
        start(controller) {
          res.on('data', (chunk: Buffer) => {
            try {
              onChunk(chunk)
            } catch {
              // Reading usage never breaks the stream.
            }
            controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
            if ((controller.desiredSize ?? 1) <= 0) res.pause()
          })
          res.once('end', () => {
            end('complete')
            controller.close()
          })
          const fail = (err: unknown): void => {
            end('error')
            try {
              controller.error(err)
            } catch {
              // Already closed.
            }
          }
          res.once('error', fail)
          res.once('aborted', () => fail(new Error('upstream response aborted')))
        },
        pull() {
          res.resume()
        },
        cancel() {
          end('cancelled')
          res.destroy()
        },
      })
    },
    discard() {
      if (used) return
      used = true
      res.resume()
    },
  }
}

/** The default client: node:http(s) with keep-alive agents, one pool per origin. */
export function nodeUpstream(options: NodeUpstreamOptions = {}): UpstreamClient {
  const maxSockets = options.maxSockets ?? 256
  const http = new HttpAgent({ keepAlive: true, maxSockets, scheduling: 'lifo' })
  const https = new HttpsAgent({ keepAlive: true, maxSockets, scheduling: 'lifo', ...(options.ca ? { ca: options.ca } : {}) })
  return function nodeHttpUpstream(url, init) {
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const u = new URL(url)
      const secure = u.protocol === 'https:'
      const headers = { ...init.headers, 'content-length': String(init.body.byteLength) }
      const req = (secure ? httpsRequest : httpRequest)(
        {
          protocol: u.protocol,
          hostname: u.hostname.replace(/^\[|\]$/g, ''),
          port: u.port || (secure ? 443 : 80),
          path: `${u.pathname}${u.search}`,
          method: init.method,
          headers,
          agent: secure ? https : http,
        },
        (res) => {
          clearTimeout(timer)
          res.once('close', unsubscribe)
          resolve(nodeResponse(res))
        },
      )
      const timer = setTimeout(() => req.destroy(Object.assign(new Error('upstream response headers timed out'), { name: 'TimeoutError', code: 'ETIMEDOUT' })), init.headersTimeoutMs)
      // A client that goes away cancels the upstream request (and its stream).
      const unsubscribe = init.onAbort(() => req.destroy(Object.assign(new Error('client went away'), { code: 'ECLIENTGONE' })))
      req.once('error', (err) => {
        clearTimeout(timer)
        unsubscribe()
        reject(err)
      })
      req.end(init.body)
    })
  }
}

/** A client over any fetch implementation (tests inject a canned one). */
export function fetchUpstream(fetchImpl: typeof fetch): UpstreamClient {
  return async function fetchBasedUpstream(url, init) {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(new DOMException('upstream response headers timed out', 'TimeoutError')), init.headersTimeoutMs)
    init.onAbort(() => controller.abort(new Error('client went away')))
    let res: Response
    try {
      res = await fetchImpl(url, { method: init.method, headers: init.headers, body: init.body, signal: controller.signal, redirect: 'manual' })
    } finally {
      clearTimeout(timer)
    }
    const headers: Record<string, string> = {}
    res.headers.forEach((v, k) => {
      if (k !== 'set-cookie') headers[k] = v
    })
    return {
      status: res.status,
      headers,
      bytes: async () => new Uint8Array(await res.arrayBuffer()),
      stream(onChunk, onEnd) {
        const reader = res.body!.getReader()
        let finished = false
        const end = (o: 'complete' | 'cancelled' | 'error'): void => {
          if (!finished) {
            finished = true
            onEnd(o)
          }
        }
        return new ReadableStream<Uint8Array>({
          async pull(controller) {
            let r: Awaited<ReturnType<typeof reader.read>>
            try {
              r = await reader.read()
            } catch (err) {
              end('error')
              controller.error(err)
              return
            }
            if (r.done) {
              end('complete')
              controller.close()
              return
            }
            try {
              onChunk(r.value)
            } catch {
              // Reading usage never breaks the stream.
            }
            controller.enqueue(r.value)
          },
          cancel(reason) {
            end('cancelled')
            return reader.cancel(reason)
          },
        })
      },
      discard() {
        void res.body?.cancel().catch(() => {})
      },
    }
  }
}
