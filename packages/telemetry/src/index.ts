/** @module @keel/telemetry */
export {}
