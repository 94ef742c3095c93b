/** @module @keel/proxy */
export {}
