import { chmodSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { closeQuietly, invokingUser, openOutputFile, writeAll } from './output-file.js'

const isRoot = process.getuid?.() === 0

describe('openOutputFile (files keel writes as root for the user)', () => {
  const dirs: string[] = []
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'keel-output-'))
    dirs.push(d)
    return d
  }
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })

  it('refuses a symbolic link at the path, and leaves its target alone', () => {
    const d = tmp()
    writeFileSync(join(d, 'victim'), 'precious')
    symlinkSync(join(d, 'victim'), join(d, 'report.json'))
    expect(() => openOutputFile(join(d, 'report.json'), { append: false, what: 'the report' })).toThrow(
      expect.objectContaining({ code: 'ERR_USAGE', message: expect.stringMatching(/cannot write the report .*report\.json: it is a symbolic link/) }),
    )
    expect(readFileSync(join(d, 'victim'), 'utf8')).toBe('precious')
  })

  it('keeps writing to the file it opened when the path is swapped for a link afterwards', () => {
    const d = tmp()
    writeFileSync(join(d, 'victim'), 'precious')
    const path = join(d, 'report.json')
    const fd = openOutputFile(path, { append: false, what: 'the report' })
    linkSync(path, join(d, 'opened')) // a second name for the inode keel opened, to read it back
    unlinkSync(path)
    symlinkSync(join(d, 'victim'), path) // what a hostile agent does during the run
    writeAll(fd, '{"destinations":[]}\n')
    closeQuietly(fd)
    expect(readFileSync(join(d, 'victim'), 'utf8')).toBe('precious')
    expect(readFileSync(join(d, 'opened'), 'utf8')).toBe('{"destinations":[]}\n')
  })

  it('truncates the report and appends to the log', () => {
    const d = tmp()
    writeFileSync(join(d, 'r'), 'old old old')
    writeFileSync(join(d, 'l'), 'line 1\n')
    const r = openOutputFile(join(d, 'r'), { append: false, what: 'the report' })
    const l = openOutputFile(join(d, 'l'), { append: true, what: 'the flow log' })
    writeAll(r, 'new')
    writeAll(l, 'line 2\n')
    closeQuietly(r)
    closeQuietly(l)
    expect(readFileSync(join(d, 'r'), 'utf8')).toBe('new')
    expect(readFileSync(join(d, 'l'), 'utf8')).toBe('line 1\nline 2\n')
  })

  it('reads the invoking user from SUDO_UID/SUDO_GID, not root', () => {
    expect(invokingUser({ SUDO_UID: '1000', SUDO_GID: '1001' })).toEqual({ uid: 1000, gid: 1001 })
    expect(invokingUser({ SUDO_UID: '1000' })).toEqual({ uid: 1000, gid: 1000 })
    expect(invokingUser({ SUDO_UID: '0', SUDO_GID: '0' })).toBeUndefined()
    expect(invokingUser({})).toBeUndefined()
    expect(invokingUser({ SUDO_UID: 'x' })).toBeUndefined()
  })

  it.skipIf(!isRoot)('under sudo, opens with the invoking user’s permissions (a linked directory leads nowhere root-only)', () => {
    const d = tmp()
    chmodSync(d, 0o755)
    const rootOnly = join(d, 'root-only')
    mkdirSync(rootOnly, { mode: 0o700 })
    const nobody = { uid: 65534, gid: 65534 }
    // The user cannot write there, so neither can keel on their behalf.
    expect(() => openOutputFile(join(rootOnly, 'report.json'), { append: false, what: 'the report', owner: nobody })).toThrow(
      expect.objectContaining({ code: 'ERR_USAGE', message: expect.stringMatching(/permission denied for the invoking user \(uid 65534\)/) }),
    )
    expect(() => statSync(join(rootOnly, 'report.json'))).toThrow()
    // Where the user can write, the file is created and is theirs; keel is root again after.
    const userDir = join(d, 'user')
    mkdirSync(userDir, { mode: 0o777 })
    chmodSync(userDir, 0o777)
    const fd = openOutputFile(join(userDir, 'report.json'), { append: false, what: 'the report', owner: nobody })
    closeQuietly(fd)
    expect(statSync(join(userDir, 'report.json')).uid).toBe(65534)
    expect(process.geteuid?.()).toBe(0)
    expect(process.getegid?.()).toBe(0)
  })
})
