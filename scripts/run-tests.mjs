#!/usr/bin/env node
// Runs one test suite with Node's test runner: `unit`, `integration` or `harness`.
// Node 20's `--test` takes no globs and finds only .js in directories, so the .test.ts files
// are listed here. unit: test/unit, no root, files in parallel. integration: test/integration,
// one file at a time (they share the host's kernel: netns, bridges, cgroups). harness: the tests
// of the test infrastructure itself (test/harness/*.test.ts: image builder, leak checker,
// dockerd harness), run like integration files. Extra arguments pass through to node --test.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [suite, ...rest] = process.argv.slice(2);
if (suite !== 'unit' && suite !== 'integration' && suite !== 'harness') {
  console.error('usage: run-tests.mjs unit|integration|harness [node --test args] [files...]');
  process.exit(2);
}

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out.sort();
}

const explicit = rest.filter((a) => a.endsWith('.test.ts'));
const flags = rest.filter((a) => !a.endsWith('.test.ts'));
const files = explicit.length > 0 ? explicit : find(path.join(root, 'test', suite));
if (files.length === 0) {
  console.error(`no ${suite} test files found`);
  process.exit(1);
}
// An emulated guest (scripts/vm) runs 5-20x slower: its per-test limit grows with it.
const slowdown = Math.max(1, Number(process.env.ESB_TEST_SLOWDOWN ?? '1') || 1);
const args = [
  '--import',
  'tsx',
  '--test',
  `--test-concurrency=${suite === 'unit' ? 2 : 1}`,
  `--test-timeout=${Math.round((suite === 'unit' ? 60_000 : 600_000) * slowdown)}`,
  ...flags,
  ...files,
];
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
