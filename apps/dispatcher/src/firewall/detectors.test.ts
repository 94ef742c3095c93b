import { describe, expect, it } from 'vitest'
import { BASELINE_DETECTOR_IDS, baselineDetectors, compileFirewall, scanBody } from './detectors.js'

const scan = (text: string) => scanBody({ messages: [{ role: 'user', content: text }] }, baselineDetectors())?.detector

describe('baseline detectors', () => {
  it('are the documented five', () => {
    expect(baselineDetectors().map((d) => d.id)).toEqual([...BASELINE_DETECTOR_IDS])
  })

  it.each([
    ['CUI', 'cui_marking'],
    ['(CUI) paragraph', 'cui_marking'],
    ['CUI//SP-EXPT', 'cui_marking'],
    ['This contains Controlled Unclassified Information', 'cui_marking'],
    ['TOP SECRET//SI//NOFORN', 'control_marking'],
    ['marked FOUO', 'control_marking'],
    ['For Official Use Only'.toUpperCase(), 'control_marking'],
    ['ITAR controlled', 'itar_ear'],
    ['classified EAR99', 'itar_ear'],
    ['ECCN: 3A001', 'itar_ear'],
    ['subject to the Export Administration Regulations', 'itar_ear'],
    ['-----BEGIN RSA PRIVATE KEY-----', 'private_key'],
    ['-----BEGIN PRIVATE KEY-----', 'private_key'],
    ['-----BEGIN PGP PRIVATE KEY BLOCK-----', 'private_key'],
    ['sk-proj-abcdefghijklmnopqrstuvwxyz012345', 'api_key'],
    ['sk-ant-api03-abcdefghijklmnopqrstuvwxyz', 'api_key'],
    ['ghp_' + 'a'.repeat(36), 'api_key'],
    ['AKIAIOSFODNN7EXAMPLE', 'api_key'],
    ['xoxb-1234567890-abcdef', 'api_key'],
  ])('%s → %s', (text, id) => {
    expect(scan(text)).toBe(id)
  })

  it.each(['the cui bono question', 'per cui (Italian)', 'a secret recipe', 'earring', 'BEGIN PUBLIC KEY', 'sk-short', 'mask-ant'])('does not fire on %s', (text) => {
    expect(scan(text)).toBeUndefined()
  })

  it('scans nested strings (tool arguments, system prompts) and normalizes full-width forms', () => {
    expect(scanBody({ system: [{ type: 'text', text: 'x' }], tools: [{ input: { note: 'ＣＵＩ' } }] }, baselineDetectors())?.detector).toBe('cui_marking')
  })

  it('project additions stack on the baseline', () => {
    const detectorsFor = compileFirewall({ detectors: [{ id: 'global', pattern: /GLOBALWORD/ }], projects: { apollo: [{ id: 'code', pattern: /NIGHTJAR/ }] } })
    expect(detectorsFor('apollo').map((d) => d.id)).toEqual([...BASELINE_DETECTOR_IDS, 'global', 'code'])
    expect(detectorsFor('other').map((d) => d.id)).toEqual([...BASELINE_DETECTOR_IDS, 'global'])
  })
})
