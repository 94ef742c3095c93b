import { getSystemErrorName } from 'node:util'
import { KeelError } from '@keel/core'

/** A Node-style system error (`code` ECONNRESET, `errno` negative, `syscall`) for a positive errno from the addon. */
export function systemError(errno: number, syscall: string): Error & { code: string; errno: number; syscall: string } {
  const code = getSystemErrorName(-errno)
  return Object.assign(new Error(`${syscall}: ${code}`), { errno: -errno, code, syscall })
}

/**
 * A batch that libnftables refused (parse error, missing object, kernel error). The
 * message is libnftables' own text; the batch was not applied, because every batch is
 * one netlink transaction that commits whole or not at all.
 */
export class NftCommandError extends KeelError {
  constructor(
    /** libnftables' return code (non-zero). */
    readonly rc: number,
    /** libnftables' error output, unchanged (may span lines, with `^^^` markers). */
    readonly nftError: string,
    /** The namespace the batch ran in (a path), or undefined for the caller's own. */
    readonly netns: string | undefined,
  ) {
    super('ERR_NFT_COMMAND', `nft batch failed${netns ? ` in ${netns}` : ''}: ${nftError.trim() || `rc ${rc}`}`)
  }
}
