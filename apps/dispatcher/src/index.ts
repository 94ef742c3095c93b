/** @module @keel/dispatcher */
export {}
