/**
 * Stable failure codes of `keel audit verify`. Append-only: never rename or reuse a
 * code; scripts match on them. The message next to a code is prose and may change.
 */
export const VerifyCode = {
  /** manifest.json is missing, not JSON, or lacks a required field. */
  MANIFEST_INVALID: 'manifest_invalid',
  /** manifest.sig is missing or does not verify with the given public key. */
  SIGNATURE_INVALID: 'signature_invalid',
  /** The bundle names (or carries) a different public key than the one given: the key was replaced. */
  KEY_MISMATCH: 'key_mismatch',
  /** records.jsonl differs from the signed SHA-256, and no single record explains it. */
  RECORDS_HASH_MISMATCH: 'records_hash_mismatch',
  /** The file ends in bytes without a newline (a write that did not finish). */
  TORN_TAIL: 'torn_tail',
  /** A line is not a valid record (bad JSON, wrong types) and is not explained as a changed record. */
  RECORD_MALFORMED: 'record_malformed',
  /** Record N's bytes differ from what the chain (the next record's `prev`, or the signed head) commits to. */
  RECORD_CHANGED: 'record_changed',
  /** Records N..M are missing from the middle (or the start) of the chain. */
  RECORD_DELETED: 'record_deleted',
  /** A line that no record of the chain links to: it was added. */
  RECORD_INSERTED: 'record_inserted',
  /** Two records are in the wrong order in the file. */
  RECORDS_REORDERED: 'records_reordered',
  /** The file ends before the signed last record: records N..M were cut off the end. */
  TRUNCATED: 'truncated',
  /**
   * A broken link the chain alone cannot pin on one record: record N does not hash to the
   * prev of record N+1, which was itself changed (so either N changed too, or N+1's prev
   * field did); or a hash-linked record carries an unexpected seq.
   */
  CHAIN_BROKEN: 'chain_broken',
  /** A checkpoint's (seq, headHash) disagrees with the log: the chain was rewritten or cut. */
  CHECKPOINT_MISMATCH: 'checkpoint_mismatch',
  /** A checkpoint's signature is missing or does not verify. */
  CHECKPOINT_SIGNATURE_INVALID: 'checkpoint_signature_invalid',
  /** A checkpoint file is malformed, of another project, or differs from the manifest's copy. */
  CHECKPOINT_INVALID: 'checkpoint_invalid',
  /** An RFC 3161 receipt is malformed, not granted, over other data, or not from a trusted TSA. */
  TIMESTAMP_INVALID: 'timestamp_invalid',
} as const
export type VerifyCode = (typeof VerifyCode)[keyof typeof VerifyCode]

export const ALL_VERIFY_CODES: readonly VerifyCode[] = Object.values(VerifyCode)

/** One problem found by the verifier. Positions are 1-based lines and byte offsets into the records file. */
export interface Finding {
  code: VerifyCode
  message: string
  /** The record concerned (its seq in the chain), or the first of a range. */
  seq?: number
  /** Last seq of a range (deleted, truncated). */
  seqEnd?: number
  /** 1-based line in the records file. */
  line?: number
  /** Byte offset of that line. */
  offset?: number
  /** A file the finding is about (checkpoint, receipt). */
  file?: string
}
