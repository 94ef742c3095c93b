/**
 * The sandbox's nftables ruleset, as a libnftables JSON batch (never shell strings).
 *
 * Table `inet keel`, applied atomically inside the sandbox's namespace:
 * - nat `output`: DNS (udp/tcp 53, to any address) → keel's resolver; the agent's own
 *   loopback traffic is left alone; every other TCP connection → keel's proxy.
 * - filter `output`, policy drop: replies of existing flows, what was redirected to keel,
 *   and loopback pass; the rest is rejected at once (so the agent fails fast instead of
 *   hanging) and counted in a named counter per kind, which the exit report reads.
 *
 * Even without these rules nothing could leave: the namespace has only `lo` with AnyIP
 * routes, so every address is local. The rules make the behaviour precise and observable.
 */

export const KEEL_TABLE = 'keel'
export const KEEL_FAMILY = 'inet'

/** Named counters of rejected packets, by kind (totals; the sets below say where to). */
export const REJECT_COUNTERS = ['udp_rejected', 'icmp_rejected', 'other_rejected'] as const
export type RejectCounter = (typeof REJECT_COUNTERS)[number]

/**
 * Dynamic sets that remember each rejected destination with a packet counter, so the exit
 * report can list "udp 5.5.5.5:443, udp_not_allowed" and not just a total. Bounded in size:
 * when one is full the packet is still rejected, only not itemized.
 */
export const REJECT_SETS = {
  udp4: { type: ['ipv4_addr', 'inet_service'], key: ['ip', 'udp'] },
  udp6: { type: ['ipv6_addr', 'inet_service'], key: ['ip6', 'udp'] },
  icmp4: { type: 'ipv4_addr', key: ['ip'] },
  icmp6: { type: 'ipv6_addr', key: ['ip6'] },
  other4: { type: ['ipv4_addr', 'inet_proto'], key: ['ip', 'meta'] },
  other6: { type: ['ipv6_addr', 'inet_proto'], key: ['ip6', 'meta'] },
} as const
export type RejectSet = keyof typeof REJECT_SETS
export const REJECT_SET_SIZE = 4096

export interface RulesetPorts {
  /** Port of keel's transparent TCP proxy on 127.0.0.1 and ::1 inside the namespace. */
  proxyPort: number
  /** Port of keel's DNS resolver (udp and tcp) on 127.0.0.1 and ::1 inside the namespace. */
  dnsPort: number
}

type Expr = Record<string, unknown>
type Command = Record<string, unknown>

const table = { family: KEEL_FAMILY, table: KEEL_TABLE }
const tableObject = { family: KEEL_FAMILY, name: KEEL_TABLE }

const match = (left: unknown, right: unknown, op = '=='): Expr => ({ match: { op, left, right } })
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } })
const l4protoKey = { meta: { key: 'l4proto' } }
const l4proto = (proto: string | string[], op = '=='): Expr =>
  match(l4protoKey, Array.isArray(proto) ? { set: proto } : proto, op)
const setUpdate = (set: RejectSet, key: unknown | unknown[]): Expr => ({
  set: { op: 'update', elem: Array.isArray(key) ? { concat: key } : key, set: `@${set}` },
})
const loopback4 = match(payload('ip', 'daddr'), { prefix: { addr: '127.0.0.0', len: 8 } })
const loopback6 = match(payload('ip6', 'daddr'), '::1')
const ICMP_ERRORS = ['destination-unreachable', 'time-exceeded', 'parameter-problem']
const ICMPV6_ERRORS = ['destination-unreachable', 'packet-too-big', 'time-exceeded', 'parameter-problem']
const rule = (chain: string, ...expr: Expr[]): Command => ({ add: { rule: { ...table, chain, expr } } })

/**
 * Builds the whole ruleset as one batch, for a namespace keel has just made. It starts
 * with `create table`, which fails if the table exists, so a second apply is an error
 * (and changes nothing) rather than a second copy of every rule. It used to add, delete
 * and re-add the table to converge instead; the delete in the batch made the kernel wait
 * for an RCU grace period at commit, 9 to 25 ms of every keel run on this VM, against
 * under 2 ms for the batch without it.
 */
export function buildRuleset(ports: RulesetPorts): { nftables: Command[] } {
  for (const [name, port] of Object.entries(ports)) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`${name} must be a port number, got ${port}`)
  }
  const nat = 'nat_output'
  const filter = 'filter_output'
  return {
    nftables: [
      { create: { table: tableObject } },
      ...REJECT_COUNTERS.map((name) => ({ add: { counter: { ...table, name } } })),
      ...Object.entries(REJECT_SETS).map(([name, def]) => ({
        add: { set: { ...table, name, type: def.type, size: REJECT_SET_SIZE, stmt: [{ counter: null }] } },
      })),
      { add: { chain: { ...table, name: nat, type: 'nat', hook: 'output', prio: -100, policy: 'accept' } } },
      { add: { chain: { ...table, name: filter, type: 'filter', hook: 'output', prio: 0, policy: 'drop' } } },

      // DNS to any address, loopback included, goes to keel: the agent has no other resolver.
      rule(nat, match(payload('udp', 'dport'), 53), { redirect: { port: ports.dnsPort } }),
      rule(nat, match(payload('tcp', 'dport'), 53), { redirect: { port: ports.dnsPort } }),
      // The agent's own local servers keep working.
      rule(nat, loopback4, { return: null }),
      rule(nat, loopback6, { return: null }),
      rule(nat, l4proto('tcp'), { redirect: { port: ports.proxyPort } }),

      rule(filter, match({ ct: { key: 'state' } }, ['established', 'related'], 'in'), { accept: null }),
      rule(filter, match({ ct: { key: 'status' } }, 'dnat', 'in'), { accept: null }),
      rule(filter, loopback4, { accept: null }),
      rule(filter, loopback6, { accept: null }),
      // ICMP errors are what the reject rules below send back to the sender; they stay in
      // the namespace (every address is local), and must not be counted as agent traffic.
      rule(filter, match({ payload: { protocol: 'icmp', field: 'type' } }, { set: ICMP_ERRORS }), { accept: null }),
      rule(filter, match({ payload: { protocol: 'icmpv6', field: 'type' } }, { set: ICMPV6_ERRORS }), { accept: null }),
      // Remember where rejected packets were going (no verdict: evaluation goes on) ...
      rule(filter, setUpdate('udp4', [payload('ip', 'daddr'), payload('udp', 'dport')])),
      rule(filter, setUpdate('udp6', [payload('ip6', 'daddr'), payload('udp', 'dport')])),
      rule(filter, l4proto('icmp'), setUpdate('icmp4', payload('ip', 'daddr'))),
      rule(filter, l4proto('ipv6-icmp'), setUpdate('icmp6', payload('ip6', 'daddr'))),
      rule(filter, l4proto(['udp', 'icmp', 'ipv6-icmp'], '!='), setUpdate('other4', [payload('ip', 'daddr'), l4protoKey])),
      rule(filter, l4proto(['udp', 'icmp', 'ipv6-icmp'], '!='), setUpdate('other6', [payload('ip6', 'daddr'), l4protoKey])),
      // ... then reject at once, so the agent fails fast instead of waiting for a timeout.
      rule(filter, l4proto('udp'), { counter: 'udp_rejected' }, { reject: null }),
      rule(filter, l4proto(['icmp', 'ipv6-icmp']), { counter: 'icmp_rejected' }, { reject: null }),
      rule(filter, l4proto('tcp'), { counter: 'other_rejected' }, { reject: { type: 'tcp reset' } }),
      rule(filter, { counter: 'other_rejected' }, { reject: null }),
    ],
  }
}

/** The request that lists keel's table back, with counters and set elements (for the exit report). */
export function listTableRequest(): { nftables: Command[] } {
  return { nftables: [{ list: { table: tableObject } }] }
}

export interface Rejection {
  protocol: 'UDP' | 'ICMP' | string
  address: string
  port?: number
  packets: number
}

/** Reads the reject totals and the itemized rejected destinations out of a `list table` answer. */
export function parseRejections(answer: unknown): { totals: Record<RejectCounter, number>; rejections: Rejection[] } {
  const totals = Object.fromEntries(REJECT_COUNTERS.map((n) => [n, 0])) as Record<RejectCounter, number>
  const rejections: Rejection[] = []
  const items = (answer as { nftables?: unknown[] } | undefined)?.nftables ?? []
  for (const item of items) {
    if (typeof item !== 'object' || item === null) continue
    const counter = (item as { counter?: { table?: string; name?: string; packets?: number } }).counter
    if (counter?.table === KEEL_TABLE && (REJECT_COUNTERS as readonly string[]).includes(counter.name ?? '')) {
      totals[counter.name as RejectCounter] = counter.packets ?? 0
    }
    const set = (item as { set?: { table?: string; name?: string; elem?: unknown[] } }).set
    if (set?.table !== KEEL_TABLE || !set.name || !(set.name in REJECT_SETS)) continue
    for (const entry of set.elem ?? []) {
      if (typeof entry !== 'object' || entry === null) continue
      const elem = (entry as { elem?: { val?: unknown; counter?: { packets?: number } } }).elem
      if (!elem) continue
      const packets = elem.counter?.packets ?? 0
      const val = elem.val as unknown
      const concat = (val as { concat?: unknown } | undefined)?.concat
      const parts = Array.isArray(concat) ? concat : [val]
      const address = String(parts[0])
      if (set.name.startsWith('udp')) rejections.push({ protocol: 'UDP', address, port: Number(parts[1]), packets })
      else if (set.name.startsWith('icmp')) rejections.push({ protocol: 'ICMP', address, packets })
      else rejections.push({ protocol: String(parts[1]).toUpperCase(), address, packets })
    }
  }
  return { totals, rejections }
}
