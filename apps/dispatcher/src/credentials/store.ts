/**
 * Real provider keys, reviewer tokens and the permit signing key, loaded once at startup.
 *
 * A key file is refused when it is group- or world-accessible (any of mode 0o077), is not
 * a regular file, or is empty; the error names the file and its mode, never its content.
 * An environment source must be set and non-empty. Secrets are kept in this store only,
 * and {@link CredentialStore.secrets} lets logging and error paths scrub them.
 */
import { open } from 'node:fs/promises'
import { constants } from 'node:fs'
import { KeelError } from '@keel/core'
import type { CredentialSource, DispatcherConfig } from '../types.js'

export interface CredentialStore {
  /** The real key for a provider, by provider name. */
  providerKey(provider: string): string | undefined
  /** A reviewer's attestation token, by reviewer name. */
  reviewerToken(reviewer: string): string | undefined
  /** Every secret held, for scrubbing logs and upstream error bodies. */
  secrets(): readonly string[]
}

export interface StaticCredentials {
  providers?: Record<string, string>
  reviewers?: Record<string, string>
}

/** A store over in-memory values (tests, or a caller that resolved secrets itself). */
export function staticCredentials(values: StaticCredentials): CredentialStore {
  const providers = new Map(Object.entries(values.providers ?? {}))
  const reviewers = new Map(Object.entries(values.reviewers ?? {}))
  const all = [...providers.values(), ...reviewers.values()].filter((s) => s.length > 0)
  return {
    providerKey: (p) => providers.get(p),
    reviewerToken: (r) => reviewers.get(r),
    secrets: () => all,
  }
}

function describe(source: CredentialSource): string {
  return 'env' in source ? `environment variable ${source.env}` : `key file ${source.file}`
}

/** Reads one secret. Throws KeelError ERR_CONFIG_INVALID with a message that never contains the secret. */
export async function readSecret(source: CredentialSource, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if ('env' in source) {
    const v = env[source.env]
    if (v === undefined || v.trim() === '') {
      throw new KeelError('ERR_CONFIG_INVALID', `${describe(source)} is not set`)
    }
    return v.trim()
  }
  let fh
  try {
    fh = await open(source.file, constants.O_RDONLY | constants.O_NOFOLLOW)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ELOOP' ? 'is a symbolic link' : `cannot be opened (${code})`
    throw new KeelError('ERR_CONFIG_INVALID', `${describe(source)} ${why}`, { cause: err })
  }
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new KeelError('ERR_CONFIG_INVALID', `${describe(source)} is not a regular file`)
    const mode = st.mode & 0o777
    if ((mode & 0o077) !== 0) {
      throw new KeelError(
        'ERR_CONFIG_INVALID',
        `${describe(source)} is group- or world-accessible (mode ${mode.toString(8).padStart(4, '0')}); refusing to use it: chmod 600 ${source.file}`,
      )
    }
    const text = (await fh.readFile('utf8')).trim()
    if (text === '') throw new KeelError('ERR_CONFIG_INVALID', `${describe(source)} is empty`)
    return text
  } finally {
    await fh.close()
  }
}

/** Loads every provider key and reviewer token the config names; fails fast on the first problem. */
export async function loadCredentials(config: DispatcherConfig, env: NodeJS.ProcessEnv = process.env): Promise<CredentialStore> {
  const providers: Record<string, string> = {}
  for (const p of config.providers) {
    try {
      providers[p.name] = await readSecret(p.credential, env)
    } catch (err) {
      throw new KeelError('ERR_CONFIG_INVALID', `provider "${p.name}": ${(err as Error).message}`, { cause: err })
    }
  }
  const reviewers: Record<string, string> = {}
  for (const r of config.reviewers) {
    try {
      reviewers[r.name] = await readSecret(r.token, env)
    } catch (err) {
      throw new KeelError('ERR_CONFIG_INVALID', `reviewer "${r.name}": ${(err as Error).message}`, { cause: err })
    }
  }
  return staticCredentials({ providers, reviewers })
}

/** Replaces every occurrence of every secret in `text` with `[REDACTED]`. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text
  for (const s of secrets) if (s.length >= 4 && out.includes(s)) out = out.split(s).join('[REDACTED]')
  return out
}
