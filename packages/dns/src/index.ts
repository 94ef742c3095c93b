/**
 * @module @keel/dns: the sandbox's policy-aware DNS resolver.
 *
 * - {@link SyntheticPool}: per-sandbox synthetic addresses (198.18.0.0/15 and a ULA /64),
 *   one pair per allowed name, and the address → name map the proxy reads (core's `NameBindings`).
 * - {@link createDnsServer} / {@link listenDnsServer}: answers the agent's queries on UDP and
 *   TCP; denied names get NXDOMAIN + Extended DNS Error locally and never go upstream.
 * - {@link UpstreamResolver}: keel's own A/AAAA lookups with a TTL cache; its `resolve` is
 *   core's `Resolve`, used by the proxy to dial real addresses.
 * - A strict DNS wire codec and a tiny stub client ({@link dnsQuery}) for tests and tools.
 */
export { SyntheticPool, SYNTHETIC_IPV4_CIDR, DEFAULT_POOL_CAPACITY, MAX_POOL_CAPACITY, normalizeName } from './pool.js'
export type { SyntheticBinding, SyntheticPoolOptions } from './pool.js'
export { createDnsServer, listenDnsServer, isPlainHostname } from './server.js'
export type { DnsServer, DnsServerCounters, DnsServerOptions, ListenDnsServerOptions } from './server.js'
export { UpstreamResolver, UpstreamDnsError, parseHostPort, parseResolvConf } from './upstream.js'
export type {
  AddressType,
  UpstreamAnswer,
  UpstreamCounters,
  UpstreamErrorCode,
  UpstreamQuerier,
  UpstreamResolverOptions,
} from './upstream.js'
export { dnsQuery, buildQuery, isReplyTo, udpExchange, tcpExchange, DnsTransportError } from './transport.js'
export type { DnsEndpoint, DnsQueryOptions, DnsTransportErrorCode, ExchangeOptions } from './transport.js'
export {
  DnsWireError,
  EDNS_OPTION_EDE,
  EdeCode,
  RCode,
  RRClass,
  RRType,
  decodeNameRdata,
  decodeSoa,
  edeOption,
  encodeMessage,
  extendedErrors,
  parseMessage,
  rdataA,
  rdataName,
  rdataSoa,
  typeName,
} from './wire.js'
export type {
  DnsHeader,
  DnsMessage,
  DnsMessageInput,
  DnsQuestion,
  DnsRecord,
  DnsRecordInput,
  DnsWireErrorCode,
  Edns,
  EdnsInput,
  EdnsOption,
  ParseOptions,
  SoaData,
} from './wire.js'
export { addressFromReverseName, formatIPv4, formatIPv6, parseIP, parseIPNormalized } from './ip.js'
