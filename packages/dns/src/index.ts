/** @module @keel/dns */
export {}
