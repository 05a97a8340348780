/**
 * The agent as a process: invalid configuration exits 2 with one stderr line naming the
 * variable, and a start-up failure (no containerd) exits 1. Runs `node --import tsx src/main.ts`
 * (no build needed). Every variable, and the CLI's usage paths, are checked in-process by
 * test/unit/config-exit.test.ts; these two cases check the real exit path.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PROJECT_ROOT } from '../../src/paths.js';
import { createTestCerts, type TestCerts } from '../helpers/certs.js';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const running = new Set<ReturnType<typeof spawn>>();

/** Runs node with tsx and `args` in the project root, with exactly `env`; kills it after `timeoutMs`. */
function run(args: readonly string[], env: Record<string, string>, timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('invalid configuration stops the agent, naming the variable', { concurrency: 2 }, () => {
  let tmp = '';
  let certs: TestCerts | undefined;
  after(() => {
    for (const c of running) c.kill('SIGKILL');
    certs?.remove();
    if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
  });
  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-cfg-'));
    certs = createTestCerts();
  });

  /** A configuration that would pass, pointing at nothing real (nothing is reached before the error). */
  const base = (): Record<string, string> => ({
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: tmp,
    PORT: '0',
    AGENT_METRICS_PORT: '0',
    CONTAINERD_SOCKET: path.join(tmp, 'no-containerd.sock'),
    CNI_CONF_DIR: path.join(tmp, 'cni'),
    CNI_NET_DIR: path.join(tmp, 'ipam'),
    AGENT_STATE_DIR: path.join(tmp, 'state'),
    AGENT_GRPC_CERT_PATH: certs!.server.certPath,
    AGENT_GRPC_KEY_PATH: certs!.server.keyPath,
    AGENT_GRPC_CA_CERT_PATH: certs!.caPath,
  });

  // Every invalid variable is checked in-process by test/unit/config-exit.test.ts; this one case
  // checks that the process really exits 2 with the one stderr line.
  test('PORT=abc → the process exits 2, one stderr line naming PORT', async () => {
    const r = await run(['src/main.ts'], { ...base(), PORT: 'abc' });
    assert.equal(r.signal, null, `killed: ${r.stderr}`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^esb-agent: invalid configuration: PORT: /m);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  });

  test('a valid configuration with no containerd → exit 1 "start-up failed", nothing left listening', async () => {
    const r = await run(['src/main.ts'], { ...base(), AGENT_GRPC_TLS_DISABLED: '1' }, 60_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^esb-agent: start-up failed: the containerd runtime failed to start/m);
    assert.match(r.stdout, /runtime failed to start/);
  });
});
