/** @module @keel/sandbox */
export {}
