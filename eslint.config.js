// ESLint flat config: recommended + typescript-eslint strict/stylistic with type information.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

// Layers (docs/design.md#layers, CONTRIBUTING.md#layers): which folders of src/ a folder may not
// import. Imports are relative, so a folder is matched as `../` (any depth) + its name; a
// file matches the blocks of its folder. Later blocks replace earlier ones for the same rule,
// so every block repeats the rule that only the CLI imports cli/.
const folder = (names) => `^(\\.\\./)+(${names.join('|')})(/|\\.js$|$)`;
const noCli = { regex: folder(['cli']), message: 'Only src/cli/ and src/cli.ts import cli/ (the CLI sits on top of everything).' };
const forbid = (names, why) => ({ regex: folder(names), message: why });
const layer = (files, ...patterns) => ({
  files,
  rules: { 'no-restricted-imports': ['error', { patterns: [noCli, ...patterns] }] },
});
const LEAVES = ['runtime', 'api', 'cli', 'proxy', 'netfilter', 'network', 'cni', 'config', 'registry', 'worker', 'cgroups', 'concurrency'];
const layerRules = [
  layer(['src/**/*.ts'], { regex: '^\\./cli(/|$)', message: noCli.message }),
  { files: ['src/cli/**/*.ts', 'src/cli.ts'], rules: { 'no-restricted-imports': 'off' } },
  // Generic primitives and runtime-neutral homes: nothing above them.
  layer(
    ['src/concurrency/**/*.ts'],
    forbid(
      LEAVES.filter((n) => n !== 'concurrency'),
      'concurrency/ holds generic primitives: it imports only errors.ts.',
    ),
  ),
  layer(
    ['src/worker/**/*.ts'],
    forbid(
      LEAVES.filter((n) => n !== 'worker'),
      'worker/ (naming, limits, CPU rule, seccomp) is runtime-neutral: it imports only leaf modules.',
    ),
  ),
  layer(
    ['src/registry/**/*.ts'],
    forbid(
      ['runtime', 'api', 'cli', 'proxy', 'netfilter', 'network', 'cni', 'config'],
      'registry/ is shared by both runtimes and read by config/: it imports nothing above it (worker/safe-name.ts is fine).',
    ),
  ),
  layer(
    ['src/cni/**/*.ts'],
    forbid(
      ['runtime', 'api', 'cli', 'proxy', 'netfilter', 'network', 'config', 'registry'],
      'cni/ is a pure CNI layer: no agent config (that is network/), no runtime, no API.',
    ),
  ),
  layer(
    ['src/config/**/*.ts'],
    forbid(
      ['runtime', 'api', 'cli', 'proxy', 'netfilter', 'network', 'cni'],
      'config/ sits below the runtimes and the API: take shared rules from worker/ or registry/.',
    ),
  ),
  layer(
    ['src/network/**/*.ts', 'src/netfilter/**/*.ts', 'src/cgroups/**/*.ts', 'src/proxy/**/*.ts'],
    forbid(['runtime', 'api', 'cli'], 'This layer sits below the runtimes and the API.'),
  ),
  layer(['src/api/**/*.ts'], {
    regex: '^(\\.\\./)+runtime/(containerd|docker)(/|$)',
    message: 'api/ talks to a runtime through runtime/runtime.ts only.',
  }),
  layer(['src/runtime/**/*.ts'], forbid(['api', 'cli', 'proxy'], 'The runtimes sit below the API and the invoke proxy.')),
  layer(['src/runtime/docker/**/*.ts'], forbid(['api', 'cli', 'proxy'], 'The runtimes sit below the API and the invoke proxy.'), {
    regex: '^(\\.\\./)+(runtime/)?containerd(/|\\.js$|$)',
    message:
      'runtime/docker/ imports nothing from runtime/containerd/: shared pieces live in registry/, worker/, concurrency/ or runtime/.',
  }),
  layer(['src/runtime/containerd/**/*.ts'], forbid(['api', 'cli', 'proxy'], 'The runtimes sit below the API and the invoke proxy.'), {
    regex: '^(\\.\\./)+(runtime/)?docker(/|\\.js$|$)',
    message: 'runtime/containerd/ imports nothing from runtime/docker/.',
  }),
];

export default defineConfig(
  { ignores: ['.tmp/**', 'dist/**', 'src/gen/**', 'node_modules/**', 'proto/**', 'bin/**', 'eslint.config.js'] },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  tseslint.configs.stylisticTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
    },
  },
  ...layerRules,
  // Plain-JS scripts (.mjs): no type information, so the type-checked rules are off; Node's globals.
  {
    files: ['**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
);
