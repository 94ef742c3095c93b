/**
 * Prompt firewall detectors. The baseline is a floor: every project gets it, config can
 * only add detectors (globally or per project), and a config that tries to redefine or
 * disable a baseline detector is a validation error (see config.ts).
 *
 * What is scanned: every string value in the parsed JSON request body (message text,
 * system prompts, tool arguments, …), NFKC-normalized, so JSON escapes such as `\u0043UI`
 * and full-width look-alikes cannot slip a marking past a scan of the raw bytes.
 * The matched text is never echoed back (it may be a secret): decisions carry the
 * detector id only.
 */
import type { DetectorSpec, FirewallConfig } from '../types.js'

export interface Detector {
  id: string
  baseline: boolean
  description: string
  pattern: RegExp
}

/** Baseline detector ids: stable, recorded in decisions as `detector`. */
export const BASELINE_DETECTOR_IDS = ['cui_marking', 'control_marking', 'itar_ear', 'private_key', 'api_key'] as const
export type BaselineDetectorId = (typeof BASELINE_DETECTOR_IDS)[number]

const BASELINE: readonly Detector[] = [
  {
    id: 'cui_marking',
    baseline: true,
    description: 'Controlled Unclassified Information (CUI) banner or portion marking',
    // "CUI" in capitals as a word (banner "CUI", "CUI//SP-CTI", portion "(CUI)"), or spelled out.
    pattern: /\bCUI\b|[Cc]ontrolled\s+[Uu]nclassified\s+[Ii]nformation|CONTROLLED\s+UNCLASSIFIED\s+INFORMATION/,
  },
  {
    id: 'control_marking',
    baseline: true,
    description: 'Classification or dissemination control marking (e.g. SECRET//NOFORN, FOUO)',
    pattern:
      /\b(?:TOP\s+SECRET|SECRET|CONFIDENTIAL)\s*\/\/\s*[A-Z]|\b(?:NOFORN|ORCON|FOUO|IMCON|PROPIN)\b|FOR\s+OFFICIAL\s+USE\s+ONLY/,
  },
  {
    id: 'itar_ear',
    baseline: true,
    description: 'Export-controlled data marking (ITAR / EAR, USML, ECCN)',
    pattern:
      /\bITAR\b|International\s+Traffic\s+in\s+Arms\s+Regulations?|\bEAR99\b|Export\s+Administration\s+Regulations?|\b22\s+CFR\s+(?:Parts?\s+)?12[0-9]|\b15\s+CFR\s+(?:Parts?\s+)?7[3-7][0-9]|\bECCN\s*:?\s*[0-9][A-E][0-9]{3}\b|\bUSML\s+Category\b/i,
  },
  {
    id: 'private_key',
    baseline: true,
    description: 'PEM / OpenSSH / PGP private key',
    pattern: /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----/,
  },
  {
    id: 'api_key',
    baseline: true,
    description: 'Provider or cloud API key (OpenAI, Anthropic, AWS, GitHub, Slack, Google, GitLab)',
    pattern:
      /\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)[0-9]{2}-)?[A-Za-z0-9_-]{20,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}|\bglpat-[A-Za-z0-9_-]{20,}/,
  },
]

export function baselineDetectors(): readonly Detector[] {
  return BASELINE
}

function fromSpec(spec: DetectorSpec): Detector {
  return { id: spec.id, baseline: false, description: spec.description ?? spec.id, pattern: spec.pattern }
}

/** The detectors for each project: baseline + global additions + that project's additions. Cached. */
export function compileFirewall(config: FirewallConfig): (project: string) => readonly Detector[] {
  const common = [...BASELINE, ...config.detectors.map(fromSpec)]
  const perProject = new Map<string, readonly Detector[]>()
  for (const [project, specs] of Object.entries(config.projects)) {
    perProject.set(project, [...common, ...specs.map(fromSpec)])
  }
  return function detectorsFor(project) {
    return perProject.get(project) ?? common
  }
}

/** Caps on what is walked, so a hostile body cannot make the scan unbounded. */
const MAX_DEPTH = 64

/** Collects every string value of a parsed JSON document. */
export function collectStrings(value: unknown, out: string[] = [], depth = 0): string[] {
  if (depth > MAX_DEPTH) return out
  if (typeof value === 'string') out.push(value)
  else if (Array.isArray(value)) for (const v of value) collectStrings(v, out, depth + 1)
  else if (value !== null && typeof value === 'object')
    for (const v of Object.values(value as Record<string, unknown>)) collectStrings(v, out, depth + 1)
  return out
}

export interface FirewallHit {
  detector: string
  baseline: boolean
  description: string
}

/**
 * Scans the string values of `body` with `detectors`; the first detector that matches wins.
 * Detectors are tried in order: baseline first, so the recorded id is the baseline one
 * when a project detector overlaps it.
 */
export function scanBody(body: unknown, detectors: readonly Detector[]): FirewallHit | undefined {
  const text = collectStrings(body).join('\n').normalize('NFKC')
  if (text.length === 0) return undefined
  for (const d of detectors) {
    if (d.pattern.test(text)) return { detector: d.id, baseline: d.baseline, description: d.description }
  }
  return undefined
}
