import net, { type AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { BULK_READ_BYTES, BulkReader, bulkReaderOf, IDLE_READ_BYTES } from './bulk-read.js'

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

/** A server that runs `onSocket` for its one connection; resolves to a bulk-reading client. */
async function pair(onSocket: (s: net.Socket) => void): Promise<{ client: net.Socket; reader: BulkReader }> {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    onSocket(s)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => server.close())
  const reader = new BulkReader()
  const client = net.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, onread: reader.onread })
  reader.bind(client)
  client.on('error', () => {})
  cleanups.push(() => client.destroy())
  await new Promise((r) => client.once('connect', r))
  return { client, reader }
}

describe('BulkReader', () => {
  it('is found on the socket it is bound to, and only there', async () => {
    const { client, reader } = await pair(() => {})
    expect(bulkReaderOf(client)).toBe(reader)
    expect(bulkReaderOf(new net.Socket())).toBeUndefined()
  })

  it('holds what arrives before take(), then hands it over in order, then new reads', async () => {
    let server: net.Socket | undefined
    const { client, reader } = await pair((s) => {
      server = s
      s.write('greeting 1;')
    })
    await new Promise((r) => setTimeout(r, 50)) // the greeting is read and held
    const got: string[] = []
    const done = new Promise<void>((resolve) => {
      expect(
        reader.take((chunk) => {
          got.push(chunk.toString())
          if (got.join('').includes('after')) resolve()
          return true
        }),
      ).toBe(true)
    })
    client.resume() // reading stopped while nobody took the bytes
    server!.write('after')
    await done
    expect(got.join('')).toBe('greeting 1;after')
  })

  it('reads into the same buffer again when the sink released the chunk, and into a new one otherwise', async () => {
    const total = 4 * 1024 * 1024
    const { client, reader } = await pair((s) => s.end(Buffer.alloc(total, 1)))
    const backing = new Set<ArrayBufferLike>()
    let chunks = 0
    let received = 0
    let keep = false
    reader.take(
      (chunk) => {
        backing.add(chunk.buffer)
        chunks++
        received += chunk.length
        keep = chunks % 2 === 0 // every other chunk is "still queued"
        return true
      },
      () => !keep,
    )
    client.resume()
    await new Promise((r) => client.once('end', r))
    expect(received).toBe(total)
    expect(chunks).toBeGreaterThan(3)
    // Half of the chunks were kept, so roughly half of them needed a buffer of their own.
    expect(backing.size).toBeGreaterThan(1)
    expect(backing.size).toBeLessThan(chunks)
  })

  it('moves bulk data in large reads, intact, and goes back to small buffers when idle', async () => {
    const total = 8 * 1024 * 1024
    const payload = Buffer.alloc(total)
    for (let i = 0; i < total; i++) payload[i] = i % 251
    const { client, reader } = await pair((s) => s.end(payload))
    const chunks: Buffer[] = []
    let largest = 0
    reader.take((chunk) => {
      chunks.push(Buffer.from(chunk)) // chunks are views of a buffer that is read into again
      largest = Math.max(largest, chunk.length)
      return true
    })
    client.resume()
    await new Promise((r) => client.once('end', r))
    expect(Buffer.concat(chunks).equals(payload)).toBe(true)
    expect(largest).toBeGreaterThan(IDLE_READ_BYTES)
    expect(largest).toBeLessThanOrEqual(BULK_READ_BYTES)
    expect((reader.onread.buffer as () => Uint8Array)().length).toBe(IDLE_READ_BYTES)
  })

  it('stops reading when the sink is full and starts again on resume()', async () => {
    const total = 4 * 1024 * 1024
    const { client, reader } = await pair((s) => s.end(Buffer.alloc(total, 7)))
    let received = 0
    let full = false
    reader.take((chunk) => {
      received += chunk.length
      full = received < total
      return !full // full after the first chunk
    })
    client.resume()
    await new Promise((r) => setTimeout(r, 100))
    const held = received
    expect(held).toBeLessThan(total)
    expect(client.isPaused()).toBe(true)
    await new Promise((r) => setTimeout(r, 50))
    expect(received).toBe(held) // nothing more while paused
    reader.take((chunk) => {
      received += chunk.length
      return true
    })
    client.resume()
    await new Promise((r) => client.once('end', r))
    expect(received).toBe(total)
  })
})
