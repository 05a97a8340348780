/**
 * Worker network default-deny on real containerd, runc, CNI plugins and iptables. From inside
 * a worker's netns: the agent's gRPC and metrics ports, stand-in listeners on 0.0.0.0, other
 * host addresses, another tenant's worker and link-local addresses are all refused; DNS and an
 * operator-opened host port are not; the host still reaches the worker. Then the chains across
 * agent restarts with the rules present, deleted and partly deleted, with `esb-agent doctor`'s
 * verdict on each state. Every address probed was made by this test (its bridge, veths, netns).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PROJECT_ROOT } from '../../src/paths.js';
import { firewallLeftovers, removeFirewall } from '../harness/firewall.js';
import { startDockerStack, type DockerTestStack } from '../harness/docker-stack.js';
import { freeSubnet } from '../harness/dockerd.js';
import { startStack, type TestStack } from '../harness/stack.js';
import { runCleanups } from '../harness/cleanups.js';
import {
  hostAddress,
  linkLocalPeer,
  probeFrom,
  probeFromHost,
  tcpListener,
  udpEcho,
  type ProbeResult,
  type Target,
} from '../helpers/netprobe.js';
import type { WorkerReply as Worker } from '../helpers/replies.js';

const ENTRY = path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts');
const LINK_LOCAL_PORT = 18080;

function doctorFirewall(env: Record<string, string>): Promise<{ code: number | null; line: string; stdout: string }> {
  const childEnv = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: os.tmpdir(), ...env };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'doctor'], {
      cwd: PROJECT_ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      const lines = stdout.split('\n');
      const i = lines.findIndex((l) => l.includes(' firewall '));
      resolve({ code, stdout, line: i < 0 ? '' : [lines[i], lines[i + 1]?.includes('fix:') ? lines[i + 1] : ''].join('\n') });
    });
  });
}

describe('worker network isolation (containerd runtime)', () => {
  let stack: TestStack;
  const cleanups: (() => Promise<void> | void)[] = [];
  const tag = randomBytes(3).toString('hex');
  const third = 1 + Math.floor(Math.random() * 250);
  const otherHostIp = `10.251.${third}.1`;
  const llLocal = `169.254.${third}.1`;
  const llRemote = `169.254.${third}.2`;
  let gateway: string;
  let standIn: { port: number };
  let allowed: { port: number };
  let a: Worker;
  let b: Worker;

  const pidOf = async (id: string): Promise<number> => {
    const res = await stack.containerd.call('tasks', 'Get', { container_id: id, exec_id: '' });
    const pid = res.process?.pid ?? 0;
    assert.ok(pid > 0, `task ${id} has a pid`);
    return pid;
  };
  /** Probes from worker A; returns the results keyed by label. */
  const fromA = async (targets: Record<string, Target>): Promise<Record<string, ProbeResult>> => {
    const entries = Object.entries(targets);
    const results = await probeFrom(
      await pidOf(a.id),
      entries.map(([, t]) => t),
    );
    for (const r of results) assert.ok(r.ms < 3500, `every probe settles within 3 s: ${JSON.stringify(results)}`);
    return Object.fromEntries(entries.map(([label], i) => [label, results[i]!.result]));
  };
  const invokeA = () =>
    stack.call<{ status_code: number; body: Buffer }>('InvokeWorker', {
      container_id: a.id,
      owner_id: 'tenant-a',
      path: '',
      payload: Buffer.from('{"action":"echo","x":1}'),
      headers: {},
      timeout_ms: 20_000,
    });

  before(async () => {
    // Stand-ins for the agent's listeners on every address, and a port the operator opens.
    const s = await tcpListener('0.0.0.0');
    cleanups.push(() => s.close());
    standIn = s;
    const o = await tcpListener('0.0.0.0');
    cleanups.push(() => o.close());
    allowed = o;
    stack = await startStack({ env: { AGENT_WORKER_ALLOWED_HOST_PORTS: `${allowed.port}/tcp` } });
    cleanups.push(() => stack.stop());
    gateway = stack.subnet.replace(/0\/24$/, '1');
    const h = hostAddress(tag, otherHostIp);
    cleanups.push(() => {
      h.remove();
    });
    const ll = await linkLocalPeer(tag, llLocal, llRemote, LINK_LOCAL_PORT, stack.subnet);
    cleanups.push(() => {
      ll.remove();
    });
    a = await stack.call<Worker>('EnsureContainer', { function_name: 'iso-a', image: stack.images.worker, env: {}, owner_id: 'tenant-a' });
    b = await stack.call<Worker>('EnsureContainer', { function_name: 'iso-b', image: stack.images.worker, env: {}, owner_id: 'tenant-b' });
    cleanups.push(async () => {
      if (!stack.client) return;
      await stack.call('DestroyContainer', { container_id: a.id, owner_id: 'tenant-a' }).catch(() => undefined);
      await stack.call('DestroyContainer', { container_id: b.id, owner_id: 'tenant-b' }).catch(() => undefined);
    });
    // Both RIEs listen before any probe: an invocation waits for that.
    for (const [w, owner] of [
      [a, 'tenant-a'],
      [b, 'tenant-b'],
    ] as const) {
      const res = await stack.call<{ status_code: number }>('InvokeWorker', {
        container_id: w.id,
        owner_id: owner,
        path: '',
        payload: Buffer.from('{"action":"echo"}'),
        headers: {},
        timeout_ms: 20_000,
      });
      assert.equal(res.status_code, 200);
    }
    // The DNS server (the gateway, CNI_DNS_SERVER's default) exists once the bridge does.
    const dnsUdp = await udpEcho(gateway, 53);
    cleanups.push(() => dnsUdp.close());
    const dnsTcp = await tcpListener(gateway, 53);
    cleanups.push(() => dnsTcp.close());
  });
  after(() => runCleanups(cleanups));

  const forbidden = (): Record<string, Target> => ({
    grpcOnGateway: { host: gateway, port: stack.agent!.grpcPort },
    metricsOnGateway: { host: gateway, port: stack.agent!.metricsPort },
    grpcOnOtherHostAddress: { host: otherHostIp, port: stack.agent!.grpcPort },
    metricsOnOtherHostAddress: { host: otherHostIp, port: stack.agent!.metricsPort },
    standInOnGateway: { host: gateway, port: standIn.port },
    standInOnOtherHostAddress: { host: otherHostIp, port: standIn.port },
    standInOnHostLinkLocal: { host: llLocal, port: standIn.port },
    otherTenantsWorker: { host: b.ip_address, port: 8080 },
    linkLocalBeyondTheHost: { host: llRemote, port: LINK_LOCAL_PORT },
  });

  test('the host reaches every target the worker must not (positive controls)', async () => {
    for (const [label, t] of Object.entries(forbidden())) {
      if (label === 'otherTenantsWorker') continue; // checked below through the agent and directly
      assert.equal(await probeFromHost(t), 'connected', `host → ${label} ${t.host}:${t.port}`);
    }
    assert.equal(await probeFromHost({ host: b.ip_address, port: 8080 }), 'connected', 'host → worker B:8080');
    assert.equal(await probeFromHost({ host: gateway, port: 53, proto: 'udp' }), 'connected', 'host → DNS stand-in (udp)');
  });

  test("from a worker: the agent's ports, other host addresses, other workers and link-local are refused at once", async () => {
    const r = await fromA(forbidden());
    for (const [label, result] of Object.entries(r)) assert.equal(result, 'refused', `worker → ${label}: ${JSON.stringify(r)}`);
  });

  test('from a worker: DNS on the DNS server (udp and tcp) and the operator-opened host port are reachable', async () => {
    const r = await fromA({
      dnsUdp: { host: gateway, port: 53, proto: 'udp' },
      dnsTcp: { host: gateway, port: 53 },
      allowedOnGateway: { host: gateway, port: allowed.port },
      allowedOnOtherHostAddress: { host: otherHostIp, port: allowed.port },
    });
    const counters = (): string => execFileSync('iptables', ['-w', '-nvL', `ESB-IN-${stack.bridge}`], { encoding: 'utf8' });
    assert.deepEqual(
      r,
      { dnsUdp: 'connected', dnsTcp: 'connected', allowedOnGateway: 'connected', allowedOnOtherHostAddress: 'connected' },
      counters(),
    );
  });

  test('the host still invokes the worker; the install is counted', async () => {
    const res = await invokeA();
    assert.equal(res.status_code, 200);
    assert.deepEqual(JSON.parse(res.body.toString()), { action: 'echo', x: 1 });
    const metric = await stack.agent!.metrics.registry.getSingleMetricAsString('esb_agent_worker_firewall_installs_total');
    assert.match(metric, /esb_agent_worker_firewall_installs_total\{found="missing"\} 1/);
  });

  test(
    'restart with the chains present, deleted, and partly deleted: complete again after each start; doctor says which',
    { timeout: 5 * 60_000 },
    async () => {
      const complete = firewallLeftovers(stack.bridge);
      assert.equal(complete.filter((l) => l.startsWith('iptables -A INPUT ')).length, 1, complete.join('\n'));
      assert.equal(complete.filter((l) => l.startsWith('iptables -A FORWARD ')).length, 1, complete.join('\n'));
      const env = { ...stack.env };

      // Present: the agent stops, the chains stay, the worker stays refused meanwhile.
      await stack.stopAgent();
      assert.deepEqual(firewallLeftovers(stack.bridge), complete, 'stopping the agent keeps the chains');
      assert.deepEqual(await fromA({ g: { host: gateway, port: standIn.port }, w: { host: b.ip_address, port: 8080 } }), {
        g: 'refused',
        w: 'refused',
      });
      let doc = await doctorFirewall(env);
      assert.match(doc.line, /^OK {4}firewall +present: chains ESB-IN-\S+, ESB-FWD-\S+ complete/, doc.stdout);
      await stack.startAgent();
      assert.deepEqual(firewallLeftovers(stack.bridge), complete);
      assert.ok(!stack.logs.lines.some((l) => l['msg'] === 'worker firewall was partly removed or changed; repaired'));

      // Deleted: doctor warns; without the chains the worker gets through (the probes can fail);
      // the next start puts everything back.
      await stack.stopAgent();
      removeFirewall(stack.bridge);
      assert.deepEqual(firewallLeftovers(stack.bridge), []);
      doc = await doctorFirewall(env);
      assert.match(doc.line, /^WARN {2}firewall +missing: no worker firewall for bridge /, doc.stdout);
      assert.match(doc.line, /fix: start the agent/);
      assert.deepEqual(
        await fromA({
          g: { host: gateway, port: standIn.port },
          w: { host: b.ip_address, port: 8080 },
          ll: { host: llRemote, port: LINK_LOCAL_PORT },
        }),
        { g: 'connected', w: 'connected', ll: 'connected' },
      );
      await stack.startAgent();
      assert.deepEqual(firewallLeftovers(stack.bridge), complete);
      assert.deepEqual(
        await fromA({
          g: { host: gateway, port: standIn.port },
          w: { host: b.ip_address, port: 8080 },
          ll: { host: llRemote, port: LINK_LOCAL_PORT },
        }),
        { g: 'refused', w: 'refused', ll: 'refused' },
      );

      // One jump removed: doctor fails; the worker reaches its neighbour until the start repairs it.
      await stack.stopAgent();
      execFileSync('iptables', ['-w', '-D', 'FORWARD', '-i', stack.bridge, '-j', `ESB-FWD-${stack.bridge}`]);
      doc = await doctorFirewall(env);
      assert.equal(doc.code, 1, doc.stdout);
      assert.match(
        doc.line,
        new RegExp(`^FAIL {2}firewall +partly removed: iptables jump from FORWARD to ESB-FWD-${stack.bridge} is missing`),
        doc.stdout,
      );
      assert.match(doc.line, /fix: restart the agent/);
      assert.deepEqual(await fromA({ w: { host: b.ip_address, port: 8080 } }), { w: 'connected' });
      await stack.startAgent();
      assert.deepEqual(firewallLeftovers(stack.bridge), complete);
      assert.deepEqual(await fromA({ w: { host: b.ip_address, port: 8080 } }), { w: 'refused' });
      assert.ok(stack.logs.lines.some((l) => l['msg'] === 'worker firewall was partly removed or changed; repaired'));

      // One rule inside a chain removed.
      await stack.stopAgent();
      execFileSync('iptables', ['-w', '-D', `ESB-IN-${stack.bridge}`, '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
      doc = await doctorFirewall(env);
      assert.match(
        doc.line,
        new RegExp(`^FAIL {2}firewall +partly removed: iptables chain ESB-IN-${stack.bridge} differs: 1 rule\\(s\\) missing, 0 unexpected`),
        doc.stdout,
      );
      await stack.startAgent();
      assert.deepEqual(firewallLeftovers(stack.bridge), complete);
      const metric = await stack.agent!.metrics.registry.getSingleMetricAsString('esb_agent_worker_firewall_installs_total');
      assert.match(metric, /esb_agent_worker_firewall_installs_total\{found="partial"\} 1/);
      doc = await doctorFirewall(env);
      assert.match(doc.line, /^OK {4}firewall +present/, doc.stdout);
      assert.equal((await invokeA()).status_code, 200, 'invocations work after every repair');
    },
  );

  test('stopping the stack removes the chains the agent kept', async () => {
    await stack.call('DestroyContainer', { container_id: a.id, owner_id: 'tenant-a' });
    await stack.call('DestroyContainer', { container_id: b.id, owner_id: 'tenant-b' });
    assert.ok(firewallLeftovers(stack.bridge).length > 0, 'destroying workers keeps the chains');
    await stack.stop();
    assert.deepEqual(firewallLeftovers(stack.bridge), []);
  });
});

describe('worker network isolation (docker runtime)', () => {
  let stack: DockerTestStack;
  const cleanups: (() => Promise<void> | void)[] = [];
  let gateway: string;
  let standIn: { port: number };
  let a: Worker;
  let b: Worker;

  const pidOf = async (id: string): Promise<number> => {
    const c = await stack.dockerd.client.json<{ State: { Pid: number } }>({
      method: 'GET',
      path: `/containers/${encodeURIComponent(id)}/json`,
      what: 'inspect',
    });
    assert.ok(c.State.Pid > 0, `container ${id} has a pid`);
    return c.State.Pid;
  };
  const fromA = async (targets: Record<string, Target>): Promise<Record<string, ProbeResult>> => {
    const entries = Object.entries(targets);
    const results = await probeFrom(
      await pidOf(a.id),
      entries.map(([, t]) => t),
    );
    for (const r of results) assert.ok(r.ms < 3500, `every probe settles within 3 s: ${JSON.stringify(results)}`);
    return Object.fromEntries(entries.map(([label], i) => [label, results[i]!.result]));
  };

  before(async () => {
    const s = await tcpListener('0.0.0.0');
    cleanups.push(() => s.close());
    standIn = s;
    stack = await startDockerStack();
    cleanups.push(() => stack.stop());
    gateway = stack.dockerd.network.gateway;
    a = await stack.call<Worker>('EnsureContainer', { function_name: 'iso-a', image: stack.images.worker, env: {}, owner_id: 'tenant-a' });
    b = await stack.call<Worker>('EnsureContainer', { function_name: 'iso-b', image: stack.images.worker, env: {}, owner_id: 'tenant-b' });
    cleanups.push(async () => {
      if (!stack.client) return;
      await stack.call('DestroyContainer', { container_id: a.id, owner_id: 'tenant-a' }).catch(() => undefined);
      await stack.call('DestroyContainer', { container_id: b.id, owner_id: 'tenant-b' }).catch(() => undefined);
    });
    for (const [w, owner] of [
      [a, 'tenant-a'],
      [b, 'tenant-b'],
    ] as const) {
      const res = await stack.call<{ status_code: number }>('InvokeWorker', {
        container_id: w.id,
        owner_id: owner,
        path: '',
        payload: Buffer.from('{"action":"echo"}'),
        headers: {},
        timeout_ms: 20_000,
      });
      assert.equal(res.status_code, 200);
    }
    const dnsUdp = await udpEcho(gateway, 53);
    cleanups.push(() => dnsUdp.close());
    const dnsTcp = await tcpListener(gateway, 53);
    cleanups.push(() => dnsTcp.close());
  });
  after(() => runCleanups(cleanups));

  test("from a worker: the agent's ports, the host and the other tenant are refused; DNS on the gateway is not; the host still invokes", async () => {
    // Positive controls first: each target answers the host.
    for (const t of [
      { host: gateway, port: stack.agent!.grpcPort },
      { host: gateway, port: standIn.port },
      { host: b.ip_address, port: 8080 },
    ]) {
      assert.equal(await probeFromHost(t), 'connected', `host → ${t.host}:${t.port}`);
    }
    const r = await fromA({
      grpc: { host: gateway, port: stack.agent!.grpcPort },
      metrics: { host: gateway, port: stack.agent!.metricsPort },
      standIn: { host: gateway, port: standIn.port },
      otherTenantsWorker: { host: b.ip_address, port: 8080 },
      dnsUdp: { host: gateway, port: 53, proto: 'udp' },
      dnsTcp: { host: gateway, port: 53 },
    });
    assert.deepEqual(r, {
      grpc: 'refused',
      metrics: 'refused',
      standIn: 'refused',
      otherTenantsWorker: 'refused',
      dnsUdp: 'connected',
      dnsTcp: 'connected',
    });
    const res = await stack.call<{ status_code: number }>('InvokeWorker', {
      container_id: a.id,
      owner_id: 'tenant-a',
      path: '',
      payload: Buffer.from('{"action":"echo"}'),
      headers: {},
      timeout_ms: 20_000,
    });
    assert.equal(res.status_code, 200);
    assert.ok(stack.firewallLeftovers().some((l) => l.includes(`ESB-FWD-${stack.dockerd.network.bridge}`)));
  });

  test('a CONTAINERS_NETWORK with inter-container communication on is refused at start-up, naming the network and the fix', async () => {
    const name = `esbd-icc-${randomBytes(3).toString('hex')}`;
    const subnet = freeSubnet();
    await stack.dockerd.client.json({
      method: 'POST',
      path: '/networks/create',
      body: {
        Name: name,
        Driver: 'bridge',
        IPAM: { Config: [{ Subnet: subnet }] },
        Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'false' },
      },
      what: 'create network',
    });
    cleanups.push(() =>
      stack.dockerd.client.request({ method: 'DELETE', path: `/networks/${name}`, what: 'remove network' }).then(() => undefined),
    );
    await stack.stopAgent();
    await assert.rejects(stack.startAgent({ CONTAINERS_NETWORK: name }), (err: Error) => {
      assert.match(err.message, new RegExp(`CONTAINERS_NETWORK ${name} lets containers talk to each other .*enable_icc=false`));
      return true;
    });
    await stack.startAgent();
    assert.equal((await stack.call<{ containers: unknown[] }>('ListContainers', { owner_id: 'tenant-a' })).containers.length, 1);
  });
});
