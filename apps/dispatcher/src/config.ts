/**
 * The dispatcher config file (YAML) → {@link DispatcherConfig}.
 *
 * `loadDispatcherConfig(text, options)` parses, validates and normalizes, collecting every
 * problem with file:line:column before throwing one {@link DispatcherConfigError}. Unknown
 * fields are rejected (a typo must not silently weaken a rule), and so is any attempt to
 * disable or redefine a baseline prompt-firewall detector. Relative paths (credential
 * files, ledger, audit log) are resolved against the config file's directory.
 *
 * @example
 * ```yaml
 * apiVersion: keel.dev/v1alpha1
 * kind: DispatcherConfig
 * metadata: { name: local }
 * spec:
 *   providers:
 *     - name: openai
 *       format: openai
 *       hosts: [api.openai.com]
 *       endpoints: ["https://api.openai.com/v1"]
 *       credential: { env: KEEL_OPENAI_KEY }
 *   permits:
 *     rules:
 *       - { name: allow-all, action: allow }
 * ```
 */
import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair } from 'yaml'
import { KeelError, type PolicyIssue } from '@keel/core'
import { compileGlobs } from './glob.js'
import { BASELINE_DETECTOR_IDS } from './firewall/detectors.js'
import {
  CONDITION_KEYS,
  type BudgetLimit,
  type BudgetsConfig,
  type CapacityWindow,
  type CredentialSource,
  type DetectorSpec,
  type DispatcherConfig,
  type Endpoint,
  type PermitRule,
  type PriceEntry,
  type ProviderConfig,
  type ReviewerConfig,
  type RuleAction,
  type WireFormat,
} from './types.js'

export const CONFIG_API_VERSION = 'keel.dev/v1alpha1'
export const CONFIG_KIND = 'DispatcherConfig'

/** Thrown with every issue found, never just the first. */
export class DispatcherConfigError extends KeelError {
  readonly issues: readonly PolicyIssue[]
  constructor(issues: readonly PolicyIssue[]) {
    const sorted = [...issues].sort((a, b) => a.line - b.line || a.column - b.column)
    super('ERR_CONFIG_INVALID', sorted.map((i) => `${i.file}:${i.line}:${i.column}: ${i.message}`).join('\n'))
    this.issues = sorted
  }
}

export interface LoadConfigOptions {
  /** Shown in errors; also the base for relative paths unless `baseDir` is given. */
  file?: string
  baseDir?: string
}

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/
const ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*$/
const HOST_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/
const TIME_RE = /^([01][0-9]|2[0-3]):([0-5][0-9])$/
const OFFSET_RE = /^([+-])([01][0-9]|2[0-3]):([0-5][0-9])$/
const DETECTOR_FLAGS_RE = /^[imsu]*$/
/** Words that would switch a baseline detector off: rejected with a message that says why. */
const WEAKENING_KEYS = ['disable', 'disabled', 'disableBaseline', 'allow', 'allowlist', 'exclude', 'except', 'baseline']

type Entries = Map<string, { node: Node | null; key: Node | null }>

/** Walks the YAML AST, collecting issues with positions. */
class Reader {
  readonly issues: PolicyIssue[] = []
  constructor(
    private readonly file: string,
    private readonly lines: LineCounter,
  ) {}

  fail(node: Node | null | undefined, path: string, message: string, value?: unknown): void {
    const offset = node?.range?.[0] ?? 0
    const pos = this.lines.linePos(offset)
    const issue: PolicyIssue = { file: this.file, line: pos.line, column: pos.col, path, message: `${path || '(root)'}: ${message}` }
    if (value !== undefined) issue.value = value
    this.issues.push(issue)
  }

  map(node: Node | null | undefined, path: string, allowed: readonly string[], required: readonly string[] = []): Entries | undefined {
    if (!isMap(node)) {
      this.fail(node, path, 'expected a mapping')
      return undefined
    }
    const out: Entries = new Map()
    for (const pair of node.items as Pair<Node, Node | null>[]) {
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined
      if (key === undefined) {
        this.fail(pair.key, path, 'keys must be plain strings')
        continue
      }
      if (!allowed.includes(key)) {
        this.fail(pair.key, `${path}.${key}`.replace(/^\./, ''), `unknown field "${key}" (allowed: ${allowed.join(', ')})`, key)
        continue
      }
      out.set(key, { node: pair.value ?? null, key: pair.key })
    }
    for (const r of required) if (!out.has(r)) this.fail(node, path, `missing required field "${r}"`)
    return out
  }

  str(node: Node | null | undefined, path: string, re?: RegExp, what?: string): string | undefined {
    if (!isScalar(node) || typeof node.value !== 'string' || node.value.length === 0) {
      this.fail(node, path, 'expected a non-empty string', isScalar(node) ? node.value : undefined)
      return undefined
    }
    if (re && !re.test(node.value)) {
      this.fail(node, path, `invalid ${what ?? 'value'} "${node.value}"`, node.value)
      return undefined
    }
    return node.value
  }

  num(node: Node | null | undefined, path: string, opts: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
    const v = isScalar(node) ? node.value : undefined
    if (typeof v !== 'number' || !Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
      this.fail(node, path, `expected ${opts.integer ? 'an integer' : 'a number'}`, v)
      return undefined
    }
    if ((opts.min !== undefined && v < opts.min) || (opts.max !== undefined && v > opts.max)) {
      this.fail(node, path, `out of range (${opts.min ?? '-∞'}..${opts.max ?? '∞'})`, v)
      return undefined
    }
    return v
  }

  oneOf<T extends string>(node: Node | null | undefined, path: string, values: readonly T[]): T | undefined {
    const v = isScalar(node) ? node.value : undefined
    if (typeof v !== 'string' || !values.includes(v as T)) {
      this.fail(node, path, `expected one of ${values.join(', ')}`, v)
      return undefined
    }
    return v as T
  }

  seq(node: Node | null | undefined, path: string): Node[] | undefined {
    if (!isSeq(node)) {
      this.fail(node, path, 'expected a list')
      return undefined
    }
    return node.items as Node[]
  }

  strList(node: Node | null | undefined, path: string, re?: RegExp, what?: string): string[] | undefined {
    // A single scalar is accepted as a one-element list: `provider: openai`.
    if (isScalar(node)) {
      const s = this.str(node, path, re, what)
      return s === undefined ? undefined : [s]
    }
    const items = this.seq(node, path)
    if (!items) return undefined
    const out: string[] = []
    items.forEach((n, i) => {
      const s = this.str(n, `${path}[${i}]`, re, what)
      if (s !== undefined) out.push(s)
    })
    return out
  }
}

function resolvePath(baseDir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(baseDir, p)
}

function readCredential(r: Reader, node: Node | null, path: string, baseDir: string): CredentialSource | undefined {
  const m = r.map(node, path, ['env', 'file'])
  if (!m) return undefined
  const env = m.get('env')
  const file = m.get('file')
  if ((env ? 1 : 0) + (file ? 1 : 0) !== 1) {
    r.fail(node, path, 'give exactly one of "env" or "file"')
    return undefined
  }
  if (env) {
    const v = r.str(env.node, `${path}.env`, ENV_RE, 'environment variable name')
    return v === undefined ? undefined : { env: v }
  }
  const v = r.str(file!.node, `${path}.file`)
  return v === undefined ? undefined : { file: resolvePath(baseDir, v) }
}

function readEndpoint(r: Reader, node: Node, path: string): Endpoint | undefined {
  let urlNode: Node | null = node
  let region: string | undefined
  if (isMap(node)) {
    const m = r.map(node, path, ['url', 'region'], ['url'])
    if (!m) return undefined
    urlNode = m.get('url')?.node ?? null
    const reg = m.get('region')
    if (reg) region = r.str(reg.node, `${path}.region`, NAME_RE, 'region')
  }
  const raw = r.str(urlNode, isMap(node) ? `${path}.url` : path)
  if (raw === undefined) return undefined
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    r.fail(urlNode, path, `not a URL: "${raw}"`, raw)
    return undefined
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    r.fail(urlNode, path, `endpoint must be http(s), got "${url.protocol}"`, raw)
    return undefined
  }
  if (url.username || url.password || url.search || url.hash) {
    r.fail(urlNode, path, 'endpoint must not carry credentials, a query or a fragment', raw)
    return undefined
  }
  const normalized = `${url.origin}${url.pathname.replace(/\/+$/, '')}`
  return region === undefined ? { url: normalized } : { url: normalized, region }
}

function readProviders(r: Reader, node: Node | null, baseDir: string): ProviderConfig[] {
  const items = r.seq(node, 'spec.providers') ?? []
  if (isSeq(node) && items.length === 0) r.fail(node, 'spec.providers', 'at least one provider is required')
  const out: ProviderConfig[] = []
  const names = new Set<string>()
  const hosts = new Map<string, string>()
  items.forEach((item, i) => {
    const path = `spec.providers[${i}]`
    const m = r.map(item, path, ['name', 'format', 'hosts', 'endpoints', 'credential', 'region'], ['name', 'format', 'endpoints', 'credential'])
    if (!m) return
    const name = r.str(m.get('name')?.node, `${path}.name`, NAME_RE, 'provider name')
    const format = r.oneOf<WireFormat>(m.get('format')?.node, `${path}.format`, ['openai', 'anthropic'])
    const hostList = m.has('hosts') ? r.strList(m.get('hosts')!.node, `${path}.hosts`, HOST_RE, 'host name (lower-case, no port)') : []
    const region = m.has('region') ? r.str(m.get('region')!.node, `${path}.region`, NAME_RE, 'region') : undefined
    const endpointNodes = r.seq(m.get('endpoints')?.node, `${path}.endpoints`) ?? []
    if (endpointNodes.length === 0) r.fail(m.get('endpoints')?.node, `${path}.endpoints`, 'at least one endpoint is required')
    const endpoints: Endpoint[] = []
    endpointNodes.forEach((e, j) => {
      const ep = readEndpoint(r, e, `${path}.endpoints[${j}]`)
      if (ep) endpoints.push(ep.region === undefined && region !== undefined ? { ...ep, region } : ep)
    })
    const credential = readCredential(r, m.get('credential')?.node ?? null, `${path}.credential`, baseDir)
    if (name !== undefined) {
      if (names.has(name)) r.fail(m.get('name')?.node, `${path}.name`, `duplicate provider name "${name}"`, name)
      names.add(name)
    }
    for (const h of hostList ?? []) {
      const other = hosts.get(h)
      if (other !== undefined && other !== name) r.fail(m.get('hosts')?.node, `${path}.hosts`, `host "${h}" is already routed to provider "${other}"`, h)
      hosts.set(h, name ?? '')
    }
    if (name !== undefined && format !== undefined && credential !== undefined && hostList !== undefined) {
      out.push({ name, format, hosts: hostList, endpoints, credential })
    }
  })
  return out
}

function readPricing(r: Reader, node: Node | null): PriceEntry[] {
  const items = r.seq(node, 'spec.pricing') ?? []
  const out: PriceEntry[] = []
  items.forEach((item, i) => {
    const path = `spec.pricing[${i}]`
    const m = r.map(item, path, ['model', 'inputPerMTok', 'outputPerMTok', 'maxOutputTokens'], ['model', 'inputPerMTok', 'outputPerMTok', 'maxOutputTokens'])
    if (!m) return
    const model = r.str(m.get('model')?.node, `${path}.model`)
    const inputPerMTok = r.num(m.get('inputPerMTok')?.node, `${path}.inputPerMTok`, { min: 0 })
    const outputPerMTok = r.num(m.get('outputPerMTok')?.node, `${path}.outputPerMTok`, { min: 0 })
    const maxOutputTokens = r.num(m.get('maxOutputTokens')?.node, `${path}.maxOutputTokens`, { min: 1, integer: true })
    if (model === undefined || inputPerMTok === undefined || outputPerMTok === undefined || maxOutputTokens === undefined) return
    out.push({ model, match: compileGlobs([model]), inputPerMTok, outputPerMTok, maxOutputTokens })
  })
  return out
}

function readLimit(r: Reader, node: Node | null, path: string): BudgetLimit | undefined {
  const m = r.map(node, path, ['limitUsd', 'period'], ['limitUsd'])
  if (!m) return undefined
  const usd = r.num(m.get('limitUsd')?.node, `${path}.limitUsd`, { min: 0, max: 1e9 })
  const period = m.has('period') ? r.oneOf(m.get('period')!.node, `${path}.period`, ['total', 'day', 'month'] as const) : 'total'
  if (usd === undefined || period === undefined) return undefined
  return { limitMicroUsd: Math.round(usd * 1_000_000), period }
}

function readLimitMap(r: Reader, node: Node | null, path: string): Record<string, BudgetLimit> {
  const out: Record<string, BudgetLimit> = {}
  if (!isMap(node)) {
    r.fail(node, path, 'expected a mapping of name → { limitUsd }')
    return out
  }
  for (const pair of node.items as Pair<Node, Node | null>[]) {
    const key = isScalar(pair.key) ? String(pair.key.value) : ''
    if (!NAME_RE.test(key)) {
      r.fail(pair.key, path, `invalid name "${key}"`, key)
      continue
    }
    const limit = readLimit(r, pair.value ?? null, `${path}.${key}`)
    if (limit) out[key] = limit
  }
  return out
}

function readBudgets(r: Reader, node: Node | null, baseDir: string): BudgetsConfig | undefined {
  const m = r.map(node, 'spec.budgets', ['projects', 'agents', 'defaultProject', 'defaultAgent', 'ledger'])
  if (!m) return undefined
  const budgets: BudgetsConfig = {
    projects: m.has('projects') ? readLimitMap(r, m.get('projects')!.node, 'spec.budgets.projects') : {},
    agents: m.has('agents') ? readLimitMap(r, m.get('agents')!.node, 'spec.budgets.agents') : {},
  }
  if (m.has('defaultProject')) {
    const l = readLimit(r, m.get('defaultProject')!.node, 'spec.budgets.defaultProject')
    if (l) budgets.defaultProject = l
  }
  if (m.has('defaultAgent')) {
    const l = readLimit(r, m.get('defaultAgent')!.node, 'spec.budgets.defaultAgent')
    if (l) budgets.defaultAgent = l
  }
  if (m.has('ledger')) {
    const p = r.str(m.get('ledger')!.node, 'spec.budgets.ledger')
    if (p !== undefined) budgets.ledgerPath = resolvePath(baseDir, p)
  }
  return budgets
}

function parseMinutes(r: Reader, node: Node | null | undefined, path: string): number | undefined {
  const s = r.str(node, path, TIME_RE, 'time (HH:MM, 24h)')
  if (s === undefined) return undefined
  const [, h, mm] = TIME_RE.exec(s)!
  return Number(h) * 60 + Number(mm)
}

function readWindow(r: Reader, node: Node | null, path: string): CapacityWindow | undefined {
  const m = r.map(node, path, ['days', 'start', 'end', 'utcOffset'], ['start', 'end'])
  if (!m) return undefined
  const startMinute = parseMinutes(r, m.get('start')?.node, `${path}.start`)
  const endMinute = parseMinutes(r, m.get('end')?.node, `${path}.end`)
  let utcOffsetMinutes = 0
  if (m.has('utcOffset')) {
    const s = r.str(m.get('utcOffset')!.node, `${path}.utcOffset`, OFFSET_RE, 'UTC offset (+HH:MM)')
    if (s !== undefined) {
      const [, sign, h, mm] = OFFSET_RE.exec(s)!
      utcOffsetMinutes = (sign === '-' ? -1 : 1) * (Number(h) * 60 + Number(mm))
    }
  }
  let days: number[] | undefined
  if (m.has('days')) {
    const list = r.strList(m.get('days')!.node, `${path}.days`) ?? []
    days = []
    for (const d of list) {
      const idx = DAYS.indexOf(d.toLowerCase().slice(0, 3) as (typeof DAYS)[number])
      if (idx < 0 || d.length < 3) r.fail(m.get('days')!.node, `${path}.days`, `unknown day "${d}" (use mon, tue, …)`, d)
      else days.push(idx)
    }
  }
  if (startMinute === undefined || endMinute === undefined) return undefined
  if (startMinute === endMinute) {
    r.fail(node, path, 'start and end must differ')
    return undefined
  }
  return days === undefined ? { startMinute, endMinute, utcOffsetMinutes } : { days, startMinute, endMinute, utcOffsetMinutes }
}

function readRules(r: Reader, node: Node | null, reviewerNames: ReadonlySet<string>): PermitRule[] {
  const items = r.seq(node, 'spec.permits.rules') ?? []
  const out: PermitRule[] = []
  const names = new Set<string>()
  items.forEach((item, i) => {
    const path = `spec.permits.rules[${i}]`
    const m = r.map(item, path, ['name', 'when', 'window', 'action', 'message', 'retryAfterSeconds', 'reviewers', 'timeoutSeconds'], ['name', 'action'])
    if (!m) return
    const name = r.str(m.get('name')?.node, `${path}.name`, NAME_RE, 'rule name')
    if (name !== undefined) {
      if (names.has(name)) r.fail(m.get('name')?.node, `${path}.name`, `duplicate rule name "${name}"`, name)
      names.add(name)
    }
    const action = r.oneOf<RuleAction>(m.get('action')?.node, `${path}.action`, ['allow', 'deny', 'throttle', 'challenge'])
    const when: PermitRule['when'][number][] = []
    if (m.has('when')) {
      const w = r.map(m.get('when')!.node, `${path}.when`, [...CONDITION_KEYS, 'attributes'])
      for (const [key, v] of w ?? []) {
        if (key === 'attributes') {
          if (!isMap(v.node)) {
            r.fail(v.node, `${path}.when.attributes`, 'expected a mapping of attribute name → values')
            continue
          }
          for (const pair of v.node.items as Pair<Node, Node | null>[]) {
            const attr = isScalar(pair.key) ? String(pair.key.value).toLowerCase() : ''
            if (!/^[a-z0-9][a-z0-9-]*$/.test(attr)) {
              r.fail(pair.key, `${path}.when.attributes`, `invalid attribute name "${attr}" (header x-keel-attr-<name>)`, attr)
              continue
            }
            const globs = r.strList(pair.value ?? null, `${path}.when.attributes.${attr}`)
            if (globs) when.push({ key: `attributes.${attr}`, test: compileGlobs(globs) })
          }
          continue
        }
        const globs = r.strList(v.node, `${path}.when.${key}`)
        if (globs && globs.length === 0) r.fail(v.node, `${path}.when.${key}`, 'an empty list never matches; remove the key instead')
        if (globs) when.push({ key: key as (typeof CONDITION_KEYS)[number], test: compileGlobs(globs) })
      }
    }
    const rule: PermitRule = { name: name ?? '', when, action: action ?? 'deny' }
    if (m.has('window')) {
      const w = readWindow(r, m.get('window')!.node, `${path}.window`)
      if (w) rule.window = w
    }
    if (m.has('message')) {
      const msg = r.str(m.get('message')!.node, `${path}.message`)
      if (msg !== undefined) rule.message = msg
    }
    if (m.has('retryAfterSeconds')) {
      if (action !== 'throttle') r.fail(m.get('retryAfterSeconds')!.key, `${path}.retryAfterSeconds`, 'only throttle rules take retryAfterSeconds')
      const n = r.num(m.get('retryAfterSeconds')!.node, `${path}.retryAfterSeconds`, { min: 1, max: 86_400, integer: true })
      if (n !== undefined) rule.retryAfterSeconds = n
    }
    if (action === 'throttle' && !m.has('window') && !m.has('retryAfterSeconds')) {
      r.fail(item, path, 'a throttle rule needs a capacity "window" or "retryAfterSeconds"')
    }
    if (action === 'challenge') {
      if (!m.has('reviewers')) r.fail(item, path, 'a challenge rule needs "reviewers"')
      const timeout = m.has('timeoutSeconds') ? r.num(m.get('timeoutSeconds')!.node, `${path}.timeoutSeconds`, { min: 0.1, max: 86_400 }) : 300
      if (timeout !== undefined) rule.timeoutSeconds = timeout
    } else {
      for (const k of ['reviewers', 'timeoutSeconds']) {
        if (m.has(k)) r.fail(m.get(k)!.key, `${path}.${k}`, `only challenge rules take ${k}`)
      }
    }
    if (m.has('reviewers') && action === 'challenge') {
      const list = r.strList(m.get('reviewers')!.node, `${path}.reviewers`, NAME_RE, 'reviewer name') ?? []
      if (list.length === 0) r.fail(m.get('reviewers')!.node, `${path}.reviewers`, 'at least one reviewer is required')
      for (const rv of list) {
        if (!reviewerNames.has(rv)) r.fail(m.get('reviewers')!.node, `${path}.reviewers`, `reviewer "${rv}" is not declared in spec.reviewers`, rv)
      }
      rule.reviewers = list
    }
    if (name !== undefined && action !== undefined) out.push(rule)
  })
  return out
}

function readDetectors(r: Reader, node: Node | null, path: string, seen: Set<string>): DetectorSpec[] {
  const items = r.seq(node, path) ?? []
  const out: DetectorSpec[] = []
  items.forEach((item, i) => {
    const p = `${path}[${i}]`
    if (isMap(item)) {
      for (const pair of item.items as Pair<Node, Node | null>[]) {
        const key = isScalar(pair.key) ? String(pair.key.value) : ''
        if (key === 'enabled' || WEAKENING_KEYS.includes(key)) {
          r.fail(pair.key, `${p}.${key}`, `detectors cannot be switched off; "${key}" is not allowed (the baseline is a floor: projects may only add detectors)`, key)
          pair.key = null as unknown as Node
        }
      }
      item.items = item.items.filter((pair) => pair.key !== null)
    }
    const m = r.map(item, p, ['id', 'pattern', 'flags', 'description'], ['id', 'pattern'])
    if (!m) return
    const id = r.str(m.get('id')?.node, `${p}.id`, /^[a-z0-9][a-z0-9_-]{0,62}$/, 'detector id (lower-case)')
    if (id !== undefined) {
      if ((BASELINE_DETECTOR_IDS as readonly string[]).includes(id)) {
        r.fail(m.get('id')?.node, `${p}.id`, `"${id}" is a baseline detector; it cannot be redefined or weakened, only added to under a new id`, id)
        return
      }
      if (seen.has(id)) r.fail(m.get('id')?.node, `${p}.id`, `duplicate detector id "${id}"`, id)
      seen.add(id)
    }
    const pattern = r.str(m.get('pattern')?.node, `${p}.pattern`)
    const flags = m.has('flags') ? r.str(m.get('flags')!.node, `${p}.flags`, DETECTOR_FLAGS_RE, 'regex flags (any of i, m, s, u)') : ''
    const description = m.has('description') ? r.str(m.get('description')!.node, `${p}.description`) : undefined
    if (id === undefined || pattern === undefined || flags === undefined) return
    let re: RegExp
    try {
      re = new RegExp(pattern, flags)
    } catch (err) {
      r.fail(m.get('pattern')?.node, `${p}.pattern`, `invalid regular expression: ${(err as Error).message}`, pattern)
      return
    }
    if (re.test('')) {
      r.fail(m.get('pattern')?.node, `${p}.pattern`, 'pattern matches the empty string, so it would block every request', pattern)
      return
    }
    out.push(description === undefined ? { id, pattern: re } : { id, pattern: re, description })
  })
  return out
}

function readFirewall(r: Reader, node: Node | null): DispatcherConfig['firewall'] {
  const firewall: { detectors: DetectorSpec[]; projects: Record<string, DetectorSpec[]> } = { detectors: [], projects: {} }
  if (isMap(node)) {
    for (const pair of node.items as Pair<Node, Node | null>[]) {
      const key = isScalar(pair.key) ? String(pair.key.value) : ''
      if (WEAKENING_KEYS.includes(key) || key === 'enabled' || key === 'baselineDetectors') {
        r.fail(pair.key, `spec.firewall.${key}`, `"${key}" would weaken the baseline prompt firewall; baseline detectors (${BASELINE_DETECTOR_IDS.join(', ')}) are always on`, key)
      }
    }
    node.items = node.items.filter((pair) => {
      const key = isScalar(pair.key) ? String(pair.key.value) : ''
      return !(WEAKENING_KEYS.includes(key) || key === 'enabled' || key === 'baselineDetectors')
    })
  }
  const m = r.map(node, 'spec.firewall', ['detectors', 'projects'])
  if (!m) return firewall
  const globalIds = new Set<string>()
  if (m.has('detectors')) firewall.detectors = readDetectors(r, m.get('detectors')!.node, 'spec.firewall.detectors', globalIds)
  if (m.has('projects')) {
    const pn = m.get('projects')!.node
    if (!isMap(pn)) r.fail(pn, 'spec.firewall.projects', 'expected a mapping of project → { detectors }')
    else {
      for (const pair of pn.items as Pair<Node, Node | null>[]) {
        const project = isScalar(pair.key) ? String(pair.key.value) : ''
        const path = `spec.firewall.projects.${project}`
        if (!NAME_RE.test(project)) {
          r.fail(pair.key, path, `invalid project name "${project}"`, project)
          continue
        }
        if (isMap(pair.value)) {
          for (const p of pair.value.items as Pair<Node, Node | null>[]) {
            const key = isScalar(p.key) ? String(p.key.value) : ''
            if (WEAKENING_KEYS.includes(key) || key === 'enabled') {
              r.fail(p.key, `${path}.${key}`, `"${key}" would weaken the baseline prompt firewall for project "${project}"; projects may only add detectors`, key)
            }
          }
          pair.value.items = pair.value.items.filter((p) => {
            const key = isScalar(p.key) ? String(p.key.value) : ''
            return !(WEAKENING_KEYS.includes(key) || key === 'enabled')
          })
        }
        const pm = r.map(pair.value ?? null, path, ['detectors'], ['detectors'])
        if (!pm) continue
        firewall.projects[project] = readDetectors(r, pm.get('detectors')!.node, `${path}.detectors`, new Set(globalIds))
      }
    }
  }
  return firewall
}

function readReviewers(r: Reader, node: Node | null, baseDir: string): ReviewerConfig[] {
  const items = r.seq(node, 'spec.reviewers') ?? []
  const out: ReviewerConfig[] = []
  const names = new Set<string>()
  items.forEach((item, i) => {
    const path = `spec.reviewers[${i}]`
    const m = r.map(item, path, ['name', 'token'], ['name', 'token'])
    if (!m) return
    const name = r.str(m.get('name')?.node, `${path}.name`, NAME_RE, 'reviewer name')
    const token = readCredential(r, m.get('token')?.node ?? null, `${path}.token`, baseDir)
    if (name !== undefined && names.has(name)) r.fail(m.get('name')?.node, `${path}.name`, `duplicate reviewer "${name}"`, name)
    if (name !== undefined) names.add(name)
    if (name !== undefined && token !== undefined) out.push({ name, token })
  })
  return out
}

/**
 * Parses and validates a dispatcher config. Throws {@link DispatcherConfigError} listing
 * every issue (file:line:col, path, message, bad value).
 */
export function loadDispatcherConfig(text: string, options: LoadConfigOptions = {}): DispatcherConfig {
  const file = options.file ?? '<config>'
  const baseDir = options.baseDir ?? (options.file ? dirname(resolve(options.file)) : process.cwd())
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
  const r = new Reader(file, lines)
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const pos = e.linePos?.[0] ?? { line: 1, col: 1 }
      r.issues.push({ file, line: pos.line, column: pos.col, path: '', message: `YAML: ${e.message.split('\n')[0]}` })
    }
    throw new DispatcherConfigError(r.issues)
  }
  const root = doc.contents as Node | null
  const top = r.map(root, '', ['apiVersion', 'kind', 'metadata', 'spec'], ['apiVersion', 'kind', 'spec'])
  if (!top) throw new DispatcherConfigError(r.issues)
  const apiVersion = top.get('apiVersion')
  if (apiVersion && (!isScalar(apiVersion.node) || apiVersion.node.value !== CONFIG_API_VERSION)) {
    r.fail(apiVersion.node, 'apiVersion', `unsupported apiVersion (expected "${CONFIG_API_VERSION}")`, isScalar(apiVersion.node) ? apiVersion.node.value : undefined)
  }
  const kind = top.get('kind')
  if (kind && (!isScalar(kind.node) || kind.node.value !== CONFIG_KIND)) {
    r.fail(kind.node, 'kind', `expected kind "${CONFIG_KIND}"`, isScalar(kind.node) ? kind.node.value : undefined)
  }
  let name = 'dispatcher'
  if (top.has('metadata')) {
    const md = r.map(top.get('metadata')!.node, 'metadata', ['name', 'labels', 'annotations'])
    if (md?.has('name')) name = r.str(md.get('name')!.node, 'metadata.name', NAME_RE, 'name') ?? name
  }
  const spec = r.map(
    top.get('spec')?.node,
    'spec',
    ['listen', 'providers', 'placeholders', 'pricing', 'budgets', 'permits', 'reviewers', 'firewall', 'identity', 'upstream', 'audit'],
    ['providers'],
  )
  if (!spec) throw new DispatcherConfigError(r.issues)

  const listen = { host: '127.0.0.1', port: 8787 }
  if (spec.has('listen')) {
    const l = r.map(spec.get('listen')!.node, 'spec.listen', ['host', 'port'])
    if (l?.has('host')) listen.host = r.str(l.get('host')!.node, 'spec.listen.host') ?? listen.host
    if (l?.has('port')) listen.port = r.num(l.get('port')!.node, 'spec.listen.port', { min: 0, max: 65535, integer: true }) ?? listen.port
  }
  const providers = readProviders(r, spec.get('providers')?.node ?? null, baseDir)
  const placeholders = spec.has('placeholders') ? (r.strList(spec.get('placeholders')!.node, 'spec.placeholders') ?? []) : []
  for (const p of placeholders) {
    if (p.replace(/\*/g, '').length < 4) r.fail(spec.get('placeholders')!.node, 'spec.placeholders', `placeholder pattern "${p}" is too broad (needs 4+ literal characters)`, p)
  }
  const pricing = spec.has('pricing') ? readPricing(r, spec.get('pricing')!.node) : []
  const reviewers = spec.has('reviewers') ? readReviewers(r, spec.get('reviewers')!.node, baseDir) : []
  const reviewerNames = new Set(reviewers.map((rv) => rv.name))

  const permits: DispatcherConfig['permits'] = { defaultAction: 'deny', ttlSeconds: 300, rules: [], requirePermit: false }
  if (spec.has('permits')) {
    const pm = r.map(spec.get('permits')!.node, 'spec.permits', ['defaultAction', 'ttlSeconds', 'signingKey', 'rules', 'requirePermit'])
    if (pm?.has('defaultAction')) permits.defaultAction = r.oneOf(pm.get('defaultAction')!.node, 'spec.permits.defaultAction', ['allow', 'deny'] as const) ?? 'deny'
    if (pm?.has('ttlSeconds')) permits.ttlSeconds = r.num(pm.get('ttlSeconds')!.node, 'spec.permits.ttlSeconds', { min: 1, max: 86_400, integer: true }) ?? 300
    if (pm?.has('requirePermit')) {
      const n = pm.get('requirePermit')!.node
      if (!isScalar(n) || typeof n.value !== 'boolean') r.fail(n, 'spec.permits.requirePermit', 'expected true or false')
      else permits.requirePermit = n.value
    }
    if (pm?.has('signingKey')) {
      const k = readCredential(r, pm.get('signingKey')!.node, 'spec.permits.signingKey', baseDir)
      if (k) permits.signingKey = k
    }
    if (pm?.has('rules')) permits.rules = readRules(r, pm.get('rules')!.node, reviewerNames)
  }

  const config: DispatcherConfig = {
    name,
    listen,
    providers,
    placeholders,
    pricing,
    permits,
    reviewers,
    firewall: spec.has('firewall') ? readFirewall(r, spec.get('firewall')!.node) : { detectors: [], projects: {} },
    identity: { defaultAgent: 'anonymous', defaultProject: 'default' },
    upstream: { timeoutMs: 120_000 },
  }
  if (spec.has('budgets')) {
    const b = readBudgets(r, spec.get('budgets')!.node, baseDir)
    if (b) config.budgets = b
  }
  if (spec.has('identity')) {
    const id = r.map(spec.get('identity')!.node, 'spec.identity', ['defaultAgent', 'defaultProject'])
    if (id?.has('defaultAgent')) config.identity.defaultAgent = r.str(id.get('defaultAgent')!.node, 'spec.identity.defaultAgent', NAME_RE, 'agent name') ?? 'anonymous'
    if (id?.has('defaultProject')) config.identity.defaultProject = r.str(id.get('defaultProject')!.node, 'spec.identity.defaultProject', NAME_RE, 'project name') ?? 'default'
  }
  if (spec.has('upstream')) {
    const u = r.map(spec.get('upstream')!.node, 'spec.upstream', ['timeoutMs'])
    if (u?.has('timeoutMs')) config.upstream.timeoutMs = r.num(u.get('timeoutMs')!.node, 'spec.upstream.timeoutMs', { min: 100, max: 3_600_000, integer: true }) ?? 120_000
  }
  if (spec.has('audit')) {
    const a = r.map(spec.get('audit')!.node, 'spec.audit', ['dir', 'fsync'], ['dir'])
    const dir = a?.has('dir') ? r.str(a.get('dir')!.node, 'spec.audit.dir') : undefined
    const fsync = a?.has('fsync') ? r.oneOf(a.get('fsync')!.node, 'spec.audit.fsync', ['always', 'batch', 'never'] as const) : 'batch'
    if (dir !== undefined && fsync !== undefined) config.audit = { dir: resolvePath(baseDir, dir), fsync }
  }
  if (config.budgets && pricing.length === 0) {
    r.fail(spec.get('budgets')!.node, 'spec.budgets', 'budgets need a price table (spec.pricing) to reserve worst-case cost')
  }
  if (r.issues.length > 0) throw new DispatcherConfigError(r.issues)
  return config
}

/** Reads and loads a config file. */
export async function readDispatcherConfig(path: string): Promise<DispatcherConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new KeelError('ERR_CONFIG_INVALID', `cannot read dispatcher config ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  return loadDispatcherConfig(text, { file: path })
}
