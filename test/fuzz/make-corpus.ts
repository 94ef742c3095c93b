/**
 * Writes the hand-made part of the fuzz corpus (seeds and known-malformed inputs, each
 * with a one-line description) into test/fuzz/corpus/. Crashers found by `npm run fuzz`
 * are added there as crash-<hash>.hex and are never overwritten by this script.
 *
 *   npx vite-node test/fuzz/make-corpus.ts
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { encodeMessage } from '@keel/dns'
import { clientHello, HELLO_SEEDS, HEAD_SEEDS, DNS_SEEDS } from './targets.js'
const dir = join(import.meta.dirname, 'corpus')
const put = (target: string, name: string, desc: string, b: Buffer) => {
  const hex = b.toString('hex').replace(/(.{64})/g, '$1\n')
  writeFileSync(join(dir, target, `${name}.hex`), `# ${desc}\n${hex}\n`)
}
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n & 0xffff); return b }
// ---- client-hello
HELLO_SEEDS.forEach((s, i) => put('client-hello', `seed-${i}`, `valid seed ${i} from targets.ts`, s))
const h = clientHello({ sni: 'api.allowed.test' })
put('client-hello', 'empty', 'no bytes at all', Buffer.alloc(0))
put('client-hello', 'record-header-only', 'a handshake record header and nothing else', h.subarray(0, 5))
put('client-hello', 'truncated-body', 'the hello cut in the middle of its extensions', h.subarray(0, h.length - 7))
{ const b = Buffer.from(h); b.writeUInt16BE(0x4001, 3); put('client-hello', 'record-too-long', 'record length 16385 (> 2^14)', b) }
{ const b = Buffer.from(h); b.writeUInt16BE(0, 3); put('client-hello', 'record-empty', 'a zero-length handshake record', b.subarray(0, 5)) }
{ const b = Buffer.from(h); b[5] = 2; put('client-hello', 'not-client-hello', 'handshake type 2 (ServerHello) from a client', b) }
{ const b = Buffer.from(h); b[6] = 0xff; b[7] = 0xff; b[8] = 0xff; put('client-hello', 'hello-16mb', 'a ClientHello claiming 16 MiB', b) }
{ const b = Buffer.from(h); b[1] = 2; put('client-hello', 'record-version-2', 'record version 2.x', b) }
{ const b = Buffer.from(h); b[2] = 9; put('client-hello', 'record-version-3-9', 'record version 3.9', b) }
put('client-hello', 'sslv2', 'an SSLv2-compatible ClientHello (no SNI possible)', Buffer.from('80310103010018000000100000030000060000090700c0', 'hex'))
put('client-hello', 'alert-record', 'a TLS alert record instead of a handshake', Buffer.from('15030300020228', 'hex'))
put('client-hello', 'change-cipher-spec-first', 'a ChangeCipherSpec record first', Buffer.from('140303000101', 'hex'))
// duplicated server_name extension
{ const name = Buffer.from('api.allowed.test'); const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name]); const sn = Buffer.concat([u16(0), u16(entry.length + 2), u16(entry.length), entry])
  const exts = Buffer.concat([sn, sn]); const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0]), u16(2), Buffer.from([0x13, 1]), Buffer.from([1, 0]), u16(exts.length), exts])
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body])
  put('client-hello', 'duplicate-sni-extension', 'server_name twice (RFC 8446 4.2: MUST NOT)', Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs])) }
for (const [n, sni, d] of [
  ['sni-trailing-dot', 'api.allowed.test.', 'SNI with a trailing dot'],
  ['sni-nul', 'api.allowed.test\x00.evil.test', 'SNI with a NUL in it'],
  ['sni-ip', '127.0.0.9', 'an IPv4 literal as SNI (RFC 6066: not permitted)'],
  ['sni-empty-label', 'api..test', 'SNI with an empty label'],
  ['sni-long-label', 'a'.repeat(64) + '.test', 'SNI with a 64-octet label'],
  ['sni-utf8', 'ápi.allowed.test', 'SNI with a non-ASCII byte'],
  ['sni-space', 'api.allowed.test evil.test', 'SNI with a space'],
  ['sni-upper', 'API.ALLOWED.TEST', 'SNI in upper case (valid; compared case-insensitively)'],
] as const) put('client-hello', n, d, clientHello({ sni }))
put('client-hello', 'ech', 'a hello with encrypted_client_hello', clientHello({ sni: 'api.allowed.test', ech: true }))
put('client-hello', 'split-1-byte-records', 'the hello split into 1-byte records', clientHello({ sni: 'api.allowed.test', split: 1 }))
put('client-hello', 'trailing-data', 'a complete hello followed by early data', Buffer.concat([h, Buffer.from('170303000501020304ff', 'hex')]))
// ---- http-head
HEAD_SEEDS.forEach((s, i) => put('http-head', `seed-${i}`, `valid seed ${i} from targets.ts`, s))
const heads: [string, string, string][] = [
  ['empty', '', 'no bytes at all'],
  ['method-only', 'GET', 'a method with nothing after it'],
  ['bare-lf', 'GET / HTTP/1.1\nHost: plain.test\n\n', 'LF-only line endings'],
  ['obs-fold', 'GET / HTTP/1.1\r\nHost:\r\n evil.test\r\n\r\n', 'Host continued by obs-fold'],
  ['two-hosts', 'GET / HTTP/1.1\r\nHost: plain.test\r\nHost: evil.test\r\n\r\n', 'two Host headers'],
  ['host-case-twice', 'GET / HTTP/1.1\r\nHost: plain.test\r\nhOST: evil.test\r\n\r\n', 'two Host headers, different case'],
  ['space-before-colon', 'GET / HTTP/1.1\r\nHost : evil.test\r\n\r\n', 'whitespace before the colon'],
  ['host-userinfo', 'GET / HTTP/1.1\r\nHost: plain.test@evil.test\r\n\r\n', 'userinfo in Host'],
  ['host-percent', 'GET / HTTP/1.1\r\nHost: evil%2etest\r\n\r\n', 'percent-encoding in Host'],
  ['host-nul', 'GET / HTTP/1.1\r\nHost: plain.test\x00evil.test\r\n\r\n', 'NUL in Host'],
  ['host-bad-port', 'GET / HTTP/1.1\r\nHost: plain.test:99999\r\n\r\n', 'port over 65535'],
  ['host-v6-unclosed', 'GET / HTTP/1.1\r\nHost: [::1\r\n\r\n', 'unclosed IPv6 literal in Host'],
  ['absolute-userinfo', 'GET http://plain.test@evil.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'userinfo in an absolute-form target'],
  ['absolute-other-host', 'GET http://evil.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'absolute-form target naming another host'],
  ['connect-no-port', 'CONNECT evil.test HTTP/1.1\r\n\r\n', 'CONNECT without a port'],
  ['asterisk-get', 'GET * HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'asterisk-form on GET'],
  ['h2c-preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'the HTTP/2 prior-knowledge preface'],
  ['version-9', 'GET / HTTP/9.9\r\nHost: plain.test\r\n\r\n', 'HTTP/9.9'],
  ['unknown-method-version', 'FROB / HTTP/1.1\r\nHost: evil.test\r\n\r\n', 'an unknown method with a version: still HTTP'],
  ['tab-separators', 'GET\t/\tHTTP/1.1\r\nHost: evil.test\r\n\r\n', 'tabs between the request-line words'],
  ['leading-empty-lines', '\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: plain.test\r\n\r\n', 'empty lines before the request line'],
  ['ctl-in-value', 'GET / HTTP/1.1\r\nHost: plain.test\r\nX: a\x01b\r\n\r\n', 'a control character in a header value'],
  ['lowercase-method', 'get / HTTP/1.1\r\nHost: evil.test\r\n\r\n', 'a lower-case known method'],
  ['long-method', 'A'.repeat(40) + ' / HTTP/1.1\r\nHost: evil.test\r\n\r\n', 'a 40-character method token'],
  ['many-headers', 'GET / HTTP/1.1\r\nHost: plain.test\r\n' + 'X: y\r\n'.repeat(200) + '\r\n', '200 header fields (over the 128 cap)'],
  ['huge-head', 'GET / HTTP/1.1\r\nHost: plain.test\r\nX: ' + 'a'.repeat(17000) + '\r\n\r\n', 'a head over 16 KiB'],
  ['huge-request-line', 'GET /' + 'a'.repeat(17000) + ' HTTP/1.1\r\n\r\n', 'a request line over 16 KiB'],
  ['only-crlf', '\r\n'.repeat(9000), '18000 bytes of empty lines'],
  ['pipelined', 'GET / HTTP/1.1\r\nHost: plain.test\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n', 'a second request pipelined after the first (only the first is checked; see SECURITY.md)'],
]
for (const [n, s, d] of heads) put('http-head', n, d, Buffer.from(s, 'latin1'))
// ---- dns
DNS_SEEDS.forEach((s, i) => put('dns', `seed-${i}`, `valid seed ${i} from targets.ts`, s))
const q = DNS_SEEDS[0]!
const hdr = (id: number, flags: number, qd: number, an: number, ns: number, ar: number) => Buffer.concat([u16(id), u16(flags), u16(qd), u16(an), u16(ns), u16(ar)])
put('dns', 'empty', 'no bytes', Buffer.alloc(0))
put('dns', 'short-header', '11 bytes: one short of a header', q.subarray(0, 11))
put('dns', 'header-only-qd1', 'a header that promises a question and has none', hdr(1, 0x0100, 1, 0, 0, 0))
put('dns', 'counts-65535', 'every section count 65535', hdr(1, 0x0100, 0xffff, 0xffff, 0xffff, 0xffff))
put('dns', 'pointer-loop', 'a name that is a pointer to itself', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([0xc0, 12, 0, 1, 0, 1])]))
put('dns', 'pointer-forward', 'a pointer to a later offset', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([0xc0, 20, 0, 1, 0, 1, 0, 0, 3, 0x61, 0x62, 0x63, 0])]))
put('dns', 'pointer-into-header', 'a pointer into the header', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([0xc0, 2, 0, 1, 0, 1])]))
{ const chain: number[] = [1, 0x61, 0]; let prev = 12; for (let i = 0; i < 100; i++) { const at = 12 + chain.length; chain.push(1, 0x62, 0xc0, prev); prev = at }
  put('dns', 'pointer-chain-100', 'a question whose name is 100 chained backward pointers', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from(chain.slice(0, 3)), Buffer.from([0, 1, 0, 1]), Buffer.from([0xc0, prev & 0xff])])) }
put('dns', 'label-type-0x40', 'a reserved (extended) label type', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([0x41, 0x61, 0, 0, 1, 0, 1])]))
put('dns', 'label-type-0x80', 'a reserved label type 0x80', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([0x81, 0x61, 0, 0, 1, 0, 1])]))
{ const labels = Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])); put('dns', 'name-over-255', 'five 63-octet labels: a name over 255 octets', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), ...labels, Buffer.from([0, 0, 1, 0, 1])])) }
put('dns', 'binary-label', 'a label of raw bytes including dot, backslash and NUL', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 0), Buffer.from([6, 0x2e, 0x5c, 0, 0xff, 0x20, 0x22, 3]), Buffer.from('api'), Buffer.from([7]), Buffer.from('allowed'), Buffer.from([4]), Buffer.from('test'), Buffer.from([0, 0, 1, 0, 1])]))
put('dns', 'trailing-bytes', 'a valid query with bytes after it', Buffer.concat([q, Buffer.from('deadbeef', 'hex')]))
put('dns', 'two-opt', 'two OPT records', Buffer.concat([hdr(1, 0x0100, 1, 0, 0, 2), q.subarray(12, q.length - 11), q.subarray(q.length - 11), q.subarray(q.length - 11)]))
put('dns', 'opt-in-answer', 'an OPT record in the answer section', Buffer.concat([hdr(1, 0x0100, 1, 1, 0, 0), q.subarray(12, q.length - 11), q.subarray(q.length - 11)]))
{ const b = Buffer.from(q); b[b.length - 3] = 0; b[b.length - 2] = 0; b[b.length - 1] = 9; put('dns', 'opt-rdlen-past-end', 'an OPT whose rdata runs past the end', b) }
{ const b = Buffer.concat([q.subarray(0, q.length - 2), u16(5), Buffer.from([0, 15, 0, 9, 0])]); put('dns', 'opt-option-truncated', 'an EDNS option longer than its OPT rdata', b) }
{ const b = Buffer.from(q); b.writeUInt32BE(0x00010000, b.length - 6); put('dns', 'edns-version-1', 'EDNS version 1 (BADVERS)', b) }
put('dns', 'response-to-resolver', 'a response (QR=1) sent to the resolver', DNS_SEEDS[DNS_SEEDS.length - 1]!)
{ const b = Buffer.from(q); b[2] = (b[2]! & 0x87) | (5 << 3); put('dns', 'opcode-update', 'opcode 5 (UPDATE)', b) }
put('dns', 'two-questions', 'two questions in one query', encodeMessage({ header: { id: 9, rd: true }, questions: [{ name: 'api.allowed.test', type: 1, class: 1 }, { name: 'evil.test', type: 1, class: 1 }] }))
put('dns', 'class-chaos', 'class CH (version.bind style)', encodeMessage({ header: { id: 9, rd: true }, questions: [{ name: 'version.bind', type: 16, class: 3 }] }))
put('dns', 'axfr', 'a zone transfer request for an allowed name', encodeMessage({ header: { id: 9 }, questions: [{ name: 'api.allowed.test', type: 252, class: 1 }] }))
put('dns', 'root', 'a query for the root', encodeMessage({ header: { id: 9, rd: true }, questions: [{ name: '', type: 2, class: 1 }] }))
put('dns', 'wildcard-label', 'a literal * label under an allowed wildcard parent', encodeMessage({ header: { id: 9, rd: true }, questions: [{ name: '*.cdn.test', type: 1, class: 1 }] }))
put('dns', 'escaped-dot-label', 'a label with a dot in it that looks like an allowed name', encodeMessage({ header: { id: 9, rd: true }, questions: [{ name: 'api\\.allowed.test', type: 1, class: 1 }] }))
put('dns', 'bad-a-rdlen', 'an A record with 5 bytes of rdata', Buffer.concat([hdr(1, 0x8180, 0, 1, 0, 0), Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 1, 2, 3, 4, 5])]))
put('dns', 'cname-rdata-past-end', 'a CNAME whose name runs past its rdata', Buffer.concat([hdr(1, 0x8180, 0, 1, 0, 0), Buffer.from([0, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 3, 0x61, 0x62, 0x63, 0])]))
