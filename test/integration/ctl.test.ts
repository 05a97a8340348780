/**
 * `esb-agent ctl` as a child process against a real agent (private containerd, registry and
 * CNI network): every subcommand with table and JSON output, the exit codes scripts rely on
 * (0, 64, 10 + gRPC code), stdin payloads, and mTLS with and without a client certificate.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT } from '../../src/paths.js';
import { freePort } from '../harness/process.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import { createTestCerts, type TestCerts } from '../helpers/certs.js';

const ENTRY = path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `esb-agent <args>` from source; `stdin` is written to it. Killed after 2 min. */
function cli(args: readonly string[], stdin = ''): Promise<Run> {
  // Not a test file of this run, and no ESB_AGENT_* defaults from the caller's shell.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT' && !k.startsWith('ESB_AGENT_')));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], { cwd: PROJECT_ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

test(
  'ctl drives every RPC against a running agent, in table and JSON, with script-friendly exit codes',
  { timeout: 8 * 60_000 },
  async (t) => {
    let stack: TestStack | undefined = undefined;
    let certs: TestCerts | undefined = undefined;
    t.after(async () => {
      await stack?.stop();
      certs?.remove();
    });
    stack = await startStack();
    const owner = `ctl-${stack.envName}`;
    const agentArgs = (): string[] => ['ctl', '--addr', `127.0.0.1:${stack.agent!.grpcPort}`, '--insecure', '--owner', owner];
    const ctl = (args: readonly string[], stdin?: string): Promise<Run> => cli([...agentArgs(), ...args], stdin);

    // ensure (JSON), then list in both formats.
    const ensured = await ctl(['-o', 'json', 'ensure', 'ctl-fn', '--image', stack.images.worker, '--memory', '128', '--env', 'MARK=ctl']);
    assert.equal(ensured.code, 0, show(ensured));
    const worker = JSON.parse(ensured.stdout) as { id: string; name: string; ip_address: string; port: number };
    assert.ok(worker.id.startsWith(stack.idPrefix), ensured.stdout);
    assert.equal(worker.port, 8080);
    assert.match(worker.ip_address, /^10\.252\.\d+\.\d+$/);
    const id = worker.id;

    const listed = await ctl(['list']);
    assert.equal(listed.code, 0, show(listed));
    assert.match(listed.stdout, /^CONTAINER ID\s+FUNCTION\s+STATUS\s+CREATED\s+LAST USED\s+OWNER\n/);
    assert.match(listed.stdout, new RegExp(`^${id}\\s+ctl-fn\\s+RUNNING\\s+\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+\\S+\\s+${owner}$`, 'm'));
    const listedJson = JSON.parse((await ctl(['list', '-o', 'json'])).stdout) as {
      containers: { container_id: string; status: string; created_at: string }[];
    };
    assert.deepEqual(
      listedJson.containers.map((c) => [c.container_id, c.status]),
      [[id, 'RUNNING']],
    );
    assert.match(listedJson.containers[0]!.created_at, /^\d+$/, 'int64 as a decimal string');

    // invoke: JSON, table, and the payload from stdin.
    const payload = JSON.stringify({ action: 'echo', message: 'hello from ctl' });
    const invoked = await ctl(['invoke', id, '--data', payload, '-o', 'json']);
    assert.equal(invoked.code, 0, show(invoked));
    const reply = JSON.parse(invoked.stdout) as { status_code: number; body: string; headers: Record<string, string> };
    assert.equal(reply.status_code, 200);
    assert.equal(reply.body, payload);
    const invokedTable = await ctl(['invoke', id, '--data-file', '-'], payload);
    assert.equal(invokedTable.code, 0, show(invokedTable));
    assert.match(invokedTable.stdout, /^status_code: 200\n/);
    assert.ok(invokedTable.stdout.endsWith(`\n\n${payload}\n`), invokedTable.stdout);
    const envReply = JSON.parse((await ctl(['invoke', id, '--data', '{"action":"stats"}', '-o', 'json'])).stdout) as { body: string };
    assert.equal((JSON.parse(envReply.body) as { env: Record<string, string> }).env['MARK'], 'ctl', '--env reached the worker');

    // pause; invoke while paused → FAILED_PRECONDITION = exit 19, in both formats; resume.
    const paused = await ctl(['pause', id]);
    assert.equal(paused.code, 0, show(paused));
    assert.equal(paused.stdout, `paused ${id}: ok\n`);
    const refused = await ctl(['invoke', id]);
    assert.equal(refused.code, 19, show(refused));
    assert.match(refused.stderr, new RegExp(`^esb-agent ctl: invoke: FAILED_PRECONDITION: container ${id} is paused`));
    const refusedJson = await ctl(['invoke', id, '-o', 'json']);
    assert.equal(refusedJson.code, 19);
    assert.deepEqual(Object.keys((JSON.parse(refusedJson.stdout) as { error: object }).error), ['code', 'code_number', 'details']);
    assert.equal((JSON.parse(refusedJson.stdout) as { error: { code: string; code_number: number } }).error.code, 'FAILED_PRECONDITION');
    const resumed = await ctl(['resume', id, '-o', 'json']);
    assert.equal(resumed.code, 0, show(resumed));
    assert.deepEqual(JSON.parse(resumed.stdout), { success: true });

    // metrics in both formats.
    const metrics = await ctl(['metrics', id]);
    assert.equal(metrics.code, 0, show(metrics));
    assert.match(metrics.stdout, /^state:\s+RUNNING$/m);
    assert.match(metrics.stdout, /^memory_max:\s+134217728 \(128\.0 MiB\)$/m);
    const metricsJson = JSON.parse((await ctl(['metrics', id, '-o', 'json'])).stdout) as { metrics: { memory_max: string; state: string } };
    assert.equal(metricsJson.metrics.memory_max, '134217728');

    // Errors: another owner (PERMISSION_DENIED 17), an unknown id (NOT_FOUND 15), a bad request
    // (INVALID_ARGUMENT 13), a usage error (64), an agent that is not there (UNAVAILABLE 24).
    const stranger = await cli([
      'ctl',
      '--addr',
      `127.0.0.1:${stack.agent!.grpcPort}`,
      '--insecure',
      '--owner',
      `${owner}-other`,
      'destroy',
      id,
    ]);
    assert.equal(stranger.code, 17, show(stranger));
    assert.match(stranger.stderr, /PERMISSION_DENIED/);
    const unknown = await ctl(['metrics', `${stack.idPrefix}nope-00000000`]);
    assert.equal(unknown.code, 15, show(unknown));
    const badEnv = await ctl(['ensure', 'ctl-fn', '--image', stack.images.worker, '--memory', '1']);
    assert.equal(badEnv.code, 13, show(badEnv));
    assert.match(badEnv.stderr, /INVALID_ARGUMENT: .*AWS_LAMBDA_FUNCTION_MEMORY_SIZE/);
    const usage = await ctl(['pause']);
    assert.equal(usage.code, 64, show(usage));
    assert.match(usage.stderr, /pause takes <container-id>, got none/);
    const closedPort = await freePort();
    const nobody = await cli(['ctl', '--addr', `127.0.0.1:${closedPort}`, '--insecure', '--owner', owner, '--deadline', '20s', 'list']);
    assert.equal(nobody.code, 24, show(nobody));
    assert.match(nobody.stderr, /UNAVAILABLE/);

    // destroy, then nothing is listed and nothing is left.
    const destroyed = await ctl(['destroy', id, '--function', 'ctl-fn']);
    assert.equal(destroyed.code, 0, show(destroyed));
    assert.equal(destroyed.stdout, `destroyed ${id}: ok\n`);
    const empty = await ctl(['list']);
    assert.equal(empty.stdout, `no containers for owner ${owner}\n`);
    assert.equal(leakCount(await stack.leaks()), 0, JSON.stringify(await stack.leaks()));

    // mTLS: the agent restarted with TLS; ctl with the client pair works, without it the handshake fails.
    certs = createTestCerts();
    await stack.stopAgent();
    await stack.startAgent({
      AGENT_GRPC_TLS_DISABLED: '0',
      AGENT_GRPC_CERT_PATH: certs.server.certPath,
      AGENT_GRPC_KEY_PATH: certs.server.keyPath,
      AGENT_GRPC_CA_CERT_PATH: certs.caPath,
    });
    const tlsAddr = ['--addr', `localhost:${stack.agent!.grpcPort}`, '--owner', owner, '--ca', certs.caPath];
    const mtls = await cli(['ctl', ...tlsAddr, '--cert', certs.client.certPath, '--key', certs.client.keyPath, 'list', '-o', 'json']);
    assert.equal(mtls.code, 0, show(mtls));
    assert.deepEqual(JSON.parse(mtls.stdout), { containers: [] });
    const noClientCert = await cli(['ctl', ...tlsAddr, '--deadline', '20s', 'list']);
    assert.equal(noClientCert.code, 24, show(noClientCert));
    const missingCa = await cli([
      'ctl',
      '--addr',
      `localhost:${stack.agent!.grpcPort}`,
      '--owner',
      owner,
      '--ca',
      path.join(certs.dir, 'nope.crt'),
      'list',
    ]);
    assert.equal(missingCa.code, 1, show(missingCa));
    assert.match(missingCa.stderr, /--ca: cannot read .*nope\.crt \(ENOENT\)/);
  },
);
