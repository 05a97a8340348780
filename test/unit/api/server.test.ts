/**
 * The gRPC server over a fake runtime, plaintext on 127.0.0.1: limits, health, shutdown.
 * TLS, reflection and the real runtime are covered in test/integration/server.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadConfig } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/config/parse.js';
import { AgentError } from '../../../src/errors.js';
import { AgentMetrics } from '../../../src/metrics.js';
import {
  MAX_RECEIVE_MESSAGE_BYTES,
  MIN_SEND_MESSAGE_BYTES,
  createAgentServer,
  grpcServerOptions,
  loadTlsMaterial,
  maxSendMessageBytes,
} from '../../../src/api/server.js';
import type { Invoker } from '../../../src/api/service.js';
import { waitFor } from '../../harness/process.js';
import { FakeRuntime, fakeWorker } from '../../helpers/fake-runtime.js';
import { agentClient, callError, checkHealth, healthClient, unaryCall, watchHealth } from '../../helpers/grpc.js';
import { LogCapture, captureLogger } from '../../helpers/logs.js';

const MIB = 1024 * 1024;

describe('message limits', () => {
  test('receive ≥ 16 MiB; send ≥ max response + 64 KiB and never below 16 MiB', () => {
    assert.ok(MAX_RECEIVE_MESSAGE_BYTES >= 16 * MIB);
    const opts = grpcServerOptions({
      invoke: { maxResponseBytes: 10 * MIB, defaultTimeoutMs: 30_000, maxQueue: 32 },
      grpcMaxConcurrentStreams: 77,
    });
    assert.equal(opts['grpc.max_receive_message_length'], MAX_RECEIVE_MESSAGE_BYTES);
    assert.equal(opts['grpc.max_concurrent_streams'], 77);
    assert.ok(opts['grpc.max_send_message_length']! >= 10 * MIB + 64 * 1024);
    assert.equal(maxSendMessageBytes(100 * MIB), 100 * MIB + 64 * 1024);
    assert.equal(maxSendMessageBytes(1024), MIN_SEND_MESSAGE_BYTES);
  });
});

describe('loadTlsMaterial: bad files stop start-up naming the variable', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-tls-unit-'));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const junk = path.join(dir, 'junk.pem');
  writeFileSync(junk, 'not a certificate\n');
  const cases: [string, { certPath: string; keyPath: string; caCertPath: string }, string, RegExp][] = [
    [
      'missing cert',
      { certPath: path.join(dir, 'nope.crt'), keyPath: junk, caCertPath: junk },
      'AGENT_GRPC_CERT_PATH',
      /cannot read .*nope\.crt \(ENOENT\)/,
    ],
    ['missing key', { certPath: junk, keyPath: path.join(dir, 'nope.key'), caCertPath: junk }, 'AGENT_GRPC_KEY_PATH', /ENOENT/],
    ['missing CA', { certPath: junk, keyPath: junk, caCertPath: path.join(dir, 'nope.crt') }, 'AGENT_GRPC_CA_CERT_PATH', /ENOENT/],
    ['cert is a directory', { certPath: dir, keyPath: junk, caCertPath: junk }, 'AGENT_GRPC_CERT_PATH', /EISDIR/],
    ['cert is not PEM', { certPath: junk, keyPath: junk, caCertPath: junk }, 'AGENT_GRPC_CERT_PATH', /is not a PEM certificate/],
  ];
  for (const [name, tls, variable, message] of cases) {
    test(`${name} → ConfigError ${variable}`, () => {
      assert.throws(
        () => loadTlsMaterial(tls),
        (err: unknown) =>
          err instanceof ConfigError && err.variable === variable && message.test(err.message) && err.message.startsWith(`${variable}: `),
      );
    });
  }
});

interface Harness {
  runtime: FakeRuntime;
  capture: LogCapture;
  address: string;
  client: ReturnType<typeof agentClient>;
  health: grpc.Client;
  server: ReturnType<typeof createAgentServer>;
}

async function startServer(t: TestContext, opts: { invoker?: Invoker; graceMs?: number } = {}): Promise<Harness> {
  const runtime = new FakeRuntime().add(fakeWorker({ id: 'w1', ownerId: 'gw' }));
  const capture = new LogCapture();
  const config = loadConfig({ PORT: '0', AGENT_GRPC_TLS_DISABLED: '1', AGENT_SHUTDOWN_GRACE_MS: String(opts.graceMs ?? 2000) });
  const server = createAgentServer({
    config,
    runtime,
    invoker: opts.invoker,
    log: captureLogger(capture),
    metrics: new AgentMetrics({ defaultMetrics: false }),
    healthPollMs: 50,
  });
  t.after(() => server.shutdown(0));
  const port = await server.listen();
  const address = `127.0.0.1:${port}`;
  const client = agentClient(address, grpc.credentials.createInsecure());
  const health = healthClient(address, grpc.credentials.createInsecure());
  t.after(() => {
    client.close();
    health.close();
  });
  return { runtime, capture, address, client, health, server };
}

describe('AgentServer over a fake runtime', () => {
  test('serves the seven RPCs and logs one line per call', async (t) => {
    const { client, capture } = await startServer(t);
    const list = await unaryCall<{ containers: { container_id: string }[] }>(client, 'ListContainers', { owner_id: 'gw' });
    assert.deepEqual(
      list.containers.map((c) => c.container_id),
      ['w1'],
    );
    const ensured = await unaryCall<{ id: string; port: number }>(client, 'EnsureContainer', { function_name: 'f', owner_id: 'gw' });
    assert.equal(ensured.port, 8080);
    assert.equal((await unaryCall<{ success: boolean }>(client, 'PauseContainer', { container_id: 'w1', owner_id: 'gw' })).success, true);
    assert.equal((await unaryCall<{ success: boolean }>(client, 'ResumeContainer', { container_id: 'w1', owner_id: 'gw' })).success, true);
    const m = await unaryCall<{ metrics: { memory_max: string } }>(client, 'GetContainerMetrics', { container_id: 'w1', owner_id: 'gw' });
    assert.equal(m.metrics.memory_max, String(128 * MIB));
    assert.equal((await callError(client, 'InvokeWorker', { container_id: 'w1', owner_id: 'gw' })).name, 'UNIMPLEMENTED');
    assert.equal((await unaryCall<{ success: boolean }>(client, 'DestroyContainer', { container_id: 'w1', owner_id: 'gw' })).success, true);
    assert.equal(capture.find('rpc').length, 7);
  });

  test('a 6 MB payload reaches the handler; 20 MiB is refused by the server with RESOURCE_EXHAUSTED', async (t) => {
    const seen: number[] = [];
    const invoker: Invoker = {
      invoke: (_target, req) => {
        seen.push(req.payload.length);
        return Promise.resolve({ statusCode: 200, headers: {}, body: Buffer.alloc(0) });
      },
    };
    const { client } = await startServer(t, { invoker });
    const res = await unaryCall<{ status_code: number }>(client, 'InvokeWorker', {
      container_id: 'w1',
      owner_id: 'gw',
      payload: Buffer.alloc(6_000_000, 1),
    });
    assert.equal(res.status_code, 200);
    assert.deepEqual(seen, [6_000_000]);
    const err = await callError(client, 'InvokeWorker', { container_id: 'w1', owner_id: 'gw', payload: Buffer.alloc(20 * MIB) });
    assert.equal(err.name, 'RESOURCE_EXHAUSTED');
  });

  test('an 8 MiB response is sent (send limit above grpc-js defaults)', async (t) => {
    const invoker: Invoker = { invoke: () => Promise.resolve({ statusCode: 200, headers: { a: 'b' }, body: Buffer.alloc(8 * MIB, 2) }) };
    const { client } = await startServer(t, { invoker });
    const res = await unaryCall<{ body: Buffer }>(client, 'InvokeWorker', { container_id: 'w1', owner_id: 'gw' });
    assert.equal(res.body.length, 8 * MIB);
  });

  test('health follows runtime.ping(): SERVING → NOT_SERVING → SERVING, for "" and the service name', async (t) => {
    const { health, runtime, server } = await startServer(t);
    assert.equal(await checkHealth(health, ''), 'SERVING');
    assert.equal(await checkHealth(health, 'esb.agent.v1.AgentService'), 'SERVING');
    runtime.pingOk = false;
    assert.equal(await server.health.check(), false);
    assert.equal(await checkHealth(health, ''), 'NOT_SERVING');
    assert.equal(await checkHealth(health, 'esb.agent.v1.AgentService'), 'NOT_SERVING');
    runtime.pingOk = true;
    // The 50 ms poll brings it back without an explicit check.
    await waitFor('health SERVING again', async () => (await checkHealth(health, 'esb.agent.v1.AgentService')) === 'SERVING', 5000, 20);
  });

  test('a ping that throws counts as down', async (t) => {
    const { health, runtime, server } = await startServer(t);
    runtime.ping = () => Promise.reject(new Error('socket gone'));
    assert.equal(await server.health.check(), false);
    assert.equal(await checkHealth(health, ''), 'NOT_SERVING');
  });

  test('shutdown: NOT_SERVING first, in-flight RPCs finish, new ones are refused, fast with a Watch open', async (t) => {
    const { client, health, runtime, server, address } = await startServer(t, { graceMs: 5000 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let signalAborted = false;
    runtime.onEnsure = async (_req, { signal }) => {
      await gate;
      signalAborted = signal.aborted;
      return { id: 'w9', name: 'w9', ipAddress: '10.88.0.9', port: 8080 };
    };
    const watch = watchHealth(health, '');
    await new Promise((r) => setTimeout(r, 50));
    const inflight = unaryCall<{ id: string }>(client, 'EnsureContainer', { function_name: 'f', owner_id: 'gw' });
    // Waited for, not slept on: on a loaded machine the call can take longer than a fixed pause to arrive.
    await waitFor('the Ensure in flight', () => server.inflight.count === 1, 5000, 10);

    const started = Date.now();
    const stopping = server.shutdown();
    await waitFor('NOT_SERVING on the open Watch', () => watch.statuses.at(-1) === 'NOT_SERVING', 2000, 10);
    const fresh = agentClient(address, grpc.credentials.createInsecure());
    t.after(() => {
      fresh.close();
    });
    assert.equal((await callError(fresh, 'ListContainers', { owner_id: 'gw' }, { deadlineMs: 2000 })).name, 'UNAVAILABLE');

    release();
    assert.equal((await inflight).id, 'w9');
    assert.equal(signalAborted, false);
    const result = await stopping;
    assert.equal(result.forced, false);
    assert.ok(Date.now() - started < 4000, 'the open Watch stream did not hold shutdown until the grace period');
    await watch.ended;
  });

  test('shutdown: past the grace period in-flight RPCs are cancelled and their handlers see the abort', async (t) => {
    const { client, runtime, server } = await startServer(t, { graceMs: 200 });
    let reason: unknown;
    runtime.onEnsure = (_req, { signal }) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          reason = signal.reason;
          reject(new AgentError('CANCELLED', 'ensure cancelled; rolled back'));
        });
      });
    const inflight = callError(client, 'EnsureContainer', { function_name: 'f', owner_id: 'gw' });
    await new Promise((r) => setTimeout(r, 50));
    const result = await server.shutdown();
    assert.equal(result.forced, true);
    assert.equal(result.stillRunning, 0);
    assert.equal((await inflight).name, 'CANCELLED');
    assert.equal((reason as DOMException).name, 'AbortError');
  });
});
