/**
 * Chain verification of a records file, with a precise diagnosis when it fails.
 *
 * Fast path: one streaming pass checks every line parses, seqs run 1, 2, 3, … and each
 * `prev` is the hash of the line before. When that holds (and the signed head, if any,
 * matches) we are done.
 *
 * Slow path, only when something is off: a second pass loads seq/prev/hash of every
 * line, then walks the chain *backwards from the trusted head* (the signed manifest's
 * headHash, or the last line of a live log), following each record's `prev` to the line
 * with that hash, wherever it sits in the file. Where a `prev` leads nowhere, the record
 * it should lead to is missing or changed:
 *   - a line claims the missing seq (or sits right where it should and is malformed,
 *     or has a rewritten seq) → that record was changed (`record_changed`);
 *   - nothing claims it → records were deleted (`record_deleted`), or cut off the end
 *     when the gap reaches the signed head (`truncated`).
 * Lines the walk never reaches were inserted (`record_inserted`); records reached out of
 * file order were reordered (`records_reordered`).
 *
 * When the links on both sides of a changed record fail, the chain alone cannot tell
 * whether the record before it changed too or the changed record's own `prev` field did;
 * that link is reported as `chain_broken`, naming the record before. A chain recomputed
 * after an edit has no broken link; the signed head, and checkpoints, catch that.
 */
import { createHash } from 'node:crypto'
import { genesisHash, parseRecordLine, sha256Hex } from './format.js'
import { scanLines } from './lines.js'
import type { TornTail } from './lines.js'
import { VerifyCode } from './codes.js'
import type { Finding } from './codes.js'

/** What a signed manifest commits to. */
export interface ChainExpectation {
  lastSeq: number
  headHash: string
  count: number
}

export interface ChainCheckOptions {
  expect?: ChainExpectation
  /** Read only `[0, end)` (a snapshot taken under the lock). */
  end?: number
  /** Sees every chunk read by the first pass (to copy or hash it). */
  onChunk?: (chunk: Buffer) => void
  /** Seqs whose line hash the caller wants (checkpoint comparison). */
  wantHashes?: ReadonlySet<number>
}

export interface ChainCheckResult {
  /** Complete lines in the file. */
  lines: number
  bytes: number
  /** SHA-256 of all bytes read (records file digest). */
  sha256: string
  /** seq and hash of the last complete, well-formed line (0/genesis when none). */
  lastSeq: number
  headHash: string
  torn?: TornTail
  /** Empty when the chain is intact. Sorted by position in the file. */
  findings: Finding[]
  /** seq → line hash, for the seqs asked for in `wantHashes` that the chain holds. */
  hashes: Map<number, string>
}

/** Checks `path` as the chain of `project`. Never throws for bad content, only for I/O. */
export async function checkChain(path: string, project: string, options: ChainCheckOptions = {}): Promise<ChainCheckResult> {
  const want = options.wantHashes ?? new Set<number>()
  const hashes = new Map<number, string>()
  const digest = createHash('sha256')
  let prev = genesisHash(project)
  let expectSeq = 1
  let clean = true
  let lastSeq = 0
  let headHash = prev
  const scan = await scanLines(
    path,
    (line) => {
      if (!clean) return
      const parsed = parseRecordLine(line)
      if (!parsed.ok || parsed.record.seq !== expectSeq || parsed.record.prev !== prev || parsed.record.project !== project) {
        clean = false
        return
      }
      const h = sha256Hex(line)
      if (want.has(expectSeq)) hashes.set(expectSeq, h)
      lastSeq = expectSeq
      headHash = h
      prev = h
      expectSeq++
    },
    {
      ...(options.end !== undefined ? { end: options.end } : {}),
      onChunk: (chunk) => {
        digest.update(chunk)
        options.onChunk?.(chunk)
      },
    },
  )
  const result: ChainCheckResult = {
    lines: scan.lines,
    bytes: scan.bytes,
    sha256: digest.digest('hex'),
    lastSeq,
    headHash,
    findings: [],
    hashes,
  }
  if (scan.torn) result.torn = scan.torn
  const e = options.expect
  if (clean && e && (e.lastSeq !== lastSeq || e.headHash !== headHash || e.count !== scan.lines)) clean = false
  if (!clean) {
    const data = await loadLines(path, project, scan.lines, options.end)
    const out = diagnose(data, project, e, want)
    result.findings = out.findings
    result.hashes = out.hashes
    result.lastSeq = data.lastSeq
    result.headHash = data.lastHash
  }
  if (scan.torn) {
    result.findings.push({
      code: VerifyCode.TORN_TAIL,
      message: `torn last line: ${scan.torn.length} bytes without a newline at byte ${scan.torn.offset} (line ${scan.torn.line})`,
      line: scan.torn.line,
      offset: scan.torn.offset,
    })
  }
  return result
}

interface Lines {
  n: number
  seq: Float64Array
  hash: Buffer
  prev: Buffer
  offset: Float64Array
  /** Problem per malformed line (bad JSON, wrong types, another project). */
  bad: Map<number, string>
  lastSeq: number
  lastHash: string
}

async function loadLines(path: string, project: string, n: number, end: number | undefined): Promise<Lines> {
  const data: Lines = {
    n,
    seq: new Float64Array(n),
    hash: Buffer.alloc(32 * n),
    prev: Buffer.alloc(32 * n),
    offset: new Float64Array(n),
    bad: new Map(),
    lastSeq: 0,
    lastHash: genesisHash(project),
  }
  await scanLines(
    path,
    (line, offset, lineNo) => {
      const i = lineNo - 1
      if (i >= n) return
      data.offset[i] = offset
      const hex = sha256Hex(line)
      data.hash.write(hex, i * 32, 'hex')
      const parsed = parseRecordLine(line)
      if (!parsed.ok) {
        data.bad.set(i, parsed.problem)
        data.seq[i] = NaN
        return
      }
      const r = parsed.record
      data.seq[i] = r.seq
      data.prev.write(r.prev, i * 32, 'hex')
      if (r.project !== project) data.bad.set(i, `belongs to project ${JSON.stringify(r.project)}`)
      else {
        data.lastSeq = r.seq
        data.lastHash = hex
      }
    },
    end !== undefined ? { end } : {},
  )
  return data
}

interface Node {
  pos: number
  /** The seq this node holds in the chain (a changed record's own seq field may differ). */
  seq: number
  prev: Buffer | undefined
  /** This node was reported changed (so its own `prev` is not to be trusted). */
  changed: boolean
  /** The virtual node after the last record (the signed head, or the end of a live log). */
  virtual: boolean
}

function diagnose(
  d: Lines,
  project: string,
  expect: ChainExpectation | undefined,
  want: ReadonlySet<number>,
): { findings: Finding[]; hashes: Map<number, string> } {
  const { n } = d
  const G = Buffer.from(genesisHash(project), 'hex')
  const visited = new Uint8Array(n)
  const findings: Finding[] = []
  const hashes = new Map<number, string>()
  const chainSeqAt = new Float64Array(n).fill(NaN)

  const hashAt = (i: number) => d.hash.subarray(i * 32, i * 32 + 32)
  const prevAt = (i: number) => (d.bad.has(i) && Number.isNaN(d.seq[i]!) ? undefined : d.prev.subarray(i * 32, i * 32 + 32))
  const key = (h: Buffer) => h.readUIntBE(0, 6)
  // Multimaps as Map<key, position | positions[]>: almost every key has one position, and
  // a million one-element arrays would cost more than the rest of the diagnosis.
  type Multi = Map<number, number | number[]>
  const add = (m: Multi, k: number, i: number) => {
    const v = m.get(k)
    if (v === undefined) m.set(k, i)
    else if (typeof v === 'number') m.set(k, [v, i])
    else v.push(i)
  }
  const byHash: Multi = new Map()
  const bySeq: Multi = new Map()
  for (let i = 0; i < n; i++) {
    add(byHash, key(hashAt(i)), i)
    if (!d.bad.has(i)) add(bySeq, d.seq[i]!, i)
  }
  /** Unvisited position (ascending list) nearest before `before`, else the last one after it. */
  const pick = (v: number | number[] | undefined, ok: (i: number) => boolean, before: number): number => {
    if (v === undefined) return -1
    if (typeof v === 'number') return !visited[v] && ok(v) ? v : -1
    let after = -1
    for (let j = v.length - 1; j >= 0; j--) {
      const i = v[j]!
      if (visited[i] || !ok(i)) continue
      if (i < before) return i
      if (after === -1) after = i
    }
    return after
  }
  const positions = (v: number | number[] | undefined): number[] => (v === undefined ? [] : typeof v === 'number' ? [v] : v)
  const lookup = (h: Buffer, before: number) => pick(byHash.get(key(h)), (i) => hashAt(i).equals(h), before)
  const claimant = (seq: number, before: number) => pick(bySeq.get(seq), () => true, before)
  const where = (i: number) => ({ line: i + 1, offset: d.offset[i]! })
  const lineOf = (node: Node) => (node.pos < n ? `line ${node.pos + 1}` : 'the end of the file')
  /** Visited positions in walk order: strictly descending chain seq. */
  const walk: number[] = []
  const walkIndex = new Int32Array(n).fill(-1)
  const visit = (i: number, seq: number) => {
    visited[i] = 1
    chainSeqAt[i] = seq
    walkIndex[i] = walk.length
    walk.push(i)
    if (want.has(seq)) hashes.set(seq, hashAt(i).toString('hex'))
  }
  /** The nearest unvisited well-formed line before `pos` (else after) claiming a seq below `seq`. */
  const nearestBelow = (seq: number, pos: number): number => {
    for (let i = Math.min(pos, n) - 1; i >= 0; i--) if (!visited[i] && !d.bad.has(i) && d.seq[i]! < seq) return i
    for (let i = pos + 1; i < n; i++) if (!visited[i] && !d.bad.has(i) && d.seq[i]! < seq) return i
    return -1
  }

  // Start from a virtual node after the last record: it "links" to the signed head hash,
  // or, for a live log without a manifest, to the last well-formed line.
  let node: Node
  if (expect) {
    node = { pos: n, seq: expect.lastSeq + 1, prev: Buffer.from(expect.headHash, 'hex'), changed: false, virtual: true }
  } else {
    let last = n - 1
    while (last >= 0 && d.bad.has(last)) last--
    node =
      last >= 0
        ? { pos: n, seq: d.seq[last]! + 1, prev: hashAt(last), changed: false, virtual: true }
        : { pos: n, seq: 1, prev: G, changed: false, virtual: true }
  }

  for (let iter = 0; iter <= n + 1; iter++) {
    const exp = node.seq - 1
    if (node.prev && node.prev.equals(G)) {
      if (exp !== 0 && !node.changed && !node.virtual) {
        findings.push({
          code: VerifyCode.RECORD_CHANGED,
          seq: node.seq,
          ...where(node.pos),
          message: `record ${node.seq} (line ${node.pos + 1}) links to the genesis hash but is not record 1: its prev or seq was changed`,
        })
      }
      break
    }
    if (exp < 1) {
      if (!node.changed && !node.virtual) {
        findings.push({
          code: VerifyCode.RECORD_CHANGED,
          seq: node.seq,
          ...where(node.pos),
          message: `record 1 (line ${node.pos + 1}): prev is not the genesis hash of project ${project} (changed, or taken from another chain)`,
        })
      }
      break
    }
    if (node.prev) {
      const p = lookup(node.prev, node.pos)
      if (p >= 0) {
        const ps = d.seq[p]!
        if (ps < exp) {
          findings.push({
            code: VerifyCode.RECORD_DELETED,
            seq: ps + 1,
            seqEnd: exp,
            ...where(p + 1 < n ? p + 1 : p),
            message: `${range(ps + 1, exp)} missing: ${lineOf(node)} links straight to record ${ps} (line ${p + 1})`,
          })
        } else if (ps !== exp) {
          findings.push({
            code: VerifyCode.CHAIN_BROKEN,
            seq: ps,
            ...where(p),
            message: `record at line ${p + 1} is linked as record ${exp} but says seq ${ps}`,
          })
        }
        visit(p, ps < exp ? ps : exp)
        node = { pos: p, seq: ps < exp ? ps : exp, prev: prevAt(p), changed: false, virtual: false }
        continue
      }
    }
    // The record before `node` is not in the file as written: changed, or deleted.
    let c = claimant(exp, node.pos)
    let detail = ''
    if (c < 0) {
      const q = node.pos - 1
      if (q >= 0 && !visited[q]) {
        if (d.bad.has(q)) {
          c = q
          detail = ` (${d.bad.get(q)})`
        } else {
          const qPrev = prevAt(q)!
          const t = lookup(qPrev, q)
          if ((exp === 1 && qPrev.equals(G)) || (t >= 0 && d.seq[t] === exp - 1)) {
            c = q
            detail = ` (its seq field says ${d.seq[q]})`
          }
        }
      }
    } else if (d.bad.has(c)) {
      detail = ` (${d.bad.get(c)})`
    }
    if (c >= 0) {
      if (node.prev === undefined) {
        // node is malformed: we cannot tell whether its predecessor is intact; move on.
      } else if (node.changed) {
        // Both links around `node` fail. The chain alone cannot say whether record `exp`
        // changed too or node's own prev field did: report the broken link as such.
        findings.push({
          code: VerifyCode.CHAIN_BROKEN,
          seq: exp,
          ...where(c),
          message: `the link from record ${exp} (line ${c + 1}) to the changed record ${node.seq} is broken too: record ${exp} was changed as well, or record ${node.seq}'s prev field was`,
        })
      } else {
        findings.push({
          code: VerifyCode.RECORD_CHANGED,
          seq: exp,
          ...where(c),
          message: node.virtual
            ? `record ${exp} (line ${c + 1}) differs from the signed head record${detail}`
            : `record ${exp} (line ${c + 1}) was changed: its hash is not the prev of record ${node.seq} (${lineOf(node)})${detail}`,
        })
      }
      visit(c, exp)
      const flagged = node.prev !== undefined && !node.changed
      node = { pos: c, seq: exp, prev: prevAt(c), changed: flagged || prevAt(c) === undefined, virtual: false }
      continue
    }
    const t = nearestBelow(exp, node.pos)
    const from = t >= 0 ? d.seq[t]! + 1 : 1
    findings.push({
      code: node.virtual && expect ? VerifyCode.TRUNCATED : VerifyCode.RECORD_DELETED,
      seq: from,
      seqEnd: exp,
      line: node.pos + 1,
      ...(node.pos < n ? { offset: d.offset[node.pos]! } : {}),
      message:
        node.virtual && expect
          ? `truncated: ${range(from, exp)} missing at the end (the signed head is record ${exp})`
          : `${range(from, exp)} missing before ${lineOf(node)}`,
    })
    if (t < 0) break
    visit(t, d.seq[t]!)
    node = { pos: t, seq: d.seq[t]!, prev: prevAt(t), changed: false, virtual: false }
  }

  findings.reverse()
  // An exact copy of a chain record: call the later of the two the inserted one, when the
  // earlier sits just as well in chain order (the bytes are the same, so both readings hold).
  const unvisited: number[] = []
  for (let i = 0; i < n; i++) if (!visited[i]) unvisited.push(i)
  const twinOf = (i: number): number | undefined => {
    const h = hashAt(i)
    return positions(byHash.get(key(h))).find((x) => x !== i && visited[x] && hashAt(x).equals(h))
  }
  for (let u = 0; u < unvisited.length; u++) {
    const i = unvisited[u]!
    const j = twinOf(i)
    if (j === undefined || j < i) continue
    const w = walkIndex[j]!
    const pred = walk[w + 1] // the chain predecessor (walk order is descending)
    if (pred !== undefined && pred > i) continue
    visited[i] = 1
    visited[j] = 0
    chainSeqAt[i] = chainSeqAt[j]!
    chainSeqAt[j] = NaN
    walk[w] = i
    walkIndex[i] = w
    walkIndex[j] = -1
    unvisited[u] = j
  }
  unvisited.sort((a, b) => a - b)
  for (const i of unvisited) {
    const dup = d.bad.has(i) ? undefined : twinOf(i)
    if (dup !== undefined) {
      findings.push({
        code: VerifyCode.RECORD_INSERTED,
        ...where(i),
        seq: d.seq[i]!,
        message: `line ${i + 1} is a second copy of record ${chainSeqAt[dup]} (line ${dup + 1}): it was inserted`,
      })
      continue
    }
    const bad = d.bad.get(i)
    findings.push(
      bad !== undefined
        ? { code: VerifyCode.RECORD_MALFORMED, ...where(i), message: `line ${i + 1} is not a record of ${project}: ${bad}` }
        : {
            code: VerifyCode.RECORD_INSERTED,
            ...where(i),
            seq: d.seq[i]!,
            message: `line ${i + 1} (claims seq ${d.seq[i]}) is not part of the chain: it was inserted`,
          },
    )
  }
  // Reordering: chain order (ascending seq: the walk reversed) against file order.
  for (let k = walk.length - 1; k > 0; k--) {
    const a = walk[k]!
    const b = walk[k - 1]!
    if (b < a) {
      findings.push({
        code: VerifyCode.RECORDS_REORDERED,
        seq: chainSeqAt[b]!,
        ...where(b),
        message: `records out of order: record ${chainSeqAt[b]} (line ${b + 1}) comes before record ${chainSeqAt[a]} (line ${a + 1})`,
      })
    }
  }
  findings.sort((x, y) => (x.line ?? Infinity) - (y.line ?? Infinity))
  return { findings, hashes }
}

function range(a: number, b: number): string {
  return a === b ? `record ${a}` : `records ${a}..${b}`
}
