/** @module @keel/nftables-napi */
export {}
