/**
 * Who can reach the agent, on a real private containerd: listen addresses (plaintext gRPC and
 * /metrics on loopback unless the operator names another address, with exactly one warning
 * when plaintext is exposed) and the client certificate allowlist (PERMISSION_DENIED on every
 * AgentService method and on health for a certificate of the CA that is not listed, logged
 * once per identity).
 *
 * Network: the agent's ports on 127.0.0.1 and on 10.253.<n>.1, an address this file puts on a
 * veth pair it creates (and deletes afterwards).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startAgent, type RunningAgent } from '../../src/main.js';
import { startContainerd, type ContainerdInstance } from '../harness/containerd.js';
import { runCleanups } from '../harness/cleanups.js';
import { firewallCleanup } from '../harness/firewall.js';
import { createTestCerts, type CertPair, type TestCerts } from '../helpers/certs.js';
import {
  agentClient,
  callError,
  checkHealth,
  healthClient,
  tlsCredentials,
  unaryCall,
  watchHealth,
  type AgentMethod,
} from '../helpers/grpc.js';
import { LogCapture } from '../helpers/logs.js';

const OWNER = 'access-test';
const ID = 'esb-default-hello-00000000';
const REQUESTS: Record<AgentMethod, Record<string, unknown>> = {
  EnsureContainer: { function_name: 'hello', image: '', env: {}, owner_id: OWNER },
  DestroyContainer: { function_name: 'hello', container_id: ID, owner_id: OWNER },
  PauseContainer: { container_id: ID, owner_id: OWNER },
  ResumeContainer: { container_id: ID, owner_id: OWNER },
  ListContainers: { owner_id: OWNER },
  GetContainerMetrics: { container_id: ID, owner_id: OWNER },
  InvokeWorker: { container_id: ID, owner_id: OWNER, path: '', payload: Buffer.from('{}'), headers: {}, timeout_ms: 0 },
};

/** Resolves 'connected' or the connect error's code (ECONNREFUSED when nothing listens there). */
function tcpConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, timeout: 3000 });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code ?? err.message);
    });
  });
}

/** This run's bridge: the agents install firewall chains named after it. */
const BRIDGE = `esbacc${randomBytes(2).toString('hex')}`;

describe('listen addresses and client allowlist', () => {
  const cleanups: (() => unknown)[] = [];
  after(() => runCleanups(cleanups));
  // After the agents are stopped: they keep their firewall chains (docs/network-isolation.md).
  after(firewallCleanup(BRIDGE));

  let tmp: string;
  let certs: TestCerts;
  let ctd: ContainerdInstance;
  /** A host address no other test uses, on a veth end this file created. */
  let hostIp: string;

  function env(name: string, over: Record<string, string> = {}): Record<string, string> {
    return {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: tmp,
      PORT: '0',
      AGENT_METRICS_PORT: '0',
      CONTAINERD_SOCKET: ctd.socket,
      CONTAINERD_NAMESPACE: `esb-access-${name}`,
      CNI_CONF_DIR: path.join(tmp, name, 'cni'),
      CNI_BIN_DIR: '/usr/lib/cni',
      CNI_NET_DIR: path.join(tmp, name, 'ipam'),
      CNI_SUBNET: '10.214.0.0/24',
      CNI_BRIDGE: BRIDGE,
      AGENT_STATE_DIR: path.join(tmp, name, 'state'),
      IMAGE_PULL_POLICY: 'never',
      CONTAINER_REGISTRY: '127.0.0.1:1',
      AGENT_SHUTDOWN_GRACE_MS: '2000',
      AGENT_LOG_LEVEL: 'debug',
      ...over,
    };
  }

  async function start(name: string, over: Record<string, string>): Promise<{ agent: RunningAgent; logs: LogCapture }> {
    const logs = new LogCapture();
    const agent = await startAgent(env(name, over), { logDestination: logs, healthPollMs: 200 });
    cleanups.push(() => agent.stop());
    return { agent, logs };
  }

  const warnings = (logs: LogCapture): string[] => logs.lines.filter((l) => l['level'] === 'warn').map((l) => String(l['msg']));

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-access-'));
    cleanups.push(() => {
      rmSync(tmp, { recursive: true, force: true });
    });
    certs = createTestCerts();
    cleanups.push(() => {
      certs.remove();
    });
    const tag = randomBytes(3).toString('hex');
    const host = `esbah${tag}`;
    hostIp = `10.253.${1 + (parseInt(tag.slice(0, 2), 16) % 250)}.1`;
    execFileSync('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', `esbap${tag}`]);
    cleanups.push(() => {
      execFileSync('ip', ['link', 'del', host]);
    });
    execFileSync('ip', ['addr', 'add', `${hostIp}/32`, 'dev', host]);
    execFileSync('ip', ['link', 'set', host, 'up']);
    execFileSync('ip', ['link', 'set', `esbap${tag}`, 'up']);
    ctd = await startContainerd();
    cleanups.push(() => ctd.stop());
  });

  test('TLS off, no AGENT_GRPC_ADDRESS: gRPC and /metrics answer on 127.0.0.1 only; one warning', async (t) => {
    const { agent, logs } = await start('plain', { AGENT_GRPC_TLS_DISABLED: '1' });
    const local = agentClient(`127.0.0.1:${agent.grpcPort}`, grpc.credentials.createInsecure());
    t.after(() => {
      local.close();
    });
    assert.deepEqual(await unaryCall(local, 'ListContainers', { owner_id: OWNER }), { containers: [] });
    assert.equal(await tcpConnect(hostIp, agent.grpcPort), 'ECONNREFUSED', 'gRPC must not listen on a non-loopback address');
    assert.equal(await tcpConnect(hostIp, agent.metricsPort), 'ECONNREFUSED', '/metrics must not listen on a non-loopback address');
    const res = await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /esb_agent_grpc_in_flight/);
    assert.deepEqual(warnings(logs), [
      'gRPC is plaintext (AGENT_GRPC_TLS_DISABLED=1) on loopback 127.0.0.1: any local process can run containers as root on this host',
    ]);
    assert.equal(logs.find('esb-agent serving')[0]?.['grpcAddress'], '127.0.0.1');
    await agent.stop();
  });

  test('TLS off, AGENT_GRPC_ADDRESS names a host address: reachable there, not on loopback; exactly one warning naming the risk', async (t) => {
    const { agent, logs } = await start('exposed', {
      AGENT_GRPC_TLS_DISABLED: '1',
      AGENT_GRPC_ADDRESS: hostIp,
      AGENT_METRICS_ADDRESS: hostIp,
    });
    const remote = agentClient(`${hostIp}:${agent.grpcPort}`, grpc.credentials.createInsecure());
    t.after(() => {
      remote.close();
    });
    assert.deepEqual(await unaryCall(remote, 'ListContainers', { owner_id: OWNER }), { containers: [] });
    assert.equal(await tcpConnect('127.0.0.1', agent.grpcPort), 'ECONNREFUSED');
    assert.equal((await fetch(`http://${hostIp}:${agent.metricsPort}/metrics`)).status, 200);
    const warned = warnings(logs);
    assert.equal(warned.length, 1, warned.join('\n'));
    assert.match(
      warned[0]!,
      new RegExp(
        `plaintext .* on ${hostIp.replace(/\./g, '\\.')}, which is not loopback \\(AGENT_GRPC_ADDRESS\\): anyone who can reach this port can run containers as root`,
      ),
    );
    await agent.stop();
  });

  test('mTLS without AGENT_GRPC_ALLOWED_CLIENTS: any certificate of the CA works, with one start-up warning', async (t) => {
    const { agent, logs } = await start('open', {
      AGENT_GRPC_CERT_PATH: certs.server.certPath,
      AGENT_GRPC_KEY_PATH: certs.server.keyPath,
      AGENT_GRPC_CA_CERT_PATH: certs.caPath,
    });
    const c = agentClient(`localhost:${agent.grpcPort}`, tlsCredentials(certs, certs.otherClient));
    t.after(() => {
      c.close();
    });
    assert.deepEqual(await unaryCall(c, 'ListContainers', { owner_id: OWNER }), { containers: [] });
    assert.deepEqual(warnings(logs), [
      "AGENT_GRPC_ALLOWED_CLIENTS is empty: any client certificate signed by AGENT_GRPC_CA_CERT_PATH may call the agent; list the gateway's certificate identities to narrow it",
    ]);
    await agent.stop();
  });

  describe('AGENT_GRPC_ALLOWED_CLIENTS=spiffe://esb.test/gateway,esb-gateway', () => {
    let agent: RunningAgent;
    let logs: LogCapture;
    const clients: grpc.Client[] = [];
    const connect = (pair: CertPair, kind: 'agent' | 'health'): grpc.Client => {
      const address = `localhost:${agent.grpcPort}`;
      const c = kind === 'agent' ? agentClient(address, tlsCredentials(certs, pair)) : healthClient(address, tlsCredentials(certs, pair));
      clients.push(c);
      return c;
    };
    before(async () => {
      ({ agent, logs } = await start('allow', {
        AGENT_GRPC_CERT_PATH: certs.server.certPath,
        AGENT_GRPC_KEY_PATH: certs.server.keyPath,
        AGENT_GRPC_CA_CERT_PATH: certs.caPath,
        AGENT_GRPC_ALLOWED_CLIENTS: 'spiffe://esb.test/gateway, esb-gateway',
      }));
      cleanups.push(() => {
        for (const c of clients) c.close();
      });
    });

    test('a listed URI SAN, and a listed CN of a certificate without SANs, may call; no start-up warning', async () => {
      for (const pair of [certs.uriClient, certs.client]) {
        assert.deepEqual(await unaryCall(connect(pair, 'agent'), 'ListContainers', { owner_id: OWNER }), { containers: [] });
        assert.equal(await checkHealth(connect(pair, 'health'), ''), 'SERVING');
      }
      assert.deepEqual(warnings(logs), []);
    });

    test('a certificate of the same CA with another SAN (and a listed CN): PERMISSION_DENIED on all 7 RPCs and health, logged once', async () => {
      const c = connect(certs.otherClient, 'agent');
      for (const method of Object.keys(REQUESTS) as AgentMethod[]) {
        const err = await callError(c, method, REQUESTS[method]);
        assert.equal(err.name, 'PERMISSION_DENIED', `${method}: ${err.details}`);
        assert.equal(err.details, 'this client certificate is not allowed to call the agent (AGENT_GRPC_ALLOWED_CLIENTS)');
      }
      const h = connect(certs.otherClient, 'health');
      const healthErr = await callError(h, 'Check', { service: '' });
      assert.equal(healthErr.name, 'PERMISSION_DENIED');
      const watch = watchHealth(h, 'esb.agent.v1.AgentService');
      const watchErr = await new Promise<grpc.ServiceError>((resolve) => watch.stream.once('error', resolve));
      assert.equal(watchErr.code, grpc.status.PERMISSION_DENIED);
      assert.deepEqual(watch.statuses, []);

      const refusals = logs.find('client certificate not in AGENT_GRPC_ALLOWED_CLIENTS: its calls are refused');
      assert.equal(refusals.length, 1, 'one log line per identity, whatever the number of calls');
      assert.equal(refusals[0]!['client'], 'DNS:other.esb.test');
      const metrics = await (await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`)).text();
      assert.match(metrics, /^esb_agent_grpc_refused_total\{reason="client_not_allowed"\} 9$/m);
      assert.equal(
        logs.lines.filter((l) => l['msg'] === 'rpc').length,
        2,
        'refused calls never reach a handler (only the two allowed Lists did)',
      );
    });
  });
});
