/**
 * Stable reason codes. Every decision carries one, and the same string appears in
 * logs, spans, the HTTP 403 body, the exit report and the audit log.
 * Append-only: never rename or reuse a code; users match on them.
 */
export const Reason = {
  /** The policy allows it. */
  ALLOWED: 'allowed',
  /** No route matched and `defaultPolicy` is deny-all. */
  POLICY_DEFAULT_DENY: 'policy_default_deny',
  /** A route matched but a deny policy targets it. */
  DENY_POLICY: 'deny_policy',
  /** The matching route is an exception whose `expires` has passed. */
  EXCEPTION_EXPIRED: 'exception_expired',
  /** Link-local or cloud metadata address (169.254.0.0/16, fd00:ec2::254): never dialed. */
  GUARD_METADATA: 'guard_metadata',
  /** A hostname rule's name resolved to loopback/private space not allowed by a CIDR rule (DNS rebinding). */
  GUARD_PRIVATE_ADDRESS: 'guard_private_address',
  /** DNS query for a name no route allows for this agent: answered locally, never forwarded. */
  DNS_NAME_DENIED: 'dns_name_denied',
  /** DNS query type keel does not answer for allowed names (only A/AAAA/CNAME-free answers are synthesized). */
  DNS_QUERY_TYPE_DENIED: 'dns_query_type_denied',
  /** Upstream DNS failed or timed out while resolving an allowed name. */
  UPSTREAM_DNS_FAILED: 'upstream_dns_failed',
  /** UDP other than DNS. */
  UDP_NOT_ALLOWED: 'udp_not_allowed',
  /** TLS ClientHello SNI differs from the name bound to the synthetic address. */
  SNI_MISMATCH: 'sni_mismatch',
  /** TLS ClientHello without SNI to a hostname destination. */
  SNI_MISSING: 'sni_missing',
  /** Encrypted ClientHello (ECH): keel cannot see the real name, so it denies. */
  ECH_UNSUPPORTED: 'ech_unsupported',
  /** Plain HTTP Host header differs from the bound name. */
  HOST_MISMATCH: 'host_mismatch',
  /** Plain HTTP request without a Host header to a hostname destination. */
  HOST_MISSING: 'host_missing',
  /** HTTP CONNECT sent to keel's transparent proxy. */
  HTTP_CONNECT_NOT_ALLOWED: 'http_connect_not_allowed',
  /** The first bytes were neither a TLS ClientHello nor an HTTP request head, to a hostname destination. */
  PROTOCOL_UNRECOGNIZED: 'protocol_unrecognized',
  /** ClientHello or HTTP head was malformed or oversize. */
  MALFORMED_REQUEST: 'malformed_request',
  /** The client did not send its first bytes before the peek deadline (e.g. slowloris). */
  PEEK_TIMEOUT: 'peek_timeout',
  /** A synthetic address that no name is bound to (stale, or never handed out). */
  SYNTHETIC_ADDRESS_UNBOUND: 'synthetic_address_unbound',
  /** The upstream refused, reset or was unreachable. */
  UPSTREAM_CONNECT_FAILED: 'upstream_connect_failed',
  /** The upstream dial did not complete in time. */
  UPSTREAM_CONNECT_TIMEOUT: 'upstream_connect_timeout',
  /** The per-sandbox connection limit was reached. */
  CONNECTION_LIMIT: 'connection_limit',
  /** The original destination could not be read; fail closed. */
  ORIGINAL_DESTINATION_UNKNOWN: 'original_destination_unknown',
  /** keel could not decide (internal error); fail closed. */
  INTERNAL_ERROR: 'internal_error',
  /** A `via: dispatcher` route, but no dispatcher is wired into this proxy; fail closed. */
  DISPATCHER_UNAVAILABLE: 'dispatcher_unavailable',
  /** The agent closed or reset the connection before keel could decide or connect it. */
  CLIENT_ABORTED: 'client_aborted',
  /** The original destination is keel's own proxy socket (a direct connection, not a redirected one). */
  PROXY_LOOP: 'proxy_loop',
  /** The destination handed to the policy was not a valid hostname, IP address, port or protocol. */
  INVALID_DESTINATION: 'invalid_destination',
  /** ICMP from the agent, rejected by the sandbox firewall. */
  ICMP_NOT_ALLOWED: 'icmp_not_allowed',
  /** An IP protocol other than TCP, UDP and ICMP (SCTP, raw IP, …), rejected by the sandbox firewall. */
  PROTOCOL_NOT_ALLOWED: 'protocol_not_allowed',
} as const
export type Reason = (typeof Reason)[keyof typeof Reason]

/** Every reason code, for docs and exhaustiveness tests. */
export const ALL_REASONS: readonly Reason[] = Object.values(Reason)
