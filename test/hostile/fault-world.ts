/**
 * A small faulty world on loopback for the fault tests, next to the fake world
 * (test/world). Everything here listens on 127.0.0.12x and nothing sends a packet
 * beyond 127.0.0.0/8.
 *
 * An upstream DNS server (UDP, dns2) answers the `*.fault.test` names:
 *
 *   name                   answer                        servers (port 8080 unless noted)
 *   ok.fault.test          127.0.0.120                   HTTP that answers
 *   reset.fault.test       127.0.0.121                   8080: RST on accept; 8081: RST after the request
 *   refused.fault.test     127.0.0.122                   nothing listens (ECONNREFUSED)
 *   backlog.fault.test     127.0.0.123                   a listener that never accepts, its queue full:
 *                                                        SYNs are dropped, so a dial times out
 *   slow.fault.test        127.0.0.120 after 600 ms      (the HTTP server above)
 *   silent.fault.test      never answers
 *   servfail.fault.test    SERVFAIL
 *   refusing.fault.test    REFUSED
 *
 * The never-accepting listener is a python3 child (Node always accepts); the test fills
 * its one-slot queue from the host side with {@link FaultWorld.fillBacklog}. This is how a
 * dial timeout is made on loopback without touching any firewall: Linux drops a SYN when a
 * listener's accept queue is full (tcp_conn_request, LINUX_MIB_LISTENOVERFLOWS).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import type dgram from 'node:dgram'
import http from 'node:http'
import net from 'node:net'
import dns2 from 'dns2'

const { Packet } = dns2
type Dns2Packet = InstanceType<typeof Packet>

export const FAULT_ADDRESSES = {
  ok: '127.0.0.120',
  reset: '127.0.0.121',
  refused: '127.0.0.122',
  backlog: '127.0.0.123',
} as const
export const FAULT_PORT = 8080
export const FAULT_RESET_AFTER_REQUEST_PORT = 8081
const SLOW_DNS_MS = 600

const RCODE = { SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const

export interface FaultWorld {
  dnsPort: number
  /** Every name the fault DNS was asked, in order. */
  dnsQueries: string[]
  /** Requests the ok server answered (path, host header). */
  okRequests: { path: string; host: string | undefined }[]
  /** Connections the reset server accepted (and reset). */
  resets: number
  /** Connect to the backlog listener from the host until its accept queue is full. */
  fillBacklog(): Promise<void>
  stop(): Promise<void>
}

export const FAULT_POLICY = `apiVersion: keel.dev/v1alpha1
kind: EgressPolicy
metadata: { name: faults }
spec:
  agents:
    - name: test-agent
  guardRails:
    # The fault world lives on loopback, like the fake world (see examples/fake-world.yaml).
    unsafeAllowResolvedRanges: ["127.0.0.0/8"]
  routes:
    - name: faults
      rules:
        - matches:
            - destinationHostnames: ["*.fault.test"]
              ports: [{ startPort: 8080, endPort: 8081 }]
              protocol: TCP
`

function answer(request: Dns2Packet): { response?: Dns2Packet; delayMs: number } {
  const response = Packet.createResponseFromRequest(request)
  response.header.ra = 1
  const q = request.questions[0]
  const name = String(q?.name ?? '').toLowerCase().replace(/\.$/, '')
  const a = (address: string) => {
    if (q?.type === Packet.TYPE.A) {
      response.answers = [{ name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 30, address }] as never[]
    }
    return response
  }
  switch (name) {
    case 'ok.fault.test':
      return { response: a(FAULT_ADDRESSES.ok), delayMs: 0 }
    case 'reset.fault.test':
      return { response: a(FAULT_ADDRESSES.reset), delayMs: 0 }
    case 'refused.fault.test':
      return { response: a(FAULT_ADDRESSES.refused), delayMs: 0 }
    case 'backlog.fault.test':
      return { response: a(FAULT_ADDRESSES.backlog), delayMs: 0 }
    case 'slow.fault.test':
      return { response: a(FAULT_ADDRESSES.ok), delayMs: SLOW_DNS_MS }
    case 'silent.fault.test':
      return { delayMs: 0 }
    case 'servfail.fault.test':
      response.header.rcode = RCODE.SERVFAIL
      return { response, delayMs: 0 }
    case 'refusing.fault.test':
      response.header.rcode = RCODE.REFUSED
      return { response, delayMs: 0 }
    default:
      response.header.rcode = RCODE.NXDOMAIN
      return { response, delayMs: 0 }
  }
}

function listen(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

/** Starts the fault world. Always `await faults.stop()`. */
export async function startFaultWorld(): Promise<FaultWorld> {
  const closers: (() => Promise<void>)[] = []
  const timers = new Set<NodeJS.Timeout>()
  const dnsQueries: string[] = []
  const okRequests: FaultWorld['okRequests'] = []
  let resets = 0
  let backlogChild: ChildProcess | undefined
  const held: net.Socket[] = []
  const stop = async (): Promise<void> => {
    for (const t of timers) clearTimeout(t)
    for (const s of held.splice(0)) s.destroy()
    if (backlogChild?.pid !== undefined && backlogChild.exitCode === null) backlogChild.kill('SIGKILL')
    await Promise.all(closers.splice(0).map((c) => c().catch(() => {})))
  }
  try {
    // Upstream DNS (UDP; keel asks over UDP and retries over TCP only on TC).
    const udp = dns2.createUDPServer({ type: 'udp4' }) as unknown as dgram.Socket & { listen(p: number, a: string): Promise<void> }
    udp.on('request', (request: Dns2Packet, send: (r: Dns2Packet) => Promise<unknown>) => {
      for (const q of request.questions ?? []) dnsQueries.push(String(q.name).toLowerCase())
      const { response, delayMs } = answer(request)
      if (!response) return
      if (delayMs === 0) {
        send(response).catch(() => {})
        return
      }
      const t = setTimeout(() => {
        timers.delete(t)
        send(response).catch(() => {})
      }, delayMs)
      timers.add(t)
    })
    udp.on('requestError', () => {})
    udp.on('error', () => {})
    await udp.listen(0, '127.0.0.1')
    closers.push(() => new Promise<void>((r) => udp.close(() => r())))
    const dnsPort = udp.address().port

    // ok: a plain HTTP server.
    const ok = http.createServer((req, res) => {
      okRequests.push({ path: req.url ?? '/', host: req.headers.host })
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain' }).end('fault-world ok\n')
    })
    await listen(ok, FAULT_PORT, FAULT_ADDRESSES.ok)
    closers.push(
      () =>
        new Promise<void>((r) => {
          ok.close(() => r())
          ok.closeAllConnections()
        }),
    )

    // reset: RST on accept (8080) or after the first bytes of a request (8081).
    for (const [port, when] of [
      [FAULT_PORT, 'accept'],
      [FAULT_RESET_AFTER_REQUEST_PORT, 'request'],
    ] as const) {
      const server = net.createServer((s) => {
        s.on('error', () => {})
        resets++
        if (when === 'accept') s.resetAndDestroy()
        else s.once('data', () => s.resetAndDestroy())
      })
      await listen(server, port, FAULT_ADDRESSES.reset)
      closers.push(() => new Promise<void>((r) => server.close(() => r())))
    }

    // backlog: python3 listens with backlog 0 and never accepts.
    const script = [
      'import socket, sys, time',
      's = socket.socket()',
      's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `s.bind(('${FAULT_ADDRESSES.backlog}', ${FAULT_PORT}))`,
      's.listen(0)',
      "print('listening', flush=True)",
      'time.sleep(600)',
    ].join('\n')
    backlogChild = spawn('/usr/bin/python3', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const child = backlogChild
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the backlog listener did not start')), 5000)
      child.stdout!.once('data', () => {
        clearTimeout(timer)
        resolve()
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`the backlog listener exited (${code})`))
      })
    })
    closers.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL')
        await new Promise<void>((r) => child.once('exit', () => r()))
      }
    })

    const fillBacklog = async (): Promise<void> => {
      // Connect until one attempt does not complete within 500 ms: the queue is full.
      for (let i = 0; i < 8; i++) {
        const s = net.connect({ host: FAULT_ADDRESSES.backlog, port: FAULT_PORT })
        s.on('error', () => {})
        held.push(s)
        const connected = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(false), 500)
          s.once('connect', () => {
            clearTimeout(t)
            resolve(true)
          })
        })
        if (!connected) return
      }
      throw new Error('the backlog listener kept accepting connections')
    }

    return {
      dnsPort,
      dnsQueries,
      okRequests,
      get resets() {
        return resets
      },
      fillBacklog,
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
