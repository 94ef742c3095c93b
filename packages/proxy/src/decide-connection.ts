/**
 * The decision steps for one connection, free of sockets:
 *
 * 1. {@link decideDestination}: the original destination is either a synthetic address
 *    (keel's DNS bound a name to it: decide on agent, name, port) or a literal address
 *    the agent chose (decide on agent, address, port: CIDR rules and guard rails only).
 * 2. {@link verifyFirstBytes}: for a name, what the agent sent must be for that name:
 *    TLS SNI equal to it (no ECH), HTTP Host equal to it, no CONNECT.
 * 3. {@link vetResolved}: keel resolves the name itself; each address passes the guard
 *    rails (`checkResolved`) before it may be dialed.
 */
import net from 'node:net'
import { domainToASCII } from 'node:url'
import {
  Reason,
  type AgentIdentity,
  type CheckResolvedArgs,
  type DecideArgs,
  type Decision,
  type NameBindings,
} from '@keel/core'
import type { FirstBytes } from './first-bytes.js'

/** Where the agent meant to go, read from the redirected socket (SO_ORIGINAL_DST). */
export interface OriginalDestination {
  address: string
  port: number
  family?: number | string
}

export type DestinationDecision =
  | { kind: 'name'; name: string; address: string; port: number; decision: Decision }
  | { kind: 'address'; address: string; port: number; decision: Decision }

export interface DecideDestinationDeps {
  agent: AgentIdentity
  bindings: NameBindings
  decide(args: DecideArgs): Decision
  now(): number
}

/**
 * Decide on the original destination. A synthetic address with no bound name is denied
 * (`synthetic_address_unbound`) without consulting the policy.
 * May throw only if an injected function throws; the caller turns that into `internal_error`.
 */
export function decideDestination(dst: OriginalDestination, deps: DecideDestinationDeps): DestinationDecision {
  const { address, port } = dst
  if (deps.bindings.isSynthetic(address)) {
    const name = deps.bindings.nameFor(address)
    if (name === undefined) {
      return {
        kind: 'name',
        name: address,
        address,
        port,
        decision: { verdict: 'deny', reason: Reason.SYNTHETIC_ADDRESS_UNBOUND, detail: `no name is bound to ${address}` },
      }
    }
    const decision = deps.decide({ agent: deps.agent, hostname: name, port, protocol: 'TCP', now: deps.now() })
    return { kind: 'name', name, address, port, decision }
  }
  const decision = deps.decide({ agent: deps.agent, address, port, protocol: 'TCP', now: deps.now() })
  return { kind: 'address', address, port, decision }
}

export type Verification = { ok: true; detail: string } | { ok: false; reason: Reason; detail: string }

/**
 * Check the agent's first bytes against the bound name.
 *
 * `opaque` says what to do with bytes that are neither TLS nor HTTP (see connection.ts
 * for why the default is to allow them).
 */
export function verifyFirstBytes(
  first: Exclude<FirstBytes, { kind: 'incomplete' }>,
  name: string,
  opaque: 'allow' | 'deny',
): Verification {
  const want = normalizeName(name)
  switch (first.kind) {
    case 'tls': {
      const { hello } = first
      // With ECH the cleartext SNI is only the "public name"; the real one is encrypted.
      if (hello.ech) return { ok: false, reason: Reason.ECH_UNSUPPORTED, detail: 'ClientHello carries encrypted_client_hello' }
      if (hello.sni === undefined) return { ok: false, reason: Reason.SNI_MISSING, detail: 'ClientHello has no server_name' }
      if (normalizeName(hello.sni) !== want) {
        return { ok: false, reason: Reason.SNI_MISMATCH, detail: `SNI "${hello.sni}" is not ${want}` }
      }
      return { ok: true, detail: `tls sni=${want}` }
    }
    case 'http': {
      const { request } = first
      if (request.method.toUpperCase() === 'CONNECT') {
        return { ok: false, reason: Reason.HTTP_CONNECT_NOT_ALLOWED, detail: `CONNECT ${request.target}` }
      }
      // RFC 9112 §3.2.2: with an absolute-form target the server uses the target's
      // host and ignores Host, so both must name the bound host.
      if (request.targetHost !== undefined && normalizeName(request.targetHost) !== want) {
        return { ok: false, reason: Reason.HOST_MISMATCH, detail: `request target host "${request.targetHost}" is not ${want}` }
      }
      if (request.host === undefined || request.host === '') {
        if (request.targetHost !== undefined) return { ok: true, detail: `http host=${want}` }
        return { ok: false, reason: Reason.HOST_MISSING, detail: 'request has no Host header' }
      }
      if (normalizeName(request.host) !== want) {
        return { ok: false, reason: Reason.HOST_MISMATCH, detail: `Host "${request.host}" is not ${want}` }
      }
      return { ok: true, detail: `http host=${want}` }
    }
    case 'opaque':
      return opaque === 'allow'
        ? { ok: true, detail: 'opaque protocol (neither TLS nor HTTP)' }
        : { ok: false, reason: Reason.PROTOCOL_UNRECOGNIZED, detail: 'first bytes are neither a TLS ClientHello nor an HTTP request' }
    case 'malformed':
      return { ok: false, reason: Reason.MALFORMED_REQUEST, detail: `${first.protocol}: ${first.detail}` }
    default: {
      const _exhaustive: never = first
      return _exhaustive
    }
  }
}

const LDH_LOWER = /^[a-z0-9.-]*$/

/** Compare names as DNS does: ASCII (A-labels), lowercase, without a trailing dot. */
export function normalizeName(name: string): string {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name
  // The common case, a lower-case LDH name without punycode, is already its own ASCII
  // form: skip domainToASCII (a URL-parser call on every connection).
  if (LDH_LOWER.test(bare) && !bare.includes('xn--')) return bare
  const ascii = domainToASCII(bare)
  return (ascii === '' ? bare : ascii).toLowerCase()
}

export interface VetDeps {
  agent: AgentIdentity
  checkResolved(args: CheckResolvedArgs): Decision
  now(): number
}

export type Vetted = { ok: true; addresses: string[] } | { ok: false; decision: Decision }

/**
 * Keep the resolved addresses the guard rails allow, in order. When none is allowed,
 * return the first refusal (e.g. `guard_private_address`) with every address in the detail.
 */
export function vetResolved(name: string, port: number, addresses: readonly string[], deps: VetDeps): Vetted {
  const allowed: string[] = []
  let refusal: Decision | undefined
  const refused: string[] = []
  for (const address of addresses) {
    if (net.isIP(address) === 0) {
      refused.push(`${address} (not an IP address)`)
      continue
    }
    const d = deps.checkResolved({ agent: deps.agent, hostname: name, address, port, protocol: 'TCP', now: deps.now() })
    if (d.verdict === 'allow') allowed.push(address)
    else {
      refusal ??= d
      refused.push(`${address} (${d.reason})`)
    }
  }
  if (allowed.length > 0) return { ok: true, addresses: allowed }
  if (refusal === undefined) {
    return {
      ok: false,
      decision: {
        verdict: 'deny',
        reason: Reason.UPSTREAM_DNS_FAILED,
        detail: refused.length === 0 ? `${name} resolved to no address` : `${name} resolved to ${refused.join(', ')}`,
      },
    }
  }
  return { ok: false, decision: { ...refusal, detail: `${name} resolved to ${refused.join(', ')}${refusal.detail === undefined ? '' : `: ${refusal.detail}`}` } }
}
