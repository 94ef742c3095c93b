/**
 * An incremental Server-Sent Events parser (WHATWG HTML §9.2 "event stream
 * interpretation"), used only to *read* usage from a stream that is passed through
 * byte-for-byte. Handles CR, LF and CRLF line ends split across chunks, multi-line
 * `data:` fields and comments. It never changes or holds back the bytes it reads.
 */
export type SseHandler = (event: string | undefined, data: string) => void

export interface SseParser {
  push(chunk: Uint8Array): void
  end(): void
}

/** Lines longer than this are dropped (a usage record is a few hundred bytes). */
const MAX_PENDING = 4 * 1024 * 1024

export function createSseParser(onEvent: SseHandler): SseParser {
  const decoder = new TextDecoder()
  let pending = ''
  let skipLeadingLf = false
  let eventName: string | undefined
  let data: string[] = []

  function dispatch(): void {
    if (data.length > 0) onEvent(eventName, data.join('\n'))
    eventName = undefined
    data = []
  }

  function line(l: string): void {
    if (l === '') return dispatch()
    if (l.charCodeAt(0) === 58 /* : */) return
    const colon = l.indexOf(':')
    const field = colon < 0 ? l : l.slice(0, colon)
    let value = colon < 0 ? '' : l.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    if (field === 'data') data.push(value)
    else if (field === 'event') eventName = value
  }

  function feed(text: string): void {
    let start = 0
    let i = 0
    if (skipLeadingLf && text.charCodeAt(0) === 10) start = i = 1
    skipLeadingLf = false
    for (; i < text.length; i++) {
      const ch = text.charCodeAt(i)
      if (ch !== 10 && ch !== 13) continue
      line(pending + text.slice(start, i))
      pending = ''
      if (ch === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++
        } else skipLeadingLf = true
      }
      start = i + 1
    }
    pending += text.slice(start)
    if (pending.length > MAX_PENDING) pending = ''
  }

  return {
    push(chunk) {
      feed(decoder.decode(chunk, { stream: true }))
    },
    end() {
      feed(decoder.decode())
      if (pending !== '') line(pending)
      pending = ''
      dispatch()
    },
  }
}
