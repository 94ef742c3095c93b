/** @module @keel/audit/testing: helpers for tests of code that uses the audit log (a local RFC 3161 TSA). */
export { hasOpenssl, makeTsaPki, startTestTsa } from './tsa-server.js'
export type { TestTsa } from './tsa-server.js'
