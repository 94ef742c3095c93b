/** keel's own exit codes. An agent's exit code passes through `keel run` unchanged. */
/** Usage errors and invalid input (flags, policy files). */
export const EXIT_USAGE = 2
/** `keel run` could not start the sandbox (not root, no nftables, …), as `docker run` uses 125. */
export const EXIT_SANDBOX_FAILED = 125
/** The agent's command is not executable. */
export const EXIT_NOT_EXECUTABLE = 126
/** The agent's command was not found. */
export const EXIT_COMMAND_NOT_FOUND = 127
