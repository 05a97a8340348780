/**
 * CniNetwork with the real CNI plugins (/usr/lib/cni: bridge, host-local, loopback, portmap) on
 * named netns made by netns.ts. Everything is private to this run: a bridge `esbt<6 hex>`, a
 * test-only subnet 10.250.<n>.0/24, ipMasq off, IPAM data and CNI cache in a temp dir. Traffic
 * goes only to the IPs of the netns made here, on the bridge made here. Cleanup is registered
 * before anything is created and removes netns, bridge, temp dirs and the servers started here.
 * Fails (never skips) when root, `ip` or the plugins are missing.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { defaultConflist, ensureConflist } from '../../src/network/default-conflist.js';
import { CniNetwork } from '../../src/cni/network.js';
import { pluginOutputOf } from '../../src/cni/exec.js';
import { createNetns, isNetnsHandle, listNetns, netnsExists, removeNetns } from '../../src/cni/netns.js';
import { containerIpv4 } from '../../src/cni/result.js';
import { FakePlugins } from '../fixtures/cni/fake-plugins.js';
import { isAgentError } from '../helpers/cni-errors.js';

const CNI_BIN = '/usr/lib/cni';

function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Interfaces enslaved to `bridge` (the host ends of worker veths); [] when the bridge is gone. */
async function portsOf(bridge: string): Promise<string[]> {
  try {
    const out = await run('ip', ['-o', 'link', 'show', 'master', bridge]);
    return out.split('\n').filter((l) => l.trim() !== '');
  } catch {
    return [];
  }
}

/** Interface names inside netns `ns`. */
async function linksIn(ns: string): Promise<string[]> {
  const out = await run('ip', ['-n', ns, '-o', 'link', 'show']);
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '');
}

/** A 10.250.<n>.0/24 that no address or route on this host touches. */
async function freeTestSubnetOctet(): Promise<number> {
  const used = `${await run('ip', ['-4', '-o', 'addr'])}\n${await run('ip', ['-4', 'route', 'show', 'table', 'all'])}`;
  for (let i = 0; i < 64; i++) {
    const n = randomBytes(1)[0]! % 250;
    if (!used.includes(`10.250.${n}.`)) return n;
  }
  throw new Error('no free 10.250.<n>.0/24 test subnet');
}

async function rulesSnapshot(): Promise<string> {
  const save = await run('iptables-save', []);
  return save
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
    .join('\n');
}

function httpGet(ip: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: ip, port, path: '/', agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        resolve(body);
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
}

const ms = (t0: number): number => Math.round(performance.now() - t0);

test('CniNetwork with the real plugins on named netns', async (t) => {
  // Preconditions: fail loudly, never skip (docs/design.md#testing).
  assert.equal(process.getuid?.(), 0, 'the CNI integration test needs root');
  for (const p of ['bridge', 'host-local', 'loopback', 'portmap']) await fs.access(path.join(CNI_BIN, p), fsConstants.X_OK);
  await run('ip', ['-V']);

  const hex = randomBytes(3).toString('hex');
  const bridge = `esbt${hex}`;
  const name = `esbt-${hex}`;
  const octet = await freeTestSubnetOctet();
  const subnet = `10.250.${octet}.0/24`;
  const gatewayIp = `10.250.${octet}.1`;
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-cni-it-'));
  const netDir = path.join(tmp, 'ipam');
  const ipamDir = path.join(netDir, name);
  const cacheDir = path.join(tmp, 'cache');
  const confFile = path.join(tmp, 'net.d', `10-${name}.conflist`);
  const netnsMade = new Set<string>();
  const children: ChildProcess[] = [];
  let fakes: FakePlugins | undefined;
  const ipForwardBefore = (await fs.readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  const rulesBefore = await rulesSnapshot();
  const timings: Record<string, number[]> = { ADD: [], DEL: [], CHECK: [], 'DEL (netns gone)': [] };

  t.after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of netnsMade) await removeNetns(ns).catch(() => undefined);
    // The bridge plugin never deletes its bridge.
    await run('ip', ['link', 'del', bridge]).catch(() => undefined);
    await fakes?.remove();
    await fs.rm(tmp, { recursive: true, force: true });
    // bridge's isGateway turned forwarding on; leave the host as it was.
    if (ipForwardBefore === '0') await fs.writeFile('/proc/sys/net/ipv4/ip_forward', '0').catch(() => undefined);
    t.diagnostic(`timings ms: ${JSON.stringify(timings)}`);
  });

  const newNetns = async (n: string): Promise<string> => {
    netnsMade.add(n);
    return createNetns(n);
  };
  const reservations = async (): Promise<string[]> => {
    try {
      return (await fs.readdir(ipamDir)).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip')).sort();
    } catch {
      return [];
    }
  };

  const cfg = { name, subnet, bridge, gatewayIp, dnsServer: gatewayIp, netDir, confFile };
  assert.equal(await ensureConflist(cfg, { ipMasq: false }), true);
  const network = new CniNetwork({ confFile, binDirs: [CNI_BIN], cacheDir, log: silentLogger() });
  await network.load();
  assert.equal(network.name, name);

  // Worker-id-like names, the last one at the 76-character maximum of a worker id.
  const ids = [`${bridge}-w1`, `${bridge}-w2`, `${bridge}-w3-${'x'.repeat(76 - bridge.length - 4)}`];
  assert.equal(ids[2]!.length, 76);
  const att: { containerId: string; netns: string; ip: string }[] = [];

  await t.test('ADD on three netns at once gives three distinct IPs in the subnet, eth0 and lo up', async () => {
    const paths = await Promise.all(ids.map((id) => newNetns(id)));
    assert.deepEqual(
      paths,
      ids.map((id) => `/run/netns/${id}`),
    );
    const results = await Promise.all(
      ids.map(async (id, i) => {
        const t0 = performance.now();
        const r = await network.add({ containerId: id, netns: paths[i]! });
        timings['ADD']!.push(ms(t0));
        return r;
      }),
    );
    for (const [i, r] of results.entries()) att.push({ containerId: ids[i]!, netns: paths[i]!, ip: containerIpv4(r, 'eth0') });
    const ips = att.map((a) => a.ip);
    assert.equal(new Set(ips).size, 3, ips.join(' '));
    for (const ip of ips) {
      assert.match(ip, new RegExp(`^10\\.250\\.${octet}\\.\\d+$`));
      assert.notEqual(ip, gatewayIp);
    }
    for (const a of att) {
      const addr = await run('ip', ['-n', a.containerId, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.ok(addr.includes(`inet ${a.ip}/24`), addr);
      assert.match(await run('ip', ['-n', a.containerId, '-o', 'link', 'show', 'lo']), /<LOOPBACK,UP,LOWER_UP>/);
    }
    assert.deepEqual(await reservations(), [...ips].sort());
    assert.equal((await portsOf(bridge)).length, 3);
  });

  await t.test("the host reaches a worker's IP on port 8080, and so does another worker across the bridge", async () => {
    const [w1, w2] = att as [(typeof att)[0], (typeof att)[0]];
    const server = spawn(
      'ip',
      [
        'netns',
        'exec',
        w1.containerId,
        process.execPath,
        '-e',
        "require('http').createServer((q, s) => s.end('hello ' + process.argv[1])).listen(8080, '0.0.0.0')",
        'w1',
      ],
      { stdio: 'ignore' },
    );
    children.push(server);
    let body = '';
    await waitFor(`HTTP on ${w1.ip}:8080`, async () => {
      body = await httpGet(w1.ip, 8080);
      return true;
    });
    assert.equal(body, 'hello w1');
    // (node as the client: busybox-static's wget segfaults on this Debian host.)
    const client =
      "require('http').get(process.argv[1], { timeout: 5000 }, (r) => r.pipe(process.stdout)).on('error', (e) => { console.error(e.message); process.exit(1); })";
    assert.equal(await run('ip', ['netns', 'exec', w2.containerId, process.execPath, '-e', client, `http://${w1.ip}:8080/`]), 'hello w1');
    server.kill('SIGKILL');
  });

  await t.test('CHECK passes for every attachment', async () => {
    for (const a of att) {
      const t0 = performance.now();
      // The plugin's own words stay out of the error (they go to the agent log); a failing
      // test needs them to be diagnosed, so they are added here.
      await network.check(a).catch((err: unknown) => {
        throw new Error(`CHECK of ${a.containerId}: ${(err as Error).message}; plugin said: ${pluginOutputOf(err) ?? 'nothing'}`, {
          cause: err,
        });
      });
      timings['CHECK']!.push(ms(t0));
    }
  });

  await t.test('the cache lists the three attachments (start-up reconciliation)', async () => {
    assert.deepEqual(
      await network.listCachedAttachments(),
      att.map(({ containerId, netns }) => ({ containerId, netns })).sort((a, b) => a.containerId.localeCompare(b.containerId)),
    );
  });

  await t.test('DEL releases every IP and veth; DEL twice is fine', async () => {
    for (const a of att) {
      const t0 = performance.now();
      await network.del(a);
      timings['DEL']!.push(ms(t0));
      assert.deepEqual(await linksIn(a.containerId), ['lo']);
    }
    assert.deepEqual(await reservations(), []);
    assert.deepEqual(
      (await fs.readdir(ipamDir)).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip')),
      [],
    );
    assert.deepEqual(await portsOf(bridge), []);
    assert.deepEqual(await fs.readdir(path.join(cacheDir, 'results')), []);
    for (const a of att) await network.del(a);
    for (const a of att) {
      await removeNetns(a.containerId);
      assert.equal(await netnsExists(a.containerId), false);
      await removeNetns(a.containerId); // idempotent
    }
  });

  await t.test('DEL after the netns was removed still releases the IP', async () => {
    const id = `${bridge}-w4`;
    const ns = await newNetns(id);
    const r = await network.add({ containerId: id, netns: ns });
    assert.deepEqual(await reservations(), [containerIpv4(r, 'eth0')]);
    await removeNetns(id);
    // The kernel destroys the netns (and the veth pair with it) asynchronously.
    await waitFor('the veth to go with the netns', async () => (await portsOf(bridge)).length === 0);
    const t0 = performance.now();
    await network.del({ containerId: id, netns: ns });
    timings['DEL (netns gone)']!.push(ms(t0));
    assert.deepEqual(await reservations(), []);
    assert.deepEqual(await network.listCachedAttachments(), []);
  });

  await t.test('a conflist naming an unknown plugin fails load() with FAILED_PRECONDITION', async () => {
    const bad = path.join(tmp, 'unknown.conflist');
    const doc = defaultConflist(cfg, { ipMasq: false });
    await fs.writeFile(bad, JSON.stringify({ ...doc, plugins: [...(doc['plugins'] as object[]), { type: 'esb-no-such-plugin' }] }));
    const n = new CniNetwork({ confFile: bad, binDirs: [CNI_BIN], cacheDir, log: silentLogger() });
    await assert.rejects(n.load(), isAgentError('FAILED_PRECONDITION', /CNI plugin esb-no-such-plugin not found in CNI_BIN_DIR/));
  });

  await t.test(
    'a cniVersion 1.1.0 conflist loads when the plugins speak 1.1.0, else fails naming the plugin and its versions',
    async () => {
      const v110 = path.join(tmp, 'v110.conflist');
      await fs.writeFile(v110, JSON.stringify({ ...defaultConflist(cfg, { ipMasq: false }), cniVersion: '1.1.0' }));
      const version = spawnSync(path.join(CNI_BIN, 'bridge'), [], {
        env: { CNI_COMMAND: 'VERSION' },
        input: '{"cniVersion":"1.0.0"}',
        encoding: 'utf8',
      });
      const bridgeVersions = JSON.parse(version.stdout) as { supportedVersions: string[] };
      const n = new CniNetwork({ confFile: v110, binDirs: [CNI_BIN], cacheDir, log: silentLogger() });
      if (bridgeVersions.supportedVersions.includes('1.1.0')) {
        await n.load();
        assert.equal(n.list.cniVersion, '1.1.0');
      } else {
        await assert.rejects(
          n.load(),
          isAgentError('FAILED_PRECONDITION', /CNI plugin \S+ does not support cniVersion 1\.1\.0 .*\(it supports .*1\.0\.0/),
        );
      }
    },
  );

  await t.test('a bad IPAM range fails ADD with INTERNAL and leaves no veth and no IP', async () => {
    const bad = path.join(tmp, 'badipam.conflist');
    const doc = defaultConflist(cfg, { ipMasq: false });
    const [br, pm] = doc['plugins'] as [Record<string, unknown>, Record<string, unknown>];
    await fs.writeFile(
      bad,
      JSON.stringify({ ...doc, plugins: [{ ...br, ipam: { ...(br['ipam'] as object), rangeStart: '10.251.0.2' } }, pm] }),
    );
    const badCache = path.join(tmp, 'cache-bad');
    const n = new CniNetwork({ confFile: bad, binDirs: [CNI_BIN], cacheDir: badCache, log: silentLogger() });
    await n.load();
    const id = `${bridge}-w5`;
    const ns = await newNetns(id);
    await assert.rejects(
      n.add({ containerId: id, netns: ns }),
      isAgentError(
        'INTERNAL',
        /CNI plugin bridge ADD failed: plugin error \(CNI error code \d+; the plugin's message is in the agent log at debug level\)$/,
        'RangeStart 10.251.0.2 not in network',
      ),
    );
    assert.deepEqual(await linksIn(id), ['lo']);
    assert.deepEqual(await portsOf(bridge), []);
    assert.deepEqual(await reservations(), []);
    // Its DEL fails on the same broken config, so the attachment stays recorded for a later DEL
    // (reconciliation) instead of being forgotten.
    assert.deepEqual(
      (await n.listCachedAttachments()).map((a) => a.containerId),
      [id],
    );
    await removeNetns(id);
  });

  await t.test('a full range fails ADD with RESOURCE_EXHAUSTED and leaves nothing of that worker', async () => {
    const one = path.join(tmp, 'one.conflist');
    const doc = defaultConflist(cfg, { ipMasq: false });
    const [br, pm] = doc['plugins'] as [Record<string, unknown>, Record<string, unknown>];
    const only = `10.250.${octet}.200`;
    await fs.writeFile(
      one,
      JSON.stringify({ ...doc, plugins: [{ ...br, ipam: { ...(br['ipam'] as object), rangeStart: only, rangeEnd: only } }, pm] }),
    );
    const n = new CniNetwork({ confFile: one, binDirs: [CNI_BIN], cacheDir, log: silentLogger() });
    await n.load();
    const [a, b] = [`${bridge}-w6`, `${bridge}-w7`];
    const nsA = await newNetns(a);
    const nsB = await newNetns(b);
    assert.equal(containerIpv4(await n.add({ containerId: a, netns: nsA }), 'eth0'), only);
    await assert.rejects(
      n.add({ containerId: b, netns: nsB }),
      isAgentError('RESOURCE_EXHAUSTED', /no IP address left in the network's range/, 'no IP addresses available'),
    );
    assert.deepEqual(await linksIn(b), ['lo']);
    assert.deepEqual(await reservations(), [only]);
    assert.equal((await portsOf(bridge)).length, 1);
    await n.del({ containerId: a, netns: nsA });
    assert.deepEqual(await reservations(), []);
    assert.deepEqual(await n.listCachedAttachments(), []);
    await removeNetns(a);
    await removeNetns(b);
  });

  await t.test('an ADD aborted in the middle of the chain (slow plugin after bridge) leaves nothing behind → CANCELLED', async () => {
    fakes = await FakePlugins.create(['esb-slow']);
    await fakes.set('esb-slow', 'ADD.sleep', '30');
    const slow = path.join(tmp, 'slow.conflist');
    const doc = defaultConflist(cfg, { ipMasq: false });
    await fs.writeFile(slow, JSON.stringify({ ...doc, plugins: [...(doc['plugins'] as object[]), { type: 'esb-slow' }] }));
    const n = new CniNetwork({ confFile: slow, binDirs: [fakes.dir, CNI_BIN], cacheDir, log: silentLogger() });
    await n.load();
    const id = `${bridge}-w8`;
    const ns = await newNetns(id);
    const ac = new AbortController();
    const p = n.add({ containerId: id, netns: ns }, { signal: ac.signal });
    const f = fakes;
    await waitFor('the slow plugin to start', async () => (await f.calls('ADD')).length === 1);
    // By now bridge has made the veth and host-local has reserved an IP.
    assert.equal((await reservations()).length, 1);
    assert.equal((await portsOf(bridge)).length, 1);
    const t0 = performance.now();
    ac.abort();
    await assert.rejects(p, isAgentError('CANCELLED'));
    t.diagnostic(`aborted ADD undone in ${ms(t0)} ms`);
    assert.deepEqual(await reservations(), []);
    assert.deepEqual(await portsOf(bridge), []);
    assert.deepEqual(await linksIn(id), ['lo']);
    assert.deepEqual(await n.listCachedAttachments(), []);
    const [call] = await f.calls('ADD');
    assert.throws(() => process.kill(call!.pid, 0), 'the slow plugin was killed');
    await removeNetns(id);
  });

  await t.test('netns: parallel creates and removes, a duplicate → ALREADY_EXISTS, removal is idempotent', async () => {
    const names = Array.from({ length: 8 }, (_, i) => `${bridge}-ns${i}`);
    const paths = await Promise.all(names.map((n) => newNetns(n)));
    for (const p of paths) assert.equal(await isNetnsHandle(p), true);
    const listed = await listNetns();
    for (const n of names) assert.ok(listed.includes(n), n);
    await assert.rejects(createNetns(names[0]!), isAgentError('ALREADY_EXISTS', /already exists/));
    // Create and remove of one name race: they run one after the other, in call order.
    const [, again] = await Promise.allSettled([removeNetns(names[1]!), createNetns(names[1]!)]);
    assert.equal(again.status, 'fulfilled');
    await Promise.all(names.flatMap((n) => [removeNetns(n), removeNetns(n)]));
    for (const n of names) assert.equal(await netnsExists(n), false);
  });

  await t.test('nothing of ours is left: netns, veths, IPs; iptables untouched', async () => {
    assert.deepEqual(
      (await listNetns()).filter((n) => n.startsWith(bridge)),
      [],
    );
    assert.deepEqual(await portsOf(bridge), []);
    assert.deepEqual(await reservations(), []);
    const rulesAfter = await rulesSnapshot();
    const added = rulesAfter.split('\n').filter((l) => !rulesBefore.split('\n').includes(l));
    // Only our own traces count: other tests on this host may change iptables meanwhile.
    assert.deepEqual(
      added.filter((l) => l.includes('CNI') || l.includes(bridge) || l.includes(`10.250.${octet}.`)),
      [],
    );
    if (rulesAfter !== rulesBefore) t.diagnostic(`iptables changed meanwhile (not by this test): ${added.join(' | ')}`);
  });
});
