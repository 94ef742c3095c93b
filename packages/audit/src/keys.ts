/**
 * Ed25519 keys for signed exports and checkpoints, as PEM files that standard tools read:
 * PKCS#8 for the private key, SPKI for the public key. Signatures are raw 64-byte
 * Ed25519 over the exact file bytes (`openssl pkeyutl -verify -rawin` checks them).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { chmod, open, readFile, rename, unlink } from 'node:fs/promises'
import { KeelError } from '@keel/core'

export type PrivateKeyInput = KeyObject | string | Buffer
export type PublicKeyInput = KeyObject | string | Buffer

/** Reads an Ed25519 private key (PKCS#8 PEM text, a Buffer of it, or a KeyObject). */
export function toPrivateKey(key: PrivateKeyInput): KeyObject {
  let k: KeyObject
  try {
    k = typeof key === 'string' || Buffer.isBuffer(key) ? createPrivateKey(key) : key
  } catch (err) {
    throw new KeelError('ERR_USAGE', `not a private key: ${(err as Error).message}`, { cause: err })
  }
  if (k.type !== 'private' || k.asymmetricKeyType !== 'ed25519') {
    throw new KeelError('ERR_USAGE', `expected an Ed25519 private key, got ${k.type} ${k.asymmetricKeyType ?? ''}`)
  }
  return k
}

/** Reads an Ed25519 public key (SPKI PEM, or derives it from a private key). */
export function toPublicKey(key: PublicKeyInput): KeyObject {
  let k: KeyObject
  try {
    k = typeof key === 'string' || Buffer.isBuffer(key) ? createPublicKey(key) : key
  } catch (err) {
    throw new KeelError('ERR_USAGE', `not a public key: ${(err as Error).message}`, { cause: err })
  }
  if (k.type === 'private') k = createPublicKey(k)
  if (k.type !== 'public' || k.asymmetricKeyType !== 'ed25519') {
    throw new KeelError('ERR_USAGE', `expected an Ed25519 public key, got ${k.type} ${k.asymmetricKeyType ?? ''}`)
  }
  return k
}

/** `sha256:<hex>` of the public key's SPKI DER encoding (also works from a private key). */
export function keyFingerprint(key: PublicKeyInput | PrivateKeyInput): string {
  const pub = toPublicKey(key)
  return `sha256:${createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex')}`
}

export function publicKeyPem(key: PublicKeyInput | PrivateKeyInput): string {
  return toPublicKey(key).export({ type: 'spki', format: 'pem' }).toString()
}

/** Raw Ed25519 signature (64 bytes) over `data`. */
export function signBytes(data: Uint8Array, key: PrivateKeyInput): Buffer {
  return sign(null, data, toPrivateKey(key))
}

export function verifyBytes(data: Uint8Array, signature: Uint8Array, key: PublicKeyInput): boolean {
  try {
    return verify(null, data, toPublicKey(key), signature)
  } catch {
    return false
  }
}

export async function readPrivateKeyFile(path: string): Promise<KeyObject> {
  return toPrivateKey(await readKeyFile(path))
}

export async function readPublicKeyFile(path: string): Promise<KeyObject> {
  return toPublicKey(await readKeyFile(path))
}

async function readKeyFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new KeelError('ERR_USAGE', `cannot read key ${path}: ${(err as Error).message}`, { cause: err })
  }
}

export interface KeygenResult {
  privateKeyPath: string
  publicKeyPath: string
  fingerprint: string
}

/**
 * Writes a new Ed25519 key pair: `<prefix>.key` (PKCS#8 PEM, mode 0600) and
 * `<prefix>.pub` (SPKI PEM, mode 0644). Refuses to overwrite either unless `force`.
 * The private key is created with mode 0600 from the start (never readable by others,
 * whatever the umask), then renamed into place.
 */
export async function generateKeyFiles(prefix: string, options: { force?: boolean } = {}): Promise<KeygenResult> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const privateKeyPath = `${prefix}.key`
  const publicKeyPath = `${prefix}.pub`
  const priv = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const pub = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  await writeNew(privateKeyPath, priv, 0o600, options.force === true)
  await writeNew(publicKeyPath, pub, 0o644, options.force === true)
  return { privateKeyPath, publicKeyPath, fingerprint: keyFingerprint(publicKey) }
}

async function writeNew(path: string, text: string, mode: number, force: boolean): Promise<void> {
  const tmp = force ? `${path}.tmp-${process.pid}` : path
  let fh
  try {
    fh = await open(tmp, 'wx', mode)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new KeelError('ERR_USAGE', `${path} exists; pass --force to overwrite`)
    }
    throw new KeelError('ERR_AUDIT_IO', `cannot write ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    await fh.chmod(mode) // the umask may have removed bits we want (e.g. 0644 for .pub)
    await fh.writeFile(text)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(tmp).catch(() => {})
    throw err
  }
  await fh.close()
  if (force) {
    await rename(tmp, path)
    await chmod(path, mode)
  }
}
