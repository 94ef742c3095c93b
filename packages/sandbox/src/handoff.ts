/**
 * Launcher side of the socket hand-off (see socket-child.ts): starts the child inside the
 * namespace and collects the six handles, or fails with the child's own error.
 */
import { spawn } from 'node:child_process'
import type { Socket as UdpSocket } from 'node:dgram'
import type { Server } from 'node:net'
import { fileURLToPath } from 'node:url'
import { KeelError } from '@keel/core'
import type { HandleKind, SocketChildConfig, SocketChildMessage } from './socket-child.js'

export interface SandboxSockets {
  proxy: Server[]
  dnsTcp: Server[]
  dnsUdp: UdpSocket[]
}

const CHILD = fileURLToPath(new URL('./socket-child.js', import.meta.url))
const EXPECTED: readonly HandleKind[] = ['proxy4', 'proxy6', 'dnsTcp4', 'dnsTcp6', 'dnsUdp4', 'dnsUdp6']

export function receiveSandboxSockets(netnsPath: string, config: SocketChildConfig, timeoutMs = 10_000): Promise<SandboxSockets> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${netnsPath}`, '--', process.execPath, CHILD, JSON.stringify(config)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    })
    const got = new Map<HandleKind, Server | UdpSocket>()
    let stderr = ''
    let settled = false
    const fail = (message: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      for (const h of got.values()) h.close()
      if (child.exitCode === null) child.kill('SIGKILL')
      reject(new KeelError('ERR_INTERNAL', `could not create keel's sockets in the sandbox: ${message}`))
    }
    const timer = setTimeout(() => fail(`no answer from the socket helper in ${timeoutMs} ms`), timeoutMs)
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString()
    })
    child.on('error', (err) => fail(err.message))
    child.on('message', (message: SocketChildMessage, handle?: Server | UdpSocket) => {
      if (message.kind === 'error') return fail(message.message)
      if (!handle) return fail(`handle ${message.handle} arrived without a socket`)
      got.set(message.handle, handle)
      if (EXPECTED.every((k) => got.has(k)) && !settled) {
        settled = true
        clearTimeout(timer)
        resolve({
          proxy: [got.get('proxy4') as Server, got.get('proxy6') as Server],
          dnsTcp: [got.get('dnsTcp4') as Server, got.get('dnsTcp6') as Server],
          dnsUdp: [got.get('dnsUdp4') as UdpSocket, got.get('dnsUdp6') as UdpSocket],
        })
      }
    })
    child.on('exit', (code, signal) => {
      if (!settled) fail(`socket helper exited (${signal ?? code}) before handing over all sockets${stderr ? `: ${stderr.trim()}` : ''}`)
    })
  })
}
