export interface FakeProviderOptions {
  host?: string
  port?: number
  /** Distinguishes several fakes (fallback tests). */
  name?: string
  /** Reply text; split on spaces into stream chunks (one output token per chunk). */
  reply?: string
  /** Delay before each content chunk. */
  chunkDelayMs?: number
  /** Keys the fake accepts; any other is answered 401 in the provider's shape, echoing it. */
  expectedKeys?: { openai?: string; anthropic?: string }
  /** Serve HTTPS with this key pair (for `keel run` suites). */
  tls?: { key: string | Buffer; cert: string | Buffer }
  /** Record requests (default true; the bench turns it off). */
  record?: boolean
}

export interface RecordedRequest {
  method: string
  path: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: string
  provider: string
}

export interface FakeProvider {
  readonly name: string
  readonly port: number
  /** e.g. http://127.0.0.1:40123 */
  readonly origin: string
  /** `${origin}/v1`: an OpenAI SDK baseURL / keel openai endpoint. */
  readonly openaiBaseUrl: string
  /** `${origin}`: an Anthropic SDK baseURL / keel anthropic endpoint. */
  readonly anthropicBaseUrl: string
  readonly requests: RecordedRequest[]
  setReply(reply: string): void
  setChunkDelay(ms: number): void
  /** Leave usage out of responses and streams. */
  setOmitUsage(omit: boolean): void
  /** Answer the next `count` requests with this status (or reset the connection). */
  failNext(status: number | 'reset', count?: number): void
  /** Streams pause before their final chunks until the returned function is called. */
  holdStreams(): () => void
  reset(): void
  close(): Promise<void>
}

export function startFakeProvider(options?: FakeProviderOptions): Promise<FakeProvider>
