/**
 * The agent refuses bad configuration before touching any backend: each invalid variable makes
 * start-up fail with a ConfigError naming it, which the process turns into exit 2 and one stderr
 * line (main.ts `startupExit`); any other start-up failure is exit 1. Also the CLI's usage paths.
 * In-process: `startAgent` and `runCli` are called directly. The real process exit is checked
 * by test/integration/config-exit.test.ts (two spawned cases).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from '../../src/cli.js';
import { startAgent, startupExit } from '../../src/main.js';
import { createTestCerts, type TestCerts } from '../helpers/certs.js';
import { FakeRuntime } from '../helpers/fake-runtime.js';

/** A pino destination that drops every line. */
const quiet = { write: (): void => undefined };

/** The exit code and stderr line start-up would end the process with. */
async function startupOutcome(
  env: Record<string, string>,
  runtime = new FakeRuntime(),
): Promise<{ code: number; line: string; runtime: FakeRuntime }> {
  try {
    // The pretty format is only tried on the default destination (stdout), as in production.
    const agent = await startAgent(env, { runtime, logDestination: env['AGENT_LOG_FORMAT'] === 'pretty' ? undefined : quiet });
    await agent.stop();
    return { code: 0, line: '', runtime };
  } catch (err) {
    return { ...startupExit(err), runtime };
  }
}

describe('invalid configuration stops the agent, naming the variable', () => {
  let tmp = '';
  let certs: TestCerts | undefined;
  after(() => {
    certs?.remove();
    if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
  });
  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-cfg-'));
    certs = createTestCerts();
  });

  /** A configuration that would pass, pointing at nothing real (nothing is reached before the error). */
  const base = (): Record<string, string> => ({
    HOME: tmp,
    PORT: '0',
    AGENT_METRICS_PORT: '0',
    AGENT_GRPC_ADDRESS: '127.0.0.1',
    AGENT_METRICS_ADDRESS: '127.0.0.1',
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
    [
      'AGENT_GRPC_KEY_PATH not the certificate’s key, TLS on',
      () => ({ AGENT_GRPC_KEY_PATH: certs!.client.keyPath }),
      'AGENT_GRPC_KEY_PATH',
    ],
  ];

  for (const [name, over, variable] of cases) {
    test(`${name} → exit 2, one stderr line naming ${variable}, the runtime never started`, async () => {
      const r = await startupOutcome({ ...base(), ...over() });
      assert.equal(r.code, 2, r.line);
      assert.match(r.line, new RegExp(`^esb-agent: invalid configuration: ${variable}: `));
      assert.equal(r.line.split('\n').length, 2, `one line: ${r.line}`);
      assert.ok(r.line.endsWith('\n'));
      assert.equal(r.runtime.started, false, 'the backend was touched before the configuration was checked');
    });
  }

  test('the base configuration itself starts (so each case above fails only for its variable)', async () => {
    const r = await startupOutcome(base());
    assert.equal(r.code, 0, r.line);
    assert.equal(r.runtime.started, true);
  });

  test('a runtime that cannot start → exit 1 "start-up failed", the runtime closed', async () => {
    const runtime = new FakeRuntime();
    runtime.start = () => Promise.reject(new Error('containerd unreachable at /nowhere.sock'));
    const r = await startupOutcome({ ...base(), AGENT_GRPC_TLS_DISABLED: '1' }, runtime);
    assert.equal(r.code, 1, r.line);
    assert.match(r.line, /^esb-agent: start-up failed: the containerd runtime failed to start: containerd unreachable/);
    assert.equal(runtime.closed, true);
  });
});

describe('command line', () => {
  /** Runs the CLI in-process, capturing what it writes to stdout and stderr. */
  async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const out = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    process.stdout.write = (chunk: string | Uint8Array): boolean => {
      stdout += chunk.toString();
      return true;
    };
    process.stderr.write = (chunk: string | Uint8Array): boolean => {
      stderr += chunk.toString();
      return true;
    };
    try {
      const code = await runCli(args);
      return { code, stdout, stderr };
    } finally {
      process.stdout.write = out;
      process.stderr.write = err;
    }
  }

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
    assert.match(r.stderr, /serve takes no arguments/);
  });
  test('--version prints the package version', async () => {
    const r = await cli(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^esb-agent \d+\.\d+\.\d+/);
  });
});
