/**
 * The agent as a process refuses bad configuration: each invalid variable stops start-up with a
 * non-zero exit (2) and a stderr line naming the variable, before any backend is touched. Also
 * the CLI's usage paths. Runs `node --import tsx src/main.ts` (no build needed).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

describe('invalid configuration stops the agent, naming the variable', { concurrency: 6 }, () => {
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

  const cases: [string, () => Record<string, string>, string][] = [
    ['PORT=abc', () => ({ PORT: 'abc' }), 'PORT'],
    ['PORT=70000', () => ({ PORT: '70000' }), 'PORT'],
    ['AGENT_RUNTIME=podman', () => ({ AGENT_RUNTIME: 'podman' }), 'AGENT_RUNTIME'],
    ['IMAGE_PULL_POLICY=sometimes', () => ({ IMAGE_PULL_POLICY: 'sometimes' }), 'IMAGE_PULL_POLICY'],
    ['AGENT_INVOKE_MAX_RESPONSE_SIZE=-1', () => ({ AGENT_INVOKE_MAX_RESPONSE_SIZE: '-1' }), 'AGENT_INVOKE_MAX_RESPONSE_SIZE'],
    ['AGENT_INVOKE_DEFAULT_TIMEOUT_MS=soon', () => ({ AGENT_INVOKE_DEFAULT_TIMEOUT_MS: 'soon' }), 'AGENT_INVOKE_DEFAULT_TIMEOUT_MS'],
    ['AGENT_GRPC_TLS_DISABLED=maybe', () => ({ AGENT_GRPC_TLS_DISABLED: 'maybe' }), 'AGENT_GRPC_TLS_DISABLED'],
    ['AGENT_GRPC_REFLECTION=perhaps', () => ({ AGENT_GRPC_REFLECTION: 'perhaps' }), 'AGENT_GRPC_REFLECTION'],
    ['CNI_SUBNET=10.0.0.0/40', () => ({ CNI_SUBNET: '10.0.0.0/40' }), 'CNI_SUBNET'],
    ['CNI_GW_IP=10.88.0.300', () => ({ CNI_GW_IP: '10.88.0.300' }), 'CNI_GW_IP'],
    ['AGENT_LOG_FORMAT=xml', () => ({ AGENT_LOG_FORMAT: 'xml' }), 'AGENT_LOG_FORMAT'],
    ['AGENT_LOG_FORMAT=pretty without pino-pretty installed', () => ({ AGENT_LOG_FORMAT: 'pretty' }), 'AGENT_LOG_FORMAT'],
    ['AGENT_LOG_LEVEL=loud', () => ({ AGENT_LOG_LEVEL: 'loud' }), 'AGENT_LOG_LEVEL'],
    ['AGENT_SHUTDOWN_POLICY=nuke', () => ({ AGENT_SHUTDOWN_POLICY: 'nuke' }), 'AGENT_SHUTDOWN_POLICY'],
    ['AGENT_METRICS_PORT=-5', () => ({ AGENT_METRICS_PORT: '-5' }), 'AGENT_METRICS_PORT'],
    ['CONTAINERD_SOCKET=relative/path', () => ({ CONTAINERD_SOCKET: 'relative/path' }), 'CONTAINERD_SOCKET'],
    ['AGENT_GRPC_CERT_PATH missing, TLS on', () => ({ AGENT_GRPC_CERT_PATH: path.join(tmp, 'missing.crt') }), 'AGENT_GRPC_CERT_PATH'],
    ['AGENT_GRPC_KEY_PATH missing, TLS on', () => ({ AGENT_GRPC_KEY_PATH: path.join(tmp, 'missing.key') }), 'AGENT_GRPC_KEY_PATH'],
    ['AGENT_GRPC_CA_CERT_PATH a directory, TLS on', () => ({ AGENT_GRPC_CA_CERT_PATH: tmp }), 'AGENT_GRPC_CA_CERT_PATH'],
    [
      'AGENT_GRPC_CERT_PATH not a certificate, TLS on',
      () => {
        const junk = path.join(tmp, 'junk.crt');
        writeFileSync(junk, 'hello\n');
        return { AGENT_GRPC_CERT_PATH: junk };
      },
      'AGENT_GRPC_CERT_PATH',
    ],
    ['AGENT_GRPC_KEY_PATH not the certificate’s key, TLS on', () => ({ AGENT_GRPC_KEY_PATH: certs!.client.keyPath }), 'AGENT_GRPC_KEY_PATH'],
  ];

  for (const [name, over, variable] of cases) {
    test(`${name} → exit 2, stderr names ${variable}`, async () => {
      const r = await run(['src/main.ts'], { ...base(), ...over() });
      assert.equal(r.signal, null, `killed: ${r.stderr}`);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^esb-agent: invalid configuration: ${variable}: `, 'm'));
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    });
  }

  test('a valid configuration with no containerd → exit 1 "start-up failed", nothing left listening', async () => {
    const r = await run(['src/main.ts'], { ...base(), AGENT_GRPC_TLS_DISABLED: '1' }, 60_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^esb-agent: start-up failed: the containerd runtime failed to start/m);
    assert.match(r.stdout, /runtime failed to start/);
  });
});

describe('command line', () => {
  const env = (): Record<string, string> => ({ PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir() });
  const cli = (args: string[]): Promise<Run> => run(['test/helpers/cli-entry.ts', ...args], env());

  test('--help → usage on stdout, exit 0', async () => {
    const r = await cli(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: esb-agent \[command\]/);
    assert.match(r.stdout, /serve/);
  });
  test('an unknown command → usage on stderr, exit 64', async () => {
    const r = await cli(['frobnicate']);
    assert.equal(r.code, 64);
    assert.match(r.stderr, /unknown command "frobnicate"/);
    assert.match(r.stderr, /usage: esb-agent/);
  });
  test('serve with extra arguments → exit 64', async () => {
    const r = await cli(['serve', 'now']);
    assert.equal(r.code, 64);
  });
  test('--version prints the package version', async () => {
    const r = await cli(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^esb-agent \d+\.\d+\.\d+/);
  });
});
