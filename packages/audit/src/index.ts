/** @module @keel/audit */
export {}
