import { defineConfig } from 'vitest/config'

// Two projects: `unit` runs anywhere, beside the code it tests (src/**/*.test.ts);
// `privileged` needs root and network namespaces (test/ and packages/*/test/), runs one
// file at a time, and skips with a stated reason when not root.
export default defineConfig({
  test: {
    clearMocks: true,
    restoreMocks: true,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'apps/*/src/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'privileged',
          include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts'],
          exclude: ['**/node_modules/**'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
})
