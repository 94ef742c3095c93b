/**
 * One YAML document → one PolicyFragment. Validates every field it reads and keeps
 * going after a problem, so one run reports every issue. Cross-document checks
 * (duplicate names, deny-policy targets, conflicting settings) happen in merge.ts.
 */
import { isMap, isScalar, type Document, type LineCounter, type Node } from 'yaml'
import type { PolicyIssue } from '../errors.js'
import { parseCidr, type CidrBlock } from '../net/cidr.js'
import { parseHostnamePattern, type HostnamePattern } from '../net/hostname.js'
import type { DenyResponse, Protocol, Registry, Via } from '../types.js'
import {
  POLICY_KIND,
  SUPPORTED_API_VERSION,
  type DefaultPolicy,
  type DenyPolicy,
  type LabelSelector,
  type LabelSelectorRequirement,
  type PolicyAgent,
  type PolicyRoute,
  type PortRange,
  type RouteMatch,
  type RouteRule,
  type SelectorOperator,
  type SourceLocation,
} from './model.js'
import { checkLabelKey, checkLabelValue, checkObjectName, parseRfc3339 } from './names.js'
import { AliasLimitExceeded, joinPath, YamlReader, type Field } from './yaml-reader.js'

export interface Located<T> {
  readonly value: T
  readonly at: SourceLocation
}

/** What one document contributes to the merged policy. */
export interface PolicyFragment {
  name?: string
  defaultPolicy?: Located<DefaultPolicy>
  agents: PolicyAgent[]
  routes: PolicyRoute[]
  /** Deny policies plus where their target was written, for "no such route" issues. */
  denyPolicies: { policy: DenyPolicy; targetAt: SourceLocation; targetPath: string }[]
  unsafeAllowMetadata?: Located<boolean>
  unsafeAllowResolvedRanges: CidrBlock[]
  /** Path of each agent, route and deny policy's name, for issues found while merging. */
  namePaths: Map<object, string>
}

const TOP_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec'] as const
const METADATA_FIELDS = ['name', 'labels', 'annotations'] as const
const SPEC_FIELDS = ['defaultPolicy', 'agents', 'routes', 'denyPolicies', 'guardRails'] as const
const AGENT_FIELDS = ['name', 'labels'] as const
const ROUTE_FIELDS = ['name', 'via', 'registry', 'owner', 'expires', 'rules'] as const
const REGISTRY_FIELDS = ['owner', 'purpose', 'dataClass'] as const
const RULE_FIELDS = ['matches'] as const
const MATCH_FIELDS = ['destinationHostnames', 'destinationCIDRs', 'ports', 'protocol', 'sourceAgents'] as const
const PORT_FIELDS = ['port', 'startPort', 'endPort'] as const
const SELECTOR_FIELDS = ['matchLabels', 'matchExpressions'] as const
const EXPRESSION_FIELDS = ['key', 'operator', 'values'] as const
const DENY_POLICY_FIELDS = ['name', 'targetRef', 'denyResponse'] as const
const TARGET_REF_FIELDS = ['route'] as const
const DENY_RESPONSE_FIELDS = ['statusCode', 'message'] as const
const GUARD_RAIL_FIELDS = ['unsafeAllowMetadata', 'unsafeAllowResolvedRanges'] as const

const DEFAULT_POLICIES: readonly DefaultPolicy[] = ['deny-all', 'allow-all']
const VIAS: readonly Via[] = ['direct', 'dispatcher']
const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP']
const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist']

export function defaultDenyMessage(policyName: string): string {
  return `egress to this destination is denied by policy "${policyName}"`
}

/** Parses one document. Returns undefined when the document is unusable (wrong apiVersion/kind or not a mapping). */
export function parseDocument(file: string, doc: Document.Parsed, lines: LineCounter, issues: PolicyIssue[]): PolicyFragment | undefined {
  try {
    return new DocumentParser(new YamlReader(file, doc, lines, issues)).parse(doc.contents)
  } catch (err) {
    if (err instanceof AliasLimitExceeded) return undefined // its issue is already recorded
    throw err
  }
}

class DocumentParser {
  private readonly namePaths = new Map<object, string>()

  constructor(private readonly r: YamlReader) {}

  parse(contents: Node | null): PolicyFragment | undefined {
    const root = this.r.map(contents, '', 'a policy document')
    if (!root) return undefined
    const f = this.r.fields(root, '', 'a policy document', TOP_FIELDS)
    const apiVersion = this.r.required(f, 'apiVersion', root, '', 'a policy document')
    const kind = this.r.required(f, 'kind', root, '', 'a policy document')
    let supported = apiVersion !== undefined && kind !== undefined
    if (apiVersion && !this.fixedString(apiVersion, 'apiVersion', SUPPORTED_API_VERSION, 'unsupported apiVersion')) supported = false
    if (kind && !this.fixedString(kind, 'kind', POLICY_KIND, 'unsupported kind')) supported = false
    // Another version may have another shape: reporting its fields as unknown would only bury the real problem.
    if (!supported) return undefined

    const fragment: PolicyFragment = { agents: [], routes: [], denyPolicies: [], unsafeAllowResolvedRanges: [], namePaths: this.namePaths }
    const metadata = this.r.required(f, 'metadata', root, '', 'a policy document')
    const name = metadata && this.metadata(metadata)
    if (name !== undefined) fragment.name = name
    const spec = this.r.required(f, 'spec', root, '', 'a policy document')
    if (spec) this.spec(spec, fragment)
    return fragment
  }

  private fixedString(field: Field, what: string, expected: string, problem: string): boolean {
    const v = field.value
    if (isScalar(v) && v.value === expected) return true
    const shown = isScalar(v) && typeof v.value === 'string' ? JSON.stringify(v.value) : 'a non-string value'
    this.r.issue(isScalar(v) ? v : field.key, field.path, `${problem} ${shown}; supported ${what}: ${expected}`, isScalar(v) ? v.value : undefined)
    return false
  }

  private metadata(field: Field): string | undefined {
    const map = this.r.map(field.value, field.path, 'metadata', field.key)
    if (!map) return undefined
    const f = this.r.fields(map, field.path, 'metadata', METADATA_FIELDS)
    for (const key of ['labels', 'annotations'] as const) {
      const labels = f.get(key)
      if (labels) this.r.stringMap(labels, `metadata.${key}`, key === 'labels' ? checkLabelKey : () => undefined, key === 'labels' ? checkLabelValue : () => undefined)
    }
    const nameField = this.r.required(f, 'name', map, field.path, 'metadata')
    return nameField ? this.objectName(nameField, 'metadata.name') : undefined
  }

  private objectName(field: Field, what: string): string | undefined {
    const name = this.r.string(field, what)
    if (name === undefined) return undefined
    const problem = checkObjectName(name)
    if (problem !== undefined) {
      this.r.issue(field.value, field.path, `${what} "${name}" ${problem}`, name)
      return undefined
    }
    return name
  }

  private spec(field: Field, out: PolicyFragment): void {
    const map = this.r.map(field.value, field.path, 'spec', field.key)
    if (!map) return
    const f = this.r.fields(map, field.path, 'spec', SPEC_FIELDS)
    const defaultPolicy = f.get('defaultPolicy')
    if (defaultPolicy) {
      const value = this.r.oneOf(defaultPolicy, 'defaultPolicy', DEFAULT_POLICIES)
      if (value) out.defaultPolicy = { value, at: this.r.location(defaultPolicy.value) }
    }
    const agents = f.get('agents')
    if (agents) this.items(agents, 'agents', (node, path) => this.agent(node, path, out.agents))
    const routes = f.get('routes')
    if (routes) this.items(routes, 'routes', (node, path) => this.route(node, path, out.routes))
    const denyPolicies = f.get('denyPolicies')
    if (denyPolicies) this.items(denyPolicies, 'denyPolicies', (node, path) => this.denyPolicy(node, path, out.denyPolicies))
    const guardRails = f.get('guardRails')
    if (guardRails) this.guardRails(guardRails, out)
  }

  private items(field: Field, what: string, each: (node: Node | null, path: string) => void): void {
    const items = this.r.list(field, what)
    items?.forEach((node, i) => each(node, joinPath(field.path, i)))
  }

  private agent(node: Node | null, path: string, into: PolicyAgent[]): void {
    const map = this.r.map(node, path, 'an agent')
    if (!map) return
    const f = this.r.fields(map, path, 'an agent', AGENT_FIELDS)
    const nameField = this.r.required(f, 'name', map, path, 'an agent')
    const name = nameField && this.objectName(nameField, 'agent name')
    const labelsField = f.get('labels')
    const labels = labelsField ? this.r.stringMap(labelsField, 'labels', checkLabelKey, checkLabelValue) : {}
    if (name === undefined || labels === undefined) return
    const agent: PolicyAgent = { name, labels, source: this.r.location(map) }
    this.namePaths.set(agent, joinPath(path, 'name'))
    into.push(agent)
  }

  private route(node: Node | null, path: string, into: PolicyRoute[]): void {
    const map = this.r.map(node, path, 'a route')
    if (!map) return
    const f = this.r.fields(map, path, 'a route', ROUTE_FIELDS)
    const nameField = this.r.required(f, 'name', map, path, 'a route')
    const name = nameField && this.objectName(nameField, 'route name')
    const viaField = f.get('via')
    const via: Via = (viaField && this.r.oneOf(viaField, 'via', VIAS)) || 'direct'
    const registryField = f.get('registry')
    const registry = registryField ? this.registry(registryField) : undefined
    const ownerField = f.get('owner')
    const owner = ownerField ? this.r.string(ownerField, 'owner') : undefined
    const expiresField = f.get('expires')
    let expires: number | undefined
    let expiresText: string | undefined
    if (expiresField) {
      expiresText = this.r.string(expiresField, 'expires')
      if (expiresText !== undefined) {
        expires = parseRfc3339(expiresText)
        if (expires === undefined) {
          this.r.issue(expiresField.value, expiresField.path, `expires "${expiresText}" is not an RFC 3339 date-time; write e.g. "2026-12-31T00:00:00Z" (date, "T", time and a Z or ±hh:mm offset)`, expiresText)
        }
      }
      if (!ownerField) {
        this.r.issue(expiresField.key, expiresField.path, 'a route with "expires" is an exception and must also name its "owner" (who to ask before it expires)')
      }
    }
    const rules: RouteRule[] = []
    const rulesField = this.r.required(f, 'rules', map, path, 'a route')
    if (rulesField) {
      const items = this.r.list(rulesField, 'rules', 'a route needs at least one rule with at least one match')
      items?.forEach((ruleNode, i) => {
        const rule = this.rule(ruleNode, joinPath(rulesField.path, i), via)
        if (rule) rules.push(rule)
      })
    }
    if (name === undefined) return
    const route: PolicyRoute = {
      name,
      via,
      rules,
      source: this.r.location(map),
      ...(registry && { registry }),
      ...(owner !== undefined && { owner }),
      ...(expires !== undefined && { expires, expiresText }),
    }
    this.namePaths.set(route, joinPath(path, 'name'))
    into.push(route)
  }

  private registry(field: Field): Registry | undefined {
    const map = this.r.map(field.value, field.path, 'registry', field.key)
    if (!map) return undefined
    const f = this.r.fields(map, field.path, 'registry', REGISTRY_FIELDS)
    const out: Registry = {}
    for (const key of REGISTRY_FIELDS) {
      const entry = f.get(key)
      const value = entry && this.r.string(entry, `registry.${key}`)
      if (value !== undefined) out[key] = value
    }
    return out
  }

  private rule(node: Node | null, path: string, via: Via): RouteRule | undefined {
    const map = this.r.map(node, path, 'a rule')
    if (!map) return undefined
    const f = this.r.fields(map, path, 'a rule', RULE_FIELDS)
    const matchesField = this.r.required(f, 'matches', map, path, 'a rule')
    if (!matchesField) return undefined
    const items = this.r.list(matchesField, 'matches', 'a rule needs at least one match')
    if (!items) return undefined
    const matches: RouteMatch[] = []
    items.forEach((matchNode, i) => {
      const match = this.match(matchNode, joinPath(matchesField.path, i), via)
      if (match) matches.push(match)
    })
    return { matches }
  }

  private match(node: Node | null, path: string, via: Via): RouteMatch | undefined {
    const map = this.r.map(node, path, 'a match')
    if (!map) return undefined
    const f = this.r.fields(map, path, 'a match', MATCH_FIELDS)
    const hostsField = f.get('destinationHostnames')
    const cidrsField = f.get('destinationCIDRs')
    if (!hostsField && !cidrsField) {
      this.r.issue(map, path, 'a match needs destinationHostnames or destinationCIDRs (to allow everything, write defaultPolicy: allow-all, or destinationCIDRs: ["0.0.0.0/0", "::/0"])')
    }
    const hostnames = hostsField ? this.hostnames(hostsField) : []
    const cidrs = cidrsField ? this.cidrs(cidrsField, 'destinationCIDRs') : []
    if (cidrsField && via === 'dispatcher') {
      this.r.issue(cidrsField.key, cidrsField.path, 'a route with via: dispatcher matches hostnames only (the dispatcher needs a name to terminate TLS for); move the CIDRs to a route with via: direct')
    }
    const portsField = f.get('ports')
    const ports = portsField ? this.ports(portsField) : []
    const protocolField = f.get('protocol')
    const protocol: Protocol = (protocolField && this.r.oneOf(protocolField, 'protocol', PROTOCOLS)) || 'TCP'
    const selectorField = f.get('sourceAgents')
    const sourceAgents = selectorField ? this.selector(selectorField) : undefined
    if (hostnames === undefined || cidrs === undefined || ports === undefined) return undefined
    if (selectorField && sourceAgents === undefined) return undefined
    return {
      destinationHostnames: hostnames,
      destinationCIDRs: cidrs,
      ports,
      protocol,
      source: this.r.location(map),
      ...(sourceAgents && { sourceAgents }),
    }
  }

  private hostnames(field: Field): HostnamePattern[] | undefined {
    const items = this.r.list(field, 'destinationHostnames', 'list at least one name, or remove the field')
    if (!items) return undefined
    const out: HostnamePattern[] = []
    let ok = true
    items.forEach((node, i) => {
      const path = joinPath(field.path, i)
      const text = this.r.stringItem(node, path, 'a hostname')
      if (text === undefined) return void (ok = false)
      const parsed = parseHostnamePattern(text)
      if (!parsed.ok) {
        this.r.issue(node, path, `hostname "${text}": ${parsed.problem}`, text)
        ok = false
      } else if (!out.some((p) => p.text === parsed.pattern.text)) {
        out.push(parsed.pattern)
      }
    })
    return ok ? out : undefined
  }

  /** `allowEmpty` for opt-in lists, where an empty list plainly means "none". */
  private cidrs(field: Field, what: string, allowEmpty = false): CidrBlock[] | undefined {
    const items = this.r.list(field, what, allowEmpty ? undefined : 'list at least one CIDR, or remove the field')
    if (!items) return undefined
    const out: CidrBlock[] = []
    let ok = true
    items.forEach((node, i) => {
      const path = joinPath(field.path, i)
      const text = this.r.stringItem(node, path, 'a CIDR')
      if (text === undefined) return void (ok = false)
      const parsed = parseCidr(text)
      if (!parsed.ok) {
        this.r.issue(node, path, `CIDR "${text}": ${parsed.problem}`, text)
        ok = false
      } else if (!out.some((c) => c.text === parsed.cidr.text)) {
        out.push(parsed.cidr)
      }
    })
    return ok ? out : undefined
  }

  private ports(field: Field): PortRange[] | undefined {
    const items = this.r.list(field, 'ports', 'omit ports to allow every port of the protocol')
    if (!items) return undefined
    const out: PortRange[] = []
    let ok = true
    items.forEach((node, i) => {
      const path = joinPath(field.path, i)
      const range = this.port(node, path)
      if (range) out.push(range)
      else ok = false
    })
    return ok ? out : undefined
  }

  private port(node: Node | null, path: string): PortRange | undefined {
    if (!isMap(node)) {
      const hint = isScalar(node) && typeof node.value === 'number' ? `{ port: ${node.value} }` : '{ port: 443 }'
      this.r.issue(node, path, `a port entry must be a mapping like ${hint} or { startPort: 8000, endPort: 8099 }`, isScalar(node) ? node.value : undefined)
      return undefined
    }
    const f = this.r.fields(node, path, 'a port entry', PORT_FIELDS)
    const portField = f.get('port')
    const startField = f.get('startPort')
    const endField = f.get('endPort')
    if (portField) {
      if (startField || endField) {
        this.r.issue(node, path, 'write either port or startPort/endPort, not both')
        return undefined
      }
      const port = this.r.integer(portField, 'port', 1, 65535)
      return port === undefined ? undefined : { start: port, end: port }
    }
    if (!startField || !endField) {
      this.r.issue(node, path, startField || endField ? 'a port range needs both startPort and endPort' : 'a port entry needs port, or startPort and endPort')
      return undefined
    }
    const start = this.r.integer(startField, 'startPort', 1, 65535)
    const end = this.r.integer(endField, 'endPort', 1, 65535)
    if (start === undefined || end === undefined) return undefined
    if (start > end) {
      this.r.issue(node, path, `startPort ${start} is greater than endPort ${end}; the range is inclusive, so write startPort <= endPort`)
      return undefined
    }
    return { start, end }
  }

  private selector(field: Field): LabelSelector | undefined {
    const map = this.r.map(field.value, field.path, 'sourceAgents', field.key)
    if (!map) return undefined
    const f = this.r.fields(map, field.path, 'sourceAgents', SELECTOR_FIELDS)
    const labelsField = f.get('matchLabels')
    const matchLabels = labelsField ? this.r.stringMap(labelsField, 'matchLabels', checkLabelKey, checkLabelValue) : {}
    const expressions: LabelSelectorRequirement[] = []
    let ok = matchLabels !== undefined
    const expressionsField = f.get('matchExpressions')
    if (expressionsField) {
      const items = this.r.list(expressionsField, 'matchExpressions')
      if (!items) ok = false
      items?.forEach((node, i) => {
        const expression = this.expression(node, joinPath(expressionsField.path, i))
        if (expression) expressions.push(expression)
        else ok = false
      })
    }
    return ok && matchLabels ? { matchLabels, matchExpressions: expressions } : undefined
  }

  private expression(node: Node | null, path: string): LabelSelectorRequirement | undefined {
    const map = this.r.map(node, path, 'a match expression')
    if (!map) return undefined
    const f = this.r.fields(map, path, 'a match expression', EXPRESSION_FIELDS)
    const keyField = this.r.required(f, 'key', map, path, 'a match expression')
    const operatorField = this.r.required(f, 'operator', map, path, 'a match expression')
    let key = keyField && this.r.string(keyField, 'key')
    if (key !== undefined && keyField) {
      const problem = checkLabelKey(key)
      if (problem !== undefined) {
        this.r.issue(keyField.value, keyField.path, `key "${key}" ${problem}`, key)
        key = undefined
      }
    }
    const operator = operatorField && this.r.oneOf(operatorField, 'operator', OPERATORS)
    const valuesField = f.get('values')
    let values: string[] | undefined = []
    if (valuesField) {
      const items = this.r.list(valuesField, 'values')
      values = items?.map((item, i) => this.r.stringItem(item, joinPath(valuesField.path, i), 'a label value')).filter((v): v is string => v !== undefined)
      if (items && values && values.length !== items.length) values = undefined
    }
    if (operator === undefined || key === undefined || values === undefined) return undefined
    const needsValues = operator === 'In' || operator === 'NotIn'
    if (needsValues && values.length === 0) {
      this.r.issue(valuesField?.value ?? map, valuesField?.path ?? path, `operator ${operator} needs a non-empty values list`)
      return undefined
    }
    if (!needsValues && values.length > 0) {
      this.r.issue(valuesField?.value ?? map, valuesField?.path ?? path, `operator ${operator} takes no values; remove "values"`)
      return undefined
    }
    return { key, operator, values }
  }

  private denyPolicy(node: Node | null, path: string, into: PolicyFragment['denyPolicies']): void {
    const map = this.r.map(node, path, 'a deny policy')
    if (!map) return
    const f = this.r.fields(map, path, 'a deny policy', DENY_POLICY_FIELDS)
    const nameField = this.r.required(f, 'name', map, path, 'a deny policy')
    const name = nameField && this.objectName(nameField, 'deny policy name')
    const targetField = this.r.required(f, 'targetRef', map, path, 'a deny policy')
    let route: string | undefined
    let targetNode: Node | null = null
    let targetPath = path
    if (targetField) {
      const target = this.r.map(targetField.value, targetField.path, 'targetRef', targetField.key)
      if (target) {
        const tf = this.r.fields(target, targetField.path, 'targetRef', TARGET_REF_FIELDS)
        const routeField = this.r.required(tf, 'route', target, targetField.path, 'targetRef')
        if (routeField) {
          route = this.r.string(routeField, 'targetRef.route')
          targetNode = routeField.value
          targetPath = routeField.path
        }
      }
    }
    const responseField = f.get('denyResponse')
    const denyResponse = responseField ? this.denyResponse(responseField, name ?? '') : { statusCode: 403, message: defaultDenyMessage(name ?? '') }
    if (name === undefined || route === undefined || denyResponse === undefined) return
    const policy: DenyPolicy = { name, targetRef: { route }, denyResponse, source: this.r.location(map) }
    this.namePaths.set(policy, joinPath(path, 'name'))
    into.push({ policy, targetAt: this.r.location(targetNode), targetPath })
  }

  private denyResponse(field: Field, policyName: string): DenyResponse | undefined {
    const map = this.r.map(field.value, field.path, 'denyResponse', field.key)
    if (!map) return undefined
    const f = this.r.fields(map, field.path, 'denyResponse', DENY_RESPONSE_FIELDS)
    const statusField = f.get('statusCode')
    const messageField = f.get('message')
    const statusCode = statusField ? this.r.integer(statusField, 'statusCode', 400, 599) : 403
    const message = messageField ? this.r.string(messageField, 'message') : defaultDenyMessage(policyName)
    return statusCode === undefined || message === undefined ? undefined : { statusCode, message }
  }

  private guardRails(field: Field, out: PolicyFragment): void {
    const map = this.r.map(field.value, field.path, 'guardRails', field.key)
    if (!map) return
    const f = this.r.fields(map, field.path, 'guardRails', GUARD_RAIL_FIELDS)
    const metadataField = f.get('unsafeAllowMetadata')
    if (metadataField) {
      const value = this.r.boolean(metadataField, 'unsafeAllowMetadata')
      if (value !== undefined) out.unsafeAllowMetadata = { value, at: this.r.location(metadataField.value) }
    }
    const rangesField = f.get('unsafeAllowResolvedRanges')
    if (rangesField) {
      const ranges = this.cidrs(rangesField, 'unsafeAllowResolvedRanges', true)
      if (ranges) out.unsafeAllowResolvedRanges.push(...ranges)
    }
  }
}

/** A document with nothing in it (e.g. only comments, or after a trailing `---`). */
export function isEmptyDocument(doc: Document.Parsed): boolean {
  const c = doc.contents as Node | null
  return c === null || (isScalar(c) && c.value === null)
}
