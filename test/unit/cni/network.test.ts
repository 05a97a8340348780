import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, silentLogger } from '../../../src/log.js';
import { AgentMetrics } from '../../../src/metrics.js';
import { type PluginExec, spawnPlugin } from '../../../src/cni/exec.js';
import { CniNetwork, type CniNetworkOptions } from '../../../src/cni/network.js';
import { FakePlugins, type FakeCall } from '../../fixtures/cni/fake-plugins.js';
import { isAgentError } from '../../helpers/cni-errors.js';

/**
 * Loopback and the main network are attached concurrently, so the loopback ADD may land
 * anywhere among the chain's ADDs: compare with it moved to the front (the chain's own order
 * and every DEL's order stay checked).
 */
function loopbackFirst(calls: string[]): string[] {
  const i = calls.indexOf('loopback ADD lo');
  return i < 0 ? calls : ['loopback ADD lo', ...calls.slice(0, i), ...calls.slice(i + 1)];
}

/** A real netns handle that the fakes never touch: this process's own. */
const NETNS = '/proc/self/ns/net';
const ENV_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
const RESULT_A = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'br' }, { name: 'eth0', sandbox: NETNS }],
  ips: [{ address: '10.9.0.7/24', gateway: '10.9.0.1', interface: 1 }],
};
const RESULT_B = { ...RESULT_A, dns: { nameservers: ['10.9.0.1'] } };
const RESULT_LO = { cniVersion: '1.0.0', interfaces: [{ name: 'lo', sandbox: NETNS }], ips: [{ address: '127.0.0.1/8', interface: 0 }] };
const PORTS = [{ hostPort: 18080, containerPort: 8080, protocol: 'tcp' }];

interface Setup {
  readonly fakes: FakePlugins;
  readonly dir: string;
  readonly confFile: string;
  readonly cacheDir: string;
  readonly metrics: AgentMetrics;
  readonly logs: Record<string, unknown>[];
  network(over?: Partial<CniNetworkOptions>): Promise<CniNetwork>;
}

async function setup(t: { after: (fn: () => Promise<void>) => void }, list: Record<string, unknown> = {}): Promise<Setup> {
  const fakes = await FakePlugins.create(['loopback', 'plug-a', 'plug-b', 'ipam-x']);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-cni-net-'));
  t.after(async () => {
    await fakes.remove();
    await fs.rm(dir, { recursive: true, force: true });
  });
  await fakes.set('loopback', 'result', RESULT_LO);
  await fakes.set('plug-a', 'result', RESULT_A);
  await fakes.set('plug-b', 'result', RESULT_B);
  const confFile = path.join(dir, '10-test.conflist');
  await fs.writeFile(
    confFile,
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'testnet',
      plugins: [
        { type: 'plug-a', ipam: { type: 'ipam-x' } },
        { type: 'plug-b', capabilities: { portMappings: true } },
      ],
      ...list,
    }),
  );
  const cacheDir = path.join(dir, 'cache');
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const logs: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const log = createLogger({ level: 'info', format: 'json', destination });
  return {
    fakes,
    dir,
    confFile,
    cacheDir,
    metrics,
    logs,
    async network(over = {}) {
      const n = new CniNetwork({ confFile, binDirs: [fakes.dir], cacheDir, log, metrics, envPath: ENV_PATH, ...over });
      await n.load();
      await fakes.clearCalls(); // forget load()'s VERSION calls
      return n;
    },
  };
}

const hasPrev = (c: FakeCall): boolean => c.stdin !== null && 'prevResult' in c.stdin;
const summary = (calls: FakeCall[]): string[] => calls.map((c) => `${c.type} ${c.command} ${c.ifName}`);

async function cniErrors(m: AgentMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await m.cniErrors.get()).values) out[String(v.labels.command)] = v.value;
  return out;
}

test('load() checks every plugin and IPAM binary and its VERSION, and prepares the cache dir', async (t) => {
  const s = await setup(t);
  const n = new CniNetwork({ confFile: s.confFile, binDirs: [s.fakes.dir], cacheDir: s.cacheDir, log: silentLogger(), envPath: ENV_PATH });
  assert.throws(() => n.name, isAgentError('FAILED_PRECONDITION', /not loaded/));
  await n.load();
  assert.equal(n.name, 'testnet');
  assert.equal(n.ifName, 'eth0');
  assert.deepEqual((await s.fakes.calls('VERSION')).map((c) => c.type).sort(), ['ipam-x', 'loopback', 'plug-a', 'plug-b']);
  assert.ok((await fs.stat(path.join(s.cacheDir, 'results'))).isDirectory());
});

test('load(): a missing plugin, IPAM plugin or loopback → FAILED_PRECONDITION naming it and the dirs', async (t) => {
  const s = await setup(t);
  await fs.rm(path.join(s.fakes.dir, 'ipam-x'));
  await assert.rejects(s.network(), isAgentError('FAILED_PRECONDITION', /CNI plugin ipam-x not found in CNI_BIN_DIR/));
  await s.fakes.add('ipam-x');
  await fs.rm(path.join(s.fakes.dir, 'loopback'));
  await assert.rejects(s.network(), isAgentError('FAILED_PRECONDITION', /CNI plugin loopback not found/));
});

test("load(): a plugin that does not speak the list's cniVersion → FAILED_PRECONDITION", async (t) => {
  const s = await setup(t);
  await s.fakes.set('plug-b', 'version', { cniVersion: '0.4.0', supportedVersions: ['0.3.1', '0.4.0'] });
  await assert.rejects(
    s.network(),
    isAgentError('FAILED_PRECONDITION', /CNI plugin plug-b does not support cniVersion 1\.0\.0 .*\(it supports 0\.3\.1, 0\.4\.0\)/),
  );
});

test('load(): missing conflist → FAILED_PRECONDITION; the reserved loopback name → INVALID_ARGUMENT', async (t) => {
  const s = await setup(t);
  await assert.rejects(
    s.network({ confFile: path.join(s.dir, 'none.conflist') }),
    isAgentError('FAILED_PRECONDITION', /none\.conflist does not exist/),
  );
  await fs.writeFile(s.confFile, JSON.stringify({ cniVersion: '1.0.0', name: 'cni-loopback', plugins: [{ type: 'plug-a' }] }));
  await assert.rejects(s.network(), isAgentError('INVALID_ARGUMENT', /reserved/));
});

test('add(): loopback (ifname lo) alongside the list, the list in order in order with prevResult chaining and filtered runtimeConfig', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  const result = await n.add(
    { containerId: 'w1', netns: NETNS },
    { cniArgs: [['IgnoreUnknown', '1']], capabilityArgs: { portMappings: PORTS, bandwidth: { rate: 1 } } },
  );
  assert.deepEqual(result.ips, RESULT_B.ips);
  assert.deepEqual(result.dns, RESULT_B.dns);

  const calls = await s.fakes.calls();
  assert.deepEqual(loopbackFirst(summary(calls)), ['loopback ADD lo', 'plug-a ADD eth0', 'plug-b ADD eth0']);
  const byType = (type: string): FakeCall => {
    const c = calls.find((x) => x.stdin?.['type'] === type);
    assert.ok(c, `no ${type} call`);
    return c;
  };
  const [lo, a, b] = [byType('loopback'), byType('plug-a'), byType('plug-b')];
  assert.deepEqual(lo.stdin, { cniVersion: '1.0.0', name: 'cni-loopback', type: 'loopback' });
  assert.deepEqual(a.stdin, { cniVersion: '1.0.0', name: 'testnet', type: 'plug-a', ipam: { type: 'ipam-x' } });
  assert.deepEqual(b.stdin, {
    cniVersion: '1.0.0',
    name: 'testnet',
    type: 'plug-b',
    runtimeConfig: { portMappings: PORTS },
    prevResult: RESULT_A,
  });
  for (const c of calls) {
    assert.equal(c.containerId, 'w1');
    assert.equal(c.netns, NETNS);
    assert.equal(c.args, 'IgnoreUnknown=1');
    assert.equal(c.cniPath, s.fakes.dir);
  }

  // libcni's cache format, one file per network.
  const files = (await fs.readdir(path.join(s.cacheDir, 'results'))).sort();
  assert.deepEqual(files, ['cni-loopback-w1-lo', 'testnet-w1-eth0']);
  const entry = JSON.parse(await fs.readFile(path.join(s.cacheDir, 'results', 'testnet-w1-eth0'), 'utf8')) as Record<string, unknown>;
  assert.equal(entry['kind'], 'cniCacheV1');
  assert.equal(entry['containerId'], 'w1');
  assert.equal(entry['ifName'], 'eth0');
  assert.equal(entry['networkName'], 'testnet');
  assert.equal(entry['netns'], NETNS);
  assert.deepEqual(entry['result'], RESULT_B);
  assert.deepEqual(entry['cniArgs'], [['IgnoreUnknown', '1']]);
  assert.equal((JSON.parse(Buffer.from(entry['config'] as string, 'base64').toString()) as { name: string }).name, 'testnet');

  assert.deepEqual(await n.listCachedAttachments(), [{ containerId: 'w1', netns: NETNS }]);
  const line = s.logs.find((l) => l['msg'] === 'CNI ADD');
  assert.ok(line);
  assert.equal(line['module'], 'cni');
  assert.equal(line['containerId'], 'w1');
  assert.equal(line['ip'], '10.9.0.7');
  assert.equal(typeof line['ms'], 'number');
});

test('check(): every plugin, in order, with the cached result as prevResult', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await s.fakes.clearCalls();
  await n.check({ containerId: 'w1', netns: NETNS });
  const calls = await s.fakes.calls();
  assert.deepEqual(summary(calls), ['loopback CHECK lo', 'plug-a CHECK eth0', 'plug-b CHECK eth0']);
  assert.deepEqual(calls[0]?.stdin?.['prevResult'], RESULT_LO);
  assert.deepEqual(calls[1]?.stdin?.['prevResult'], RESULT_B);
  assert.deepEqual(calls[2]?.stdin?.['prevResult'], RESULT_B);
  await s.fakes.set('plug-a', 'CHECK.error', { code: 100, msg: 'eth0 missing' });
  await assert.rejects(
    n.check({ containerId: 'w1', netns: NETNS }),
    isAgentError('INTERNAL', /CNI plugin plug-a CHECK failed: plugin error \(CNI error code 100;/, 'eth0 missing'),
  );
  assert.deepEqual(await cniErrors(s.metrics), { CHECK: 1 });
});

test('check(): never added → FAILED_PRECONDITION; disableCheck → no plugin runs', async (t) => {
  const s = await setup(t, { disableCheck: true });
  const n = await s.network();
  await assert.rejects(n.check({ containerId: 'w9', netns: NETNS }), isAgentError('FAILED_PRECONDITION', /no cached ADD result/));
  await n.add({ containerId: 'w1', netns: NETNS });
  await s.fakes.clearCalls();
  await n.check({ containerId: 'w1', netns: NETNS });
  assert.deepEqual(await s.fakes.calls(), []);
});

test('del(): reverse order, main network then loopback, cached result as prevResult, cache removed', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS }, { cniArgs: [['IgnoreUnknown', '1']], capabilityArgs: { portMappings: PORTS } });
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w1', netns: NETNS });
  const calls = await s.fakes.calls();
  assert.deepEqual(summary(calls), ['plug-b DEL eth0', 'plug-a DEL eth0', 'loopback DEL lo']);
  const [b, a, lo] = calls as [FakeCall, FakeCall, FakeCall];
  assert.deepEqual(b.stdin, {
    cniVersion: '1.0.0',
    name: 'testnet',
    type: 'plug-b',
    runtimeConfig: { portMappings: PORTS },
    prevResult: RESULT_B,
  });
  assert.deepEqual(a.stdin?.['prevResult'], RESULT_B);
  assert.deepEqual(lo.stdin?.['prevResult'], RESULT_LO);
  for (const c of calls) {
    assert.equal(c.netns, NETNS);
    assert.equal(c.args, 'IgnoreUnknown=1'); // the ADD's CNI_ARGS, from the cache
  }
  assert.deepEqual(await fs.readdir(path.join(s.cacheDir, 'results')), []);
  assert.deepEqual(await n.listCachedAttachments(), []);
  assert.ok(s.logs.some((l) => l['msg'] === 'CNI DEL' && l['containerId'] === 'w1' && typeof l['ms'] === 'number'));
});

test('del() is idempotent: twice, or for an id never added, every plugin still runs (IPAM release) without prevResult', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await n.del({ containerId: 'w1', netns: NETNS });
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w1', netns: NETNS });
  await n.del({ containerId: 'never', netns: NETNS });
  const calls = await s.fakes.calls();
  assert.deepEqual(summary(calls), [
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
  ]);
  for (const c of calls) assert.equal(hasPrev(c), false);
});

test('del() after the netns is gone: empty CNI_NETNS, still runs every plugin; an empty netns uses the cached one', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w1', netns: '/run/netns/esb-test-does-not-exist' });
  const gone = await s.fakes.calls();
  assert.deepEqual(summary(gone), ['plug-b DEL eth0', 'plug-a DEL eth0', 'loopback DEL lo']);
  for (const c of gone) assert.equal(c.netns, '');
  assert.deepEqual(gone[0]?.stdin?.['prevResult'], RESULT_B);

  await n.add({ containerId: 'w2', netns: NETNS });
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w2', netns: '' });
  for (const c of await s.fakes.calls()) assert.equal(c.netns, NETNS);
});

test('del() uses the conflist the ADD used (from the cache), not a changed file', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await fs.writeFile(s.confFile, JSON.stringify({ cniVersion: '1.0.0', name: 'testnet', plugins: [{ type: 'plug-a' }] }));
  const changed = await s.network();
  await changed.del({ containerId: 'w1', netns: NETNS });
  assert.deepEqual(summary(await s.fakes.calls()), ['plug-b DEL eth0', 'plug-a DEL eth0', 'loopback DEL lo']);
});

test('del(): a failing plugin → INTERNAL, the cache entry stays for a retry, loopback is still detached', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await s.fakes.set('plug-b', 'DEL.error', { code: 100, msg: 'iptables locked' });
  await s.fakes.clearCalls();
  await assert.rejects(
    n.del({ containerId: 'w1', netns: NETNS }),
    isAgentError('INTERNAL', /CNI plugin plug-b DEL failed: plugin error \(CNI error code 100;/, 'iptables locked'),
  );
  assert.deepEqual(summary(await s.fakes.calls()), ['plug-b DEL eth0', 'loopback DEL lo']);
  assert.deepEqual(await n.listCachedAttachments(), [{ containerId: 'w1', netns: NETNS }]);
  assert.deepEqual(await cniErrors(s.metrics), { DEL: 1 });
  await s.fakes.unset('plug-b', 'DEL.error');
  await n.del({ containerId: 'w1', netns: NETNS });
  assert.deepEqual(await n.listCachedAttachments(), []);
});

test("add() failing mid-chain runs DEL for every plugin in reverse, leaves no cache, and throws the plugin's error", async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await s.fakes.set('plug-b', 'ADD.error', { cniVersion: '1.0.0', code: 7, msg: 'invalid network config', details: 'bad ipam' });
  await assert.rejects(
    n.add({ containerId: 'w1', netns: NETNS }),
    isAgentError(
      'INTERNAL',
      /^CNI plugin plug-b ADD failed: plugin error \(CNI error code 7; the plugin's message is in the agent log at debug level\)$/,
      'invalid network config: bad ipam',
    ),
  );
  const calls = await s.fakes.calls();
  assert.deepEqual(loopbackFirst(summary(calls)), [
    'loopback ADD lo',
    'plug-a ADD eth0',
    'plug-b ADD eth0',
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
  ]);
  for (const c of calls.filter((x) => x.command === 'DEL')) assert.equal(hasPrev(c), false);
  assert.deepEqual(await fs.readdir(path.join(s.cacheDir, 'results')), []);
  assert.deepEqual(await cniErrors(s.metrics), { ADD: 1 });
});

test('add(): code 11 from a plugin → UNAVAILABLE, undone like any failure', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await s.fakes.set('plug-a', 'ADD.error', { code: 11, msg: 'try again later' });
  await assert.rejects(n.add({ containerId: 'w1', netns: NETNS }), isAgentError('UNAVAILABLE', /try again later \(CNI error code 11;/));
  assert.deepEqual(summary(await s.fakes.calls('DEL')), ['plug-b DEL eth0', 'plug-a DEL eth0', 'loopback DEL lo']);
});

test('add(): a plugin printing an invalid result stops the chain → INTERNAL, undone', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await s.fakes.set('plug-a', 'result', { cniVersion: '1.0.0', ips: [{ address: 'nope' }] });
  await assert.rejects(n.add({ containerId: 'w1', netns: NETNS }), isAgentError('INTERNAL', /plug-a ADD returned an invalid CNI result/));
  assert.deepEqual(loopbackFirst(summary(await s.fakes.calls())), [
    'loopback ADD lo',
    'plug-a ADD eth0',
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
  ]);
});

test("add() aborted mid-chain: the running plugin is killed, everything is undone without the caller's signal → CANCELLED", async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await s.fakes.set('plug-b', 'ADD.sleep', '30');
  const ac = new AbortController();
  const p = n.add({ containerId: 'w1', netns: NETNS }, { signal: ac.signal });
  await waitUntil(async () => (await s.fakes.calls()).some((c) => c.type === 'plug-b'));
  const t0 = Date.now();
  ac.abort();
  await assert.rejects(p, isAgentError('CANCELLED', /cancelled/));
  assert.ok(Date.now() - t0 < 5000);
  const calls = await s.fakes.calls();
  assert.deepEqual(loopbackFirst(summary(calls)), [
    'loopback ADD lo',
    'plug-a ADD eth0',
    'plug-b ADD eth0',
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
  ]);
  assert.throws(() => process.kill(calls[2]!.pid, 0)); // the sleeping plugin is gone
  assert.deepEqual(await fs.readdir(path.join(s.cacheDir, 'results')), []);
  assert.deepEqual(await cniErrors(s.metrics), {}); // a cancel is not a plugin failure
});

test('add(): a DEL that fails while undoing leaves result-less cache entries so the attachment is found later', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await s.fakes.set('plug-b', 'ADD.error', { code: 100, msg: 'boom' });
  await s.fakes.set('plug-a', 'DEL.error', { code: 100, msg: 'stuck' });
  await assert.rejects(n.add({ containerId: 'w1', netns: NETNS }), isAgentError('INTERNAL', /plug-b ADD failed: /, 'boom'));
  assert.deepEqual(await n.listCachedAttachments(), [{ containerId: 'w1', netns: NETNS }]);
  // Until it is DEL'ed, the id cannot be ADDed again.
  await assert.rejects(n.add({ containerId: 'w1', netns: NETNS }), isAgentError('ALREADY_EXISTS'));
  await s.fakes.unset('plug-a', 'DEL.error');
  await s.fakes.unset('plug-b', 'ADD.error');
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w1', netns: NETNS });
  assert.deepEqual(summary(await s.fakes.calls()), ['plug-b DEL eth0', 'plug-a DEL eth0', 'loopback DEL lo']);
  assert.deepEqual(await n.listCachedAttachments(), []);
  await n.add({ containerId: 'w1', netns: NETNS });
});

test('add(): bad input is refused before any plugin runs', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await s.fakes.clearCalls();
  await assert.rejects(n.add({ containerId: 'w1', netns: NETNS }), isAgentError('ALREADY_EXISTS', /w1 is already on network testnet/));
  await assert.rejects(
    n.add({ containerId: 'w2', netns: '/run/netns/esb-test-none' }),
    isAgentError('FAILED_PRECONDITION', /^the netns of w2 does not exist$/),
  );
  await assert.rejects(n.add({ containerId: '-x', netns: NETNS }), isAgentError('INVALID_ARGUMENT', /container id/));
  await assert.rejects(n.add({ containerId: 'w3', netns: 'relative' }), isAgentError('INVALID_ARGUMENT', /absolute path/));
  await assert.rejects(n.add({ containerId: 'w3', netns: NETNS }, { cniArgs: [['A', 'b;c']] }), isAgentError('INVALID_ARGUMENT'));
  await assert.rejects(n.add({ containerId: 'w3', netns: NETNS }, { signal: AbortSignal.abort() }), isAgentError('CANCELLED'));
  assert.deepEqual(await s.fakes.calls(), []);
  assert.throws(
    () =>
      new CniNetwork({
        confFile: s.confFile,
        binDirs: [s.fakes.dir],
        cacheDir: s.cacheDir,
        log: silentLogger(),
        ifName: 'a-very-long-interface',
      }),
    isAgentError('INVALID_ARGUMENT'),
  );
});

test('calls for one container id run one after another; different ids run in parallel up to the exec cap', async (t) => {
  const s = await setup(t);
  let running = 0;
  let peak = 0;
  const exec: PluginExec = async (req) => {
    running++;
    peak = Math.max(peak, running);
    try {
      return await spawnPlugin(req);
    } finally {
      running--;
    }
  };
  const n = await s.network({ exec, maxConcurrentExecs: 2 });
  await s.fakes.set('plug-a', 'ADD.sleep', '0.2');
  await Promise.all(['w1', 'w2', 'w3', 'w4'].map((id) => n.add({ containerId: id, netns: NETNS })));
  assert.equal(peak, 2);
  assert.equal((await n.listCachedAttachments()).length, 4);

  // ADD then DEL of one id, started together: the DEL waits for the whole ADD.
  await s.fakes.clearCalls();
  await Promise.all([n.add({ containerId: 'w5', netns: NETNS }), n.del({ containerId: 'w5', netns: NETNS })]);
  assert.deepEqual(loopbackFirst(summary(await s.fakes.calls())), [
    'loopback ADD lo',
    'plug-a ADD eth0',
    'plug-b ADD eth0',
    'plug-b DEL eth0',
    'plug-a DEL eth0',
    'loopback DEL lo',
  ]);
});

test('a 0.3.1 network: DEL gets no prevResult (it came with 0.4.0), CHECK → UNIMPLEMENTED', async (t) => {
  const s = await setup(t, { cniVersion: '0.3.1' });
  await s.fakes.set('loopback', 'result', { ...RESULT_LO, cniVersion: '0.3.1' });
  await s.fakes.set('plug-a', 'result', { ...RESULT_A, cniVersion: '0.3.1' });
  await s.fakes.set('plug-b', 'result', { ...RESULT_B, cniVersion: '0.3.1' });
  const n = await s.network();
  await n.add({ containerId: 'w1', netns: NETNS });
  await assert.rejects(n.check({ containerId: 'w1', netns: NETNS }), isAgentError('UNIMPLEMENTED', /0\.4\.0/));
  await s.fakes.clearCalls();
  await n.del({ containerId: 'w1', netns: NETNS });
  for (const c of await s.fakes.calls()) {
    assert.equal(c.stdin?.['cniVersion'], '0.3.1');
    assert.equal(hasPrev(c), false);
  }
});

test('listCachedAttachments: one per id, loopback-only entries count, foreign and broken files are skipped', async (t) => {
  const s = await setup(t);
  const n = await s.network();
  await n.add({ containerId: 'w2', netns: NETNS });
  const results = path.join(s.cacheDir, 'results');
  // A crash between the loopback ADD and the main ADD leaves only the loopback entry.
  await fs.copyFile(path.join(results, 'cni-loopback-w2-lo'), path.join(results, 'cni-loopback-w1-lo'));
  const lo = JSON.parse(await fs.readFile(path.join(results, 'cni-loopback-w1-lo'), 'utf8')) as Record<string, unknown>;
  await fs.writeFile(path.join(results, 'cni-loopback-w1-lo'), JSON.stringify({ ...lo, containerId: 'w1', netns: '/run/netns/w1' }));
  await fs.writeFile(
    path.join(results, 'othernet-w3-eth0'),
    JSON.stringify({ ...lo, containerId: 'w3', networkName: 'othernet', ifName: 'eth0' }),
  );
  await fs.writeFile(path.join(results, 'garbage'), '{');
  await fs.writeFile(path.join(results, '.testnet-w4-eth0.123.tmp'), '{');
  assert.deepEqual(await n.listCachedAttachments(), [
    { containerId: 'w1', netns: '/run/netns/w1' },
    { containerId: 'w2', netns: NETNS },
  ]);
  assert.ok(s.logs.some((l) => l['msg'] === 'skipping undecodable CNI cache file' && String(l['file']).endsWith('garbage')));
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
