/**
 * The agent's gRPC server end to end, with mTLS on, against a real private containerd and the
 * real ContainerdRuntime: validation codes and messages on every RPC, mTLS refusals, health
 * following containerd, reflection on demand, /metrics, message limits, and SIGTERM of a child
 * process. The agent runs in-process through `startAgent` (and once as a child for SIGTERM).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { startAgent, type RunningAgent } from '../../src/main.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { startContainerd, type ContainerdInstance } from '../harness/containerd.js';
import { waitFor } from '../harness/process.js';
import { runCleanups } from '../harness/cleanups.js';
import { firewallCleanup } from '../harness/firewall.js';
import { createTestCerts, type TestCerts } from '../helpers/certs.js';
import {
  agentClient,
  callError,
  checkHealth,
  healthClient,
  listServices,
  reflectionClient,
  tlsCredentials,
  unaryCall,
  watchHealth,
  type AgentMethod,
  type AgentServiceClient,
} from '../helpers/grpc.js';
import { LogCapture } from '../helpers/logs.js';

const CNI_BIN = '/usr/lib/cni';
const OWNER = 'gw-test';

/** Requests for every RPC with a valid owner and an id that does not exist. */
const VALID: Record<AgentMethod, Record<string, unknown>> = {
  EnsureContainer: { function_name: 'hello', image: '', env: {}, owner_id: OWNER },
  DestroyContainer: { function_name: 'hello', container_id: 'esb-default-hello-00000000', owner_id: OWNER },
  PauseContainer: { container_id: 'esb-default-hello-00000000', owner_id: OWNER },
  ResumeContainer: { container_id: 'esb-default-hello-00000000', owner_id: OWNER },
  ListContainers: { owner_id: OWNER },
  GetContainerMetrics: { container_id: 'esb-default-hello-00000000', owner_id: OWNER },
  InvokeWorker: {
    container_id: 'esb-default-hello-00000000',
    owner_id: OWNER,
    path: '',
    payload: Buffer.from('{}'),
    headers: {},
    timeout_ms: 0,
  },
};
const METHODS = Object.keys(VALID) as AgentMethod[];
const WITH_ID: AgentMethod[] = ['DestroyContainer', 'PauseContainer', 'ResumeContainer', 'GetContainerMetrics', 'InvokeWorker'];

/** This run's bridge: the agents install firewall chains named after it. */
const BRIDGE = `esbsrv${randomBytes(2).toString('hex')}`;

describe('esb-agent gRPC server on a real containerd, mTLS on', () => {
  const cleanups: (() => unknown)[] = [];
  // Registered before anything is created, so a failing `before` still cleans up.
  after(() => runCleanups(cleanups));
  // After the agents are stopped: they keep their firewall chains (docs/network-isolation.md).
  after(firewallCleanup(BRIDGE));

  let tmp: string;
  let certs: TestCerts;
  let ctd: ContainerdInstance;
  let agent: RunningAgent;
  let client: AgentServiceClient;
  let address: string;
  const logs = new LogCapture();
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(w);
  };

  /** Environment for an agent on the test containerd, all state under `tmp/<name>`. */
  function agentEnv(name: string, over: Record<string, string> = {}): Record<string, string> {
    return {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: tmp,
      PORT: '0',
      AGENT_METRICS_PORT: '0',
      CONTAINERD_SOCKET: ctd.socket,
      CONTAINERD_NAMESPACE: `esb-${name}`,
      CNI_CONF_DIR: path.join(tmp, name, 'cni'),
      CNI_BIN_DIR: CNI_BIN,
      CNI_NET_DIR: path.join(tmp, name, 'ipam'),
      CNI_SUBNET: '10.213.0.0/24',
      CNI_BRIDGE: BRIDGE,
      AGENT_STATE_DIR: path.join(tmp, name, 'state'),
      // No registry traffic: a missing image is NOT_FOUND at once.
      IMAGE_PULL_POLICY: 'never',
      CONTAINER_REGISTRY: '127.0.0.1:1',
      AGENT_GRPC_CERT_PATH: certs.server.certPath,
      AGENT_GRPC_KEY_PATH: certs.server.keyPath,
      AGENT_GRPC_CA_CERT_PATH: certs.caPath,
      AGENT_SHUTDOWN_GRACE_MS: '5000',
      AGENT_LOG_LEVEL: 'debug',
      ...over,
    };
  }

  before(async () => {
    process.on('warning', onWarning);
    cleanups.push(() => process.removeListener('warning', onWarning));
    tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-srv-'));
    cleanups.push(() => {
      rmSync(tmp, { recursive: true, force: true });
    });
    certs = createTestCerts();
    cleanups.push(() => {
      certs.remove();
    });
    ctd = await startContainerd();
    cleanups.push(() => ctd.stop());
    agent = await startAgent(agentEnv('main'), { logDestination: logs, healthPollMs: 200 });
    cleanups.push(() => agent.stop());
    // localhost, not 127.0.0.1: a TLS client dialling an IP literal triggers DEP0123.
    address = `localhost:${agent.grpcPort}`;
    client = agentClient(address, tlsCredentials(certs, certs.client));
    cleanups.push(() => {
      client.close();
    });
  });

  describe('validation: the right code and a message that says what to fix', () => {
    for (const method of METHODS) {
      test(`${method} with blank owner_id → INVALID_ARGUMENT "owner_id is required"`, async () => {
        const err = await callError(client, method, { ...VALID[method], owner_id: '  ' });
        assert.equal(err.name, 'INVALID_ARGUMENT');
        assert.match(err.details, /^owner_id is required/);
      });
    }
    for (const method of WITH_ID) {
      test(`${method} with blank container_id → INVALID_ARGUMENT`, async () => {
        const err = await callError(client, method, { ...VALID[method], container_id: '' });
        assert.equal(err.name, 'INVALID_ARGUMENT');
        assert.match(err.details, /^container_id is required: pass the id EnsureContainer returned/);
      });
    }
    test('EnsureContainer with a 129-character function_name → INVALID_ARGUMENT naming the limit', async () => {
      const err = await callError(client, 'EnsureContainer', { ...VALID.EnsureContainer, function_name: 'f'.repeat(129) });
      assert.equal(err.name, 'INVALID_ARGUMENT');
      assert.equal(err.details, 'function_name is 129 characters long; the limit is 128');
    });
    test("EnsureContainer with an env key containing '=' → INVALID_ARGUMENT", async () => {
      const err = await callError(client, 'EnsureContainer', { ...VALID.EnsureContainer, env: { 'A=B': 'x' } });
      assert.equal(err.name, 'INVALID_ARGUMENT');
      assert.match(err.details, /env key "A=B" contains '='/);
    });
    test('EnsureContainer with a blank function_name → INVALID_ARGUMENT', async () => {
      const err = await callError(client, 'EnsureContainer', { ...VALID.EnsureContainer, function_name: '' });
      assert.equal(err.name, 'INVALID_ARGUMENT');
      assert.match(err.details, /^function_name is required/);
    });
    test('InvokeWorker with a URL as path → INVALID_ARGUMENT (no SSRF)', async () => {
      const err = await callError(client, 'InvokeWorker', { ...VALID.InvokeWorker, path: 'http://169.254.169.254/latest' });
      assert.equal(err.name, 'INVALID_ARGUMENT');
      assert.match(err.details, /looks like a URL/);
    });
  });

  describe('unknown containers and unimplemented paths', () => {
    for (const method of ['PauseContainer', 'ResumeContainer', 'GetContainerMetrics'] as const) {
      test(`${method} of an unknown container → NOT_FOUND "container <id> not found"`, async () => {
        const err = await callError(client, method, VALID[method]);
        assert.equal(err.name, 'NOT_FOUND');
        assert.match(err.details, /^container esb-default-hello-00000000 not found/);
      });
    }
    test('DestroyContainer of an unknown container → success=true (idempotent)', async () => {
      const res = await unaryCall<{ success: boolean }>(client, 'DestroyContainer', VALID.DestroyContainer);
      assert.equal(res.success, true);
    });
    test('ListContainers for an owner with nothing → an empty list', async () => {
      const res = await unaryCall<{ containers: unknown[] }>(client, 'ListContainers', VALID.ListContainers);
      assert.deepEqual(res.containers, []);
    });
    test('InvokeWorker of an unknown container → NOT_FOUND, never a fake success', async () => {
      const err = await callError(client, 'InvokeWorker', VALID.InvokeWorker);
      assert.equal(err.name, 'NOT_FOUND');
    });
    test('EnsureContainer of an image that is not there (pull policy never) fails with a real code and leaves nothing', async () => {
      const err = await callError(client, 'EnsureContainer', VALID.EnsureContainer, { deadlineMs: 60_000 });
      assert.equal(err.name, 'NOT_FOUND', err.details);
      const res = await unaryCall<{ containers: unknown[] }>(client, 'ListContainers', VALID.ListContainers);
      assert.deepEqual(res.containers, []);
    });
  });

  describe('message limits', () => {
    test('a 6 MB InvokeWorker payload (over grpc’s 4 MiB default) reaches validation', async () => {
      const payload = Buffer.alloc(6 * 1000 * 1000, 0x61);
      const blank = await callError(client, 'InvokeWorker', { ...VALID.InvokeWorker, owner_id: '', payload });
      assert.equal(blank.name, 'INVALID_ARGUMENT');
      // Past validation, the unknown id is what stops it: the 6 MB message itself was accepted.
      const valid = await callError(client, 'InvokeWorker', { ...VALID.InvokeWorker, payload });
      assert.equal(valid.name, 'NOT_FOUND');
    });
  });

  describe('mTLS', () => {
    test('a client certificate from the configured CA is accepted', async () => {
      const res = await unaryCall<{ containers: unknown[] }>(client, 'ListContainers', VALID.ListContainers, { deadlineMs: 5000 });
      assert.deepEqual(res.containers, []);
    });
    const refused: [string, () => grpc.ChannelCredentials][] = [
      ['no client certificate', () => tlsCredentials(certs, undefined)],
      ['a certificate from another CA', () => tlsCredentials(certs, certs.rogueClient)],
      ['a server certificate (no clientAuth usage)', () => tlsCredentials(certs, certs.server)],
      ['plaintext', () => grpc.credentials.createInsecure()],
    ];
    for (const [name, creds] of refused) {
      test(`${name} → refused (UNAVAILABLE), the RPC never runs`, async () => {
        const before = logs.find('rpc').length;
        const c = agentClient(address, creds());
        try {
          const err = await callError(c, 'ListContainers', VALID.ListContainers, { deadlineMs: 5000 });
          assert.equal(err.name, 'UNAVAILABLE', err.details);
        } finally {
          c.close();
        }
        assert.equal(logs.find('rpc').length, before);
      });
    }
    test('TLS below 1.2 is refused; 1.2 and 1.3 are accepted', async () => {
      const handshake = (opts: tls.ConnectionOptions): Promise<string> =>
        new Promise((resolve, reject) => {
          const s = tls.connect(
            {
              host: 'localhost',
              servername: 'localhost',
              port: agent.grpcPort,
              ca: certs.ca,
              cert: certs.client.cert,
              key: certs.client.key,
              ALPNProtocols: ['h2'],
              ...opts,
            },
            () => {
              const v = s.getProtocol() ?? '';
              s.end();
              resolve(v);
            },
          );
          s.on('error', reject);
        });
      assert.equal(await handshake({ maxVersion: 'TLSv1.2' }), 'TLSv1.2');
      assert.equal(await handshake({}), 'TLSv1.3');
      // Node's own client will not offer TLS 1.1 at OpenSSL's default security level, so ask
      // openssl with the level lowered: only the server can refuse then. (Asynchronously: the
      // agent runs in this process and must keep answering.)
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const args = [
          's_client',
          '-connect',
          `127.0.0.1:${agent.grpcPort}`,
          '-tls1_1',
          '-cipher',
          'DEFAULT@SECLEVEL=0',
          '-servername',
          'localhost',
        ];
        const p = spawn('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (out += d.toString()));
        p.on('close', (code) => {
          resolve({ code, out });
        });
      });
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.out, /alert protocol version/i);
      assert.doesNotMatch(r.out, /Cipher is (?!\(NONE\))/);
    });
    test('no DEP0123 warning (TLS clients dial localhost)', () => {
      assert.deepEqual(
        warnings.filter((w) => (w as NodeJS.ErrnoException).code === 'DEP0123'),
        [],
      );
    });
  });

  describe('/metrics', () => {
    test('counts RPCs by method and code, and has the process_ and nodejs_ defaults', async () => {
      const scrape = async (): Promise<string> => {
        const res = await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`);
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
        return res.text();
      };
      const count = (body: string, method: string, code: string): number => {
        const m = new RegExp(`^esb_agent_rpc_total\\{method="${method}",code="${code}"\\} (\\d+)$`, 'm').exec(body);
        return m ? Number(m[1]) : 0;
      };
      const first = await scrape();
      await callError(client, 'PauseContainer', { ...VALID.PauseContainer, owner_id: '' });
      await callError(client, 'PauseContainer', { ...VALID.PauseContainer, owner_id: '' });
      await unaryCall(client, 'ListContainers', VALID.ListContainers);
      const second = await scrape();
      assert.equal(count(second, 'PauseContainer', 'INVALID_ARGUMENT') - count(first, 'PauseContainer', 'INVALID_ARGUMENT'), 2);
      assert.equal(count(second, 'ListContainers', 'OK') - count(first, 'ListContainers', 'OK'), 1);
      assert.match(second, /^esb_agent_rpc_duration_seconds_bucket\{le="[^"]+",method="ListContainers",code="OK"\} \d+$/m);
      assert.match(second, /^process_cpu_user_seconds_total /m);
      assert.match(second, /^process_resident_memory_bytes /m);
      assert.match(second, /^nodejs_heap_size_used_bytes /m);
      assert.match(second, /^nodejs_eventloop_lag_seconds /m);
    });
    test('one log line per RPC with method, code and ms; owner and container id included', () => {
      const lines = logs.find('rpc', { method: 'GetContainerMetrics', code: 'NOT_FOUND' });
      assert.ok(lines.length >= 1);
      assert.equal(lines[0]!['owner'], OWNER);
      assert.equal(lines[0]!['containerId'], 'esb-default-hello-00000000');
      assert.equal(typeof lines[0]!['ms'], 'number');
    });
  });

  describe('reflection', () => {
    test('off by default: the reflection service is UNIMPLEMENTED', async () => {
      const r = reflectionClient(address, tlsCredentials(certs, certs.client));
      try {
        await assert.rejects(listServices(r), (err: grpc.ServiceError) => err.code === grpc.status.UNIMPLEMENTED);
      } finally {
        r.close();
      }
    });
    test('AGENT_GRPC_REFLECTION=1 lists esb.agent.v1.AgentService and grpc.health.v1.Health', async (t) => {
      const second = await startAgent(agentEnv('refl', { AGENT_GRPC_REFLECTION: '1' }), { logDestination: new LogCapture() });
      t.after(() => second.stop());
      const r = reflectionClient(`localhost:${second.grpcPort}`, tlsCredentials(certs, certs.client));
      t.after(() => {
        r.close();
      });
      const services = await listServices(r);
      assert.ok(services.includes('esb.agent.v1.AgentService'), services.join(','));
      assert.ok(services.includes('grpc.health.v1.Health'), services.join(','));
    });
  });

  describe('health follows containerd', () => {
    test('SERVING while containerd answers, NOT_SERVING when it stops, SERVING again after a restart', async (t) => {
      const h = healthClient(address, tlsCredentials(certs, certs.client));
      t.after(() => {
        h.close();
      });
      assert.equal(await checkHealth(h, ''), 'SERVING');
      assert.equal(await checkHealth(h, 'esb.agent.v1.AgentService'), 'SERVING');
      await ctd.pause();
      await waitFor('health NOT_SERVING', async () => (await checkHealth(h, 'esb.agent.v1.AgentService')) === 'NOT_SERVING', 20_000, 100);
      assert.equal(await checkHealth(h, ''), 'NOT_SERVING');
      await ctd.restart();
      await waitFor('health SERVING again', async () => (await checkHealth(h, 'esb.agent.v1.AgentService')) === 'SERVING', 30_000, 100);
      assert.equal(await checkHealth(h, ''), 'SERVING');
    });
  });

  describe('SIGTERM', () => {
    test('a child-process agent goes NOT_SERVING, drains and exits 0 within the grace time', async (t) => {
      const graceMs = 5000;
      const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        cwd: PROJECT_ROOT,
        env: agentEnv('child', { AGENT_SHUTDOWN_GRACE_MS: String(graceMs), AGENT_LOG_LEVEL: 'info' }),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
        child.once('exit', (code, signal) => {
          resolve({ code, signal });
        });
      });
      t.after(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
      });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      const lines: Record<string, unknown>[] = [];
      const serving = new Promise<Record<string, unknown>>((resolve, reject) => {
        createInterface({ input: child.stdout! }).on('line', (l) => {
          try {
            const obj = JSON.parse(l) as Record<string, unknown>;
            lines.push(obj);
            if (obj['msg'] === 'esb-agent serving') resolve(obj);
          } catch {
            // not a log line
          }
        });
        void exited.then(({ code }) => {
          reject(new Error(`agent exited (${code}) before serving: ${stderr}`));
        });
      });
      const ready = await serving;
      const port = ready['grpcPort'] as number;
      const h = healthClient(`localhost:${port}`, tlsCredentials(certs, certs.client));
      t.after(() => {
        h.close();
      });
      const watch = watchHealth(h, '');
      await waitFor('Watch to report SERVING', () => watch.statuses.includes('SERVING'), 10_000);

      const sentAt = Date.now();
      child.kill('SIGTERM');
      const { code, signal } = await exited;
      const tookMs = Date.now() - sentAt;
      assert.equal(signal, null);
      assert.equal(code, 0, stderr);
      assert.ok(tookMs < graceMs, `exit took ${tookMs} ms`);
      await watch.ended;
      assert.equal(watch.statuses.at(-1), 'NOT_SERVING', watch.statuses.join(','));
      const msgs = lines.map((l) => l['msg']);
      assert.ok(msgs.includes('esb-agent shutting down'), msgs.join(' | '));
      assert.ok(msgs.includes('esb-agent stopped'), msgs.join(' | '));
    });
  });
});
