/** @module @keel/cli: the `keel` command. */
export { main, buildProgram, EXIT_USAGE } from './main.js'
