// A fake LLM provider on loopback that speaks the real wire formats, for the dispatcher's
// tests and bench: OpenAI chat completions / responses / embeddings and Anthropic messages,
// JSON and SSE streaming with the chunk shapes and usage fields the official SDKs parse.
// It records every request (headers included) so tests can assert that keel injected the
// real key and dropped the agent's dummy one.
//
// Plain ESM JavaScript (typed by index.d.mts) so the bench can run it under plain Node.
import { createServer as createHttpServer } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { randomBytes } from 'node:crypto'

const DEFAULT_REPLY = 'Hello from the keel fake provider. This reply streams word by word.'
const MAX_RECORDED = 2000

const rid = (prefix) => `${prefix}${randomBytes(12).toString('hex')}`
const now = () => Math.floor(Date.now() / 1000)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Rough, deterministic input token count: ceil(chars / 4) of the prompt-bearing fields. */
function inputTokens(body) {
  const src = body.messages ?? body.input ?? body.prompt ?? ''
  const sys = body.system ?? body.instructions ?? ''
  return Math.max(1, Math.ceil((JSON.stringify(src).length + JSON.stringify(sys).length) / 4))
}

function words(reply, max) {
  const parts = reply.split(/(?<= )/)
  return typeof max === 'number' && max > 0 ? parts.slice(0, max) : parts
}

function openAiError(status, message, type, code) {
  return { error: { message, type, param: null, code } }
}

function anthropicError(type, message) {
  return { type: 'error', error: { type, message } }
}

/**
 * @param {import('./index.d.mts').FakeProviderOptions} [options]
 * @returns {Promise<import('./index.d.mts').FakeProvider>}
 */
export async function startFakeProvider(options = {}) {
  const state = {
    reply: options.reply ?? DEFAULT_REPLY,
    chunkDelayMs: options.chunkDelayMs ?? 0,
    omitUsage: false,
    failures: [],
    gate: undefined,
    record: options.record ?? true,
  }
  const requests = []
  const expected = options.expectedKeys ?? {}
  const name = options.name ?? 'fake'

  async function handle(req, res) {
    const chunks = []
    for await (const c of req) chunks.push(c)
    const text = Buffer.concat(chunks).toString('utf8')
    const path = (req.url ?? '/').split('?')[0]
    if (state.record) {
      if (requests.length >= MAX_RECORDED) requests.shift()
      requests.push({ method: req.method ?? 'GET', path, url: req.url ?? '/', headers: { ...req.headers }, body: text, provider: name })
    }
    const anthropic = path.endsWith('/messages')
    const sendJson = (status, obj, headers = {}) => {
      const payload = JSON.stringify(obj)
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-request-id': rid('req_'), ...headers })
      res.end(payload)
    }
    if (req.method !== 'POST') return sendJson(404, openAiError(404, 'not found', 'invalid_request_error', null))

    const failure = state.failures.shift()
    if (failure !== undefined) {
      if (failure === 'reset') return req.socket.destroy()
      return anthropic
        ? sendJson(failure, anthropicError(failure === 529 ? 'overloaded_error' : 'api_error', `fake ${name} failure ${failure}`))
        : sendJson(failure, openAiError(failure, `fake ${name} failure ${failure}`, 'server_error', null))
    }

    // Auth, the way the real APIs do it. The error echoes the presented key, as some
    // providers do, so tests can check keel scrubs keys out of error bodies.
    if (anthropic) {
      const key = req.headers['x-api-key']
      if (expected.anthropic !== undefined && key !== expected.anthropic) {
        return sendJson(401, anthropicError('authentication_error', `invalid x-api-key: ${key ?? '(none)'}`))
      }
    } else {
      const auth = req.headers['authorization'] ?? ''
      const key = auth.replace(/^Bearer\s+/i, '')
      if (expected.openai !== undefined && key !== expected.openai) {
        return sendJson(401, openAiError(401, `Incorrect API key provided: ${key || '(none)'}.`, 'invalid_request_error', 'invalid_api_key'))
      }
    }

    let body
    try {
      body = JSON.parse(text)
    } catch {
      return anthropic
        ? sendJson(400, anthropicError('invalid_request_error', 'body is not JSON'))
        : sendJson(400, openAiError(400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null))
    }
    const model = typeof body.model === 'string' ? body.model : 'unknown'

    if (path.endsWith('/chat/completions')) return chat(body, model, res, sendJson)
    if (path.endsWith('/responses')) return responses(body, model, res, sendJson)
    if (path.endsWith('/embeddings')) return embeddings(body, model, sendJson)
    if (anthropic) return messages(body, model, res, sendJson)
    return sendJson(404, openAiError(404, `Invalid URL (POST ${path})`, 'invalid_request_error', null))
  }

  function sse(res) {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': rid('req_') })
    res.flushHeaders()
  }

  async function pace() {
    if (state.chunkDelayMs > 0) await sleep(state.chunkDelayMs)
  }

  async function gate() {
    if (state.gate) await state.gate.promise
  }

  async function chat(body, model, res, sendJson) {
    const id = rid('chatcmpl-')
    const created = now()
    const parts = words(state.reply, body.max_completion_tokens ?? body.max_tokens)
    const usage = {
      prompt_tokens: inputTokens(body),
      completion_tokens: parts.length,
      total_tokens: 0,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    if (body.stream !== true) {
      const out = {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: parts.join(''), refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' }],
        usage,
        service_tier: 'default',
        system_fingerprint: 'fp_keelfake',
      }
      if (state.omitUsage) delete out.usage
      return sendJson(200, out)
    }
    const includeUsage = body.stream_options?.include_usage === true && !state.omitUsage
    const chunk = (choices, extra = {}) => ({ id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_keelfake', choices, ...(includeUsage ? { usage: null } : {}), ...extra })
    sse(res)
    const write = (obj) => res.write(`data: ${JSON.stringify(obj)}\n\n`)
    write(chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }]))
    for (const w of parts) {
      await pace()
      write(chunk([{ index: 0, delta: { content: w }, logprobs: null, finish_reason: null }]))
    }
    await gate()
    write(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]))
    if (includeUsage) write(chunk([], { usage }))
    res.end('data: [DONE]\n\n')
  }

  async function responses(body, model, res, sendJson) {
    const id = rid('resp_')
    const msgId = rid('msg_')
    const created = now()
    const parts = words(state.reply, body.max_output_tokens)
    const text = parts.join('')
    const inTok = inputTokens(body)
    const usage = { input_tokens: inTok, input_tokens_details: { cached_tokens: 0 }, output_tokens: parts.length, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: inTok + parts.length }
    const item = (status, content) => ({ type: 'message', id: msgId, status, role: 'assistant', content })
    const part = (t) => ({ type: 'output_text', text: t, annotations: [], logprobs: [] })
    const response = (status, output, u) => ({
      id,
      object: 'response',
      created_at: created,
      status,
      background: false,
      error: null,
      incomplete_details: null,
      instructions: body.instructions ?? null,
      max_output_tokens: body.max_output_tokens ?? null,
      model,
      output,
      parallel_tool_calls: true,
      previous_response_id: null,
      reasoning: { effort: null, summary: null },
      store: true,
      temperature: 1,
      text: { format: { type: 'text' } },
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      truncation: 'disabled',
      usage: u,
      user: null,
      metadata: {},
    })
    const final = response('completed', [item('completed', [part(text)])], state.omitUsage ? null : usage)
    if (body.stream !== true) return sendJson(200, final)
    sse(res)
    let seq = 0
    const write = (type, obj) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...obj })}\n\n`)
    write('response.created', { response: response('in_progress', [], null) })
    write('response.in_progress', { response: response('in_progress', [], null) })
    write('response.output_item.added', { output_index: 0, item: item('in_progress', []) })
    write('response.content_part.added', { item_id: msgId, output_index: 0, content_index: 0, part: part('') })
    for (const w of parts) {
      await pace()
      write('response.output_text.delta', { item_id: msgId, output_index: 0, content_index: 0, delta: w, logprobs: [] })
    }
    await gate()
    write('response.output_text.done', { item_id: msgId, output_index: 0, content_index: 0, text, logprobs: [] })
    write('response.content_part.done', { item_id: msgId, output_index: 0, content_index: 0, part: part(text) })
    write('response.output_item.done', { output_index: 0, item: item('completed', [part(text)]) })
    write('response.completed', { response: final })
    res.end()
  }

  function embeddings(body, model, sendJson) {
    const inputs = Array.isArray(body.input) ? body.input : [body.input ?? '']
    const dims = typeof body.dimensions === 'number' ? body.dimensions : 8
    const data = inputs.map((inp, index) => {
      const vec = new Float32Array(dims)
      const s = JSON.stringify(inp)
      for (let i = 0; i < dims; i++) vec[i] = ((s.charCodeAt(i % s.length) % 97) / 97) * (i % 2 ? 1 : -1)
      const embedding = body.encoding_format === 'base64' ? Buffer.from(vec.buffer).toString('base64') : Array.from(vec)
      return { object: 'embedding', index, embedding }
    })
    const tokens = Math.max(1, Math.ceil(JSON.stringify(body.input ?? '').length / 4))
    const out = { object: 'list', data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } }
    if (state.omitUsage) delete out.usage
    return sendJson(200, out)
  }

  async function messages(body, model, res, sendJson) {
    const id = rid('msg_')
    const parts = words(state.reply, body.max_tokens)
    const inTok = inputTokens(body)
    const usage = { input_tokens: inTok, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: parts.length, service_tier: 'standard' }
    if (body.stream !== true) {
      const out = { id, type: 'message', role: 'assistant', model, content: [{ type: 'text', text: parts.join('') }], stop_reason: 'end_turn', stop_sequence: null, usage }
      if (state.omitUsage) delete out.usage
      return sendJson(200, out, { 'request-id': rid('req_') })
    }
    sse(res)
    const write = (type, obj) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...obj })}\n\n`)
    const startUsage = state.omitUsage ? undefined : { input_tokens: inTok, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1, service_tier: 'standard' }
    write('message_start', { message: { id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, ...(startUsage ? { usage: startUsage } : { usage: { input_tokens: 0, output_tokens: 0 } }) } })
    write('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })
    write('ping', {})
    for (const w of parts) {
      await pace()
      write('content_block_delta', { index: 0, delta: { type: 'text_delta', text: w } })
    }
    await gate()
    write('content_block_stop', { index: 0 })
    write('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: state.omitUsage ? 0 : parts.length } })
    write('message_stop', {})
    res.end()
  }

  const listener = (req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' })
      res.end(JSON.stringify(openAiError(500, String(err), 'server_error', null)))
    })
  }
  const server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, listener) : createHttpServer(listener)
  server.keepAliveTimeout = 65_000
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve())
  })
  const { port } = server.address()
  const origin = `${options.tls ? 'https' : 'http'}://${options.host ?? '127.0.0.1'}:${port}`

  return {
    name,
    port,
    origin,
    openaiBaseUrl: `${origin}/v1`,
    anthropicBaseUrl: origin,
    requests,
    setReply(reply) {
      state.reply = reply
    },
    setChunkDelay(ms) {
      state.chunkDelayMs = ms
    },
    setOmitUsage(omit) {
      state.omitUsage = omit
    },
    failNext(status, count = 1) {
      for (let i = 0; i < count; i++) state.failures.push(status)
    },
    holdStreams() {
      let release
      const promise = new Promise((r) => (release = r))
      state.gate = { promise }
      return () => {
        state.gate = undefined
        release()
      }
    },
    reset() {
      requests.length = 0
      state.failures.length = 0
      state.omitUsage = false
      state.reply = options.reply ?? DEFAULT_REPLY
      state.chunkDelayMs = options.chunkDelayMs ?? 0
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    },
  }
}
