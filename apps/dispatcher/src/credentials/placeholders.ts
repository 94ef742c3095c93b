/**
 * Unresolved credential placeholders. Inside `keel run` the agent holds a dummy key and keel
 * swaps the real one into the provider's auth header (dropping the agent's). A placeholder
 * anywhere else in the request means something expected a credential that was never
 * resolved; such a request is never sent upstream (`credential_placeholder_unresolved`).
 *
 * Precisely, after the agent's credential headers (Authorization, x-api-key, api-key) are
 * dropped, a request is refused when:
 *
 * - a **forwarded header** value contains the marker `KEEL_PLACEHOLDER` / `keel-placeholder`
 *   (any case), any template reference `${…}` or `{{…}}`, a shell reference to a
 *   credential-named variable (`$OPENAI_API_KEY`), or a configured dummy-key glob
 *   (`spec.placeholders`, e.g. `sk-keel-dummy*`);
 * - a **body string value** contains the marker, a template reference whose name looks like
 *   a credential (`${OPENAI_API_KEY}`, `{{ secrets.api_token }}`: the name contains KEY,
 *   TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL or AUTH), or a configured dummy-key glob.
 *
 * Templates with other names (`${count}`) are left alone in bodies: agents legitimately
 * send code.
 */
import { globToRegExp } from '../glob.js'

const MARKER = /keel[_-]placeholder/i
const ANY_TEMPLATE = /\$\{[^}]*\}|\{\{[^}]*\}\}/
const CREDENTIAL_WORD = /key|token|secret|passw(?:or)?d|credential|auth/i
const TEMPLATE_NAMES = /\$\{\s*([A-Za-z_][A-Za-z0-9_.:-]*)\s*\}|\{\{\s*([A-Za-z_][A-Za-z0-9_.:-]*)\s*\}\}/g
const SHELL_VAR = /\$([A-Z_][A-Z0-9_]*)/g

export interface PlaceholderDetector {
  /** The first forwarded header carrying a placeholder, by name. */
  inHeaders(headers: Iterable<[string, string]>): string | undefined
  /** Whether any body string carries a placeholder. */
  inBody(strings: readonly string[]): boolean
}

function credentialTemplate(s: string): boolean {
  TEMPLATE_NAMES.lastIndex = 0
  for (let m = TEMPLATE_NAMES.exec(s); m !== null; m = TEMPLATE_NAMES.exec(s)) {
    if (CREDENTIAL_WORD.test(m[1] ?? m[2] ?? '')) return true
  }
  return false
}

function credentialShellVar(s: string): boolean {
  SHELL_VAR.lastIndex = 0
  for (let m = SHELL_VAR.exec(s); m !== null; m = SHELL_VAR.exec(s)) {
    if (CREDENTIAL_WORD.test(m[1] ?? '')) return true
  }
  return false
}

export function createPlaceholderDetector(dummyGlobs: readonly string[]): PlaceholderDetector {
  // Configured globs match as substrings: `Bearer sk-keel-dummy-123` contains `sk-keel-dummy*`.
  const dummies = dummyGlobs.map((g) => new RegExp(globToRegExp(g).source.slice(1, -1).replace(/\.\*/g, '[^\\s"\']*'), 'i'))
  const dummy = (s: string): boolean => dummies.some((re) => re.test(s))
  return {
    inHeaders(headers) {
      for (const [name, value] of headers) {
        if (MARKER.test(value) || ANY_TEMPLATE.test(value) || credentialShellVar(value) || dummy(value)) return name
      }
      return undefined
    },
    inBody(strings) {
      for (const s of strings) {
        if (s.length < 4) continue
        if (MARKER.test(s) || dummy(s)) return true
        if ((s.includes('${') || s.includes('{{')) && credentialTemplate(s)) return true
      }
      return false
    },
  }
}
