#!/usr/bin/env node
// `npm run check`: the fast pre-commit check, no root needed. gen:check first (2 s), then lint,
// format check, typecheck and the unit suite side by side: they are independent, and run one after another
// they take about three minutes on a busy 2-CPU machine. Each step's output is printed when it
// ends (never interleaved), then a summary; the exit code is 1 if any step failed.
//
// eslint keeps a cache (in the temp dir, per checkout and user) so that a re-run lints only the
// files that changed. Type-aware rules can then miss a finding in an unchanged file caused by a
// type changed elsewhere; `npm run lint` and `npm test` always lint everything, without a cache.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const eslintCache = path.join(
  os.tmpdir(),
  `esb-agent-eslintcache-${os.userInfo().uid}-${createHash('sha256').update(root).digest('hex').slice(0, 12)}`,
);

/** Runs one step, collecting its output; resolves with its result. */
function run(name, cmd, args) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => out.push(d));
    child.once('error', (err) => {
      out.push(Buffer.from(`${String(err)}\n`));
    });
    child.once('close', (code, signal) => {
      const result = {
        name,
        ok: code === 0,
        code: code ?? signal,
        seconds: (Date.now() - t0) / 1000,
        output: Buffer.concat(out).toString('utf8'),
      };
      process.stdout.write(
        `\n===== ${name}: ${result.ok ? 'ok' : `FAILED (${result.code})`} in ${result.seconds.toFixed(1)} s\n${result.output}`,
      );
      resolve(result);
    });
  });
}

const t0 = Date.now();
const results = [await run('gen:check', 'bash', ['scripts/gen-types.sh', '--check'])];
results.push(
  ...(await Promise.all([
    run('lint', bin('eslint'), ['--cache', '--cache-strategy', 'content', '--cache-location', eslintCache, '.']),
    run('format', bin('prettier'), ['--check', '--log-level', 'warn', '**/*.{ts,mjs,js}']),
    run('typecheck', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']),
    run('unit', process.execPath, ['scripts/run-tests.mjs', 'unit', '--test-reporter=dot']),
  ])),
);
process.stdout.write(`\n===== check: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
for (const r of results) process.stdout.write(`  ${r.ok ? 'ok    ' : 'FAILED'} ${r.name} (${r.seconds.toFixed(1)} s)\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
