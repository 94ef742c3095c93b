import { describe, expect, it } from 'vitest'
import { ALL_REASONS, Reason } from '@keel/core'
import { denyStatus, howToAllow, httpDenyResponse, tlsAlert, tlsAlertFor, TLS_ALERT, type DenyContext } from './deny-response.js'

const base: DenyContext = { agent: 'coder', host: 'api.example.com', isAddress: false, port: 443, reason: Reason.POLICY_DEFAULT_DENY }

describe('httpDenyResponse', () => {
  it('is a complete 403 with Connection: close, a reason header and an exact Content-Length', () => {
    const raw = httpDenyResponse({ ...base, detail: 'no route matched' }).toString('utf8')
    const [head = '', body = ''] = raw.split('\r\n\r\n')
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden')
    expect(head).toContain('\r\nConnection: close')
    expect(head).toContain('\r\nContent-Type: text/plain; charset=utf-8')
    expect(head).toContain('\r\nX-Keel-Reason: policy_default_deny')
    expect(head).toContain(`\r\nContent-Length: ${Buffer.byteLength(body)}`)
    expect(body).toContain('agent:   coder')
    expect(body).toContain('to:      api.example.com:443 (TCP)')
    expect(body).toContain('detail:  no route matched')
    expect(body).toContain('destinationHostnames: ["api.example.com"]')
  })

  it('cannot be split by agent-controlled text', () => {
    const raw = httpDenyResponse({ ...base, reason: Reason.HOST_MISMATCH, detail: 'Host "x\r\nSet-Cookie: a=b" is not y' }).toString()
    expect(raw).not.toContain('\r\nSet-Cookie')
    expect(raw.split('\r\n\r\n')).toHaveLength(2)
  })

  it('brackets IPv6 and suggests a /128 CIDR', () => {
    const body = httpDenyResponse({ ...base, host: '2001:db8::1', isAddress: true }).toString()
    expect(body).toContain('[2001:db8::1]:443')
    expect(body).toContain('destinationCIDRs: ["2001:db8::1/128"]')
  })

  it.each([
    [Reason.UPSTREAM_CONNECT_FAILED, 502],
    [Reason.UPSTREAM_CONNECT_TIMEOUT, 504],
    [Reason.UPSTREAM_DNS_FAILED, 502],
    [Reason.MALFORMED_REQUEST, 400],
    [Reason.HTTP_CONNECT_NOT_ALLOWED, 403],
    [Reason.SNI_MISMATCH, 403],
  ])('%s → %i', (reason, status) => {
    expect(denyStatus({ ...base, reason })).toBe(status)
  })

  it("prefers the deny policy's status, and ignores a nonsense one", () => {
    expect(denyStatus({ ...base, decision: { verdict: 'deny', reason: Reason.DENY_POLICY, denyResponse: { statusCode: 451, message: 'm' } } })).toBe(451)
    expect(denyStatus({ ...base, decision: { verdict: 'deny', reason: Reason.DENY_POLICY, denyResponse: { statusCode: 200, message: 'm' } } })).toBe(403)
  })

  it('has advice for every reason code', () => {
    for (const reason of ALL_REASONS) expect(howToAllow({ ...base, reason }).length).toBeGreaterThan(0)
  })
})

describe('TLS alerts', () => {
  it('builds a fatal alert record', () => {
    expect([...tlsAlert(TLS_ALERT.UNRECOGNIZED_NAME)]).toEqual([21, 3, 3, 0, 2, 2, 112])
  })
  it.each([
    [Reason.SNI_MISMATCH, TLS_ALERT.UNRECOGNIZED_NAME],
    [Reason.SNI_MISSING, TLS_ALERT.UNRECOGNIZED_NAME],
    [Reason.MALFORMED_REQUEST, TLS_ALERT.DECODE_ERROR],
    [Reason.ECH_UNSUPPORTED, TLS_ALERT.ACCESS_DENIED],
    [Reason.POLICY_DEFAULT_DENY, TLS_ALERT.ACCESS_DENIED],
    [Reason.UPSTREAM_CONNECT_FAILED, TLS_ALERT.INTERNAL_ERROR],
  ])('%s → %i', (reason, alert) => expect(tlsAlertFor(reason)).toBe(alert))
})
