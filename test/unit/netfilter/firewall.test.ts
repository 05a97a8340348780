import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../../src/log.js';
import { WorkerFirewall } from '../../../src/netfilter/firewall.js';
import type { Iptables } from '../../../src/netfilter/iptables.js';
import type { Family } from '../../../src/netfilter/rules.js';

/**
 * An in-memory filter table that understands the scripts the firewall writes (chain
 * declarations flush, -A, -I <parent> 1, -D, -X): enough to check the firewall's decisions.
 */
class FakeTable implements Iptables {
  readonly chains = new Map<string, string[]>([
    ['INPUT', []],
    ['FORWARD', []],
  ]);
  readonly scripts: string[] = [];
  lists = 0;

  /** IPv4 only, like a host without ip6tables. */
  listTable(family: Family): Promise<string> {
    if (family === 'ipv6') return Promise.reject(new Error('ip6tables: not found'));
    this.lists++;
    const lines = ['-P INPUT ACCEPT', '-P FORWARD ACCEPT'];
    for (const chain of this.chains.keys()) {
      if (chain !== 'INPUT' && chain !== 'FORWARD') lines.push(`-N ${chain}`);
    }
    for (const [chain, rules] of this.chains) lines.push(...rules.map((r) => `-A ${chain} ${r}`));
    return Promise.resolve(`${lines.join('\n')}\n`);
  }

  restore(_family: Family, script: string): Promise<void> {
    this.scripts.push(script);
    for (const line of script.split('\n')) {
      let m: RegExpExecArray | null;
      if ((m = /^:(\S+) /.exec(line))) this.chains.set(m[1]!, []);
      else if ((m = /^-A (\S+) (.*)$/.exec(line))) this.chains.get(m[1]!)!.push(m[2]!);
      else if ((m = /^-I (\S+) 1 (.*)$/.exec(line))) this.chains.get(m[1]!)!.unshift(m[2]!);
      else if ((m = /^-D (\S+) (.*)$/.exec(line))) {
        const rules = this.chains.get(m[1]!)!;
        rules.splice(rules.indexOf(m[2]!), 1);
      } else if ((m = /^-X (\S+)$/.exec(line))) this.chains.delete(m[1]!);
    }
    return Promise.resolve();
  }
}

const NET = { bridge: 'esb0', subnet: '10.88.0.0/16', ipv6: false };
const POLICY = { dnsServer: '10.88.0.1', allowedHostPorts: [] };

test('install creates both chains and one jump each; a second install finds them present and writes nothing', async () => {
  const table = new FakeTable();
  const found: string[] = [];
  const fw = new WorkerFirewall({ policy: POLICY, log: silentLogger(), iptables: table, onInstall: (f) => found.push(f) });
  assert.equal(await fw.install(NET), 'missing');
  assert.deepEqual(table.chains.get('INPUT'), ['-i esb0 -j ESB-IN-esb0']);
  assert.deepEqual(table.chains.get('FORWARD'), ['-i esb0 -j ESB-FWD-esb0']);
  assert.equal(table.chains.get('ESB-IN-esb0')?.length, 5);
  assert.equal(await fw.install(NET), 'present');
  assert.equal(table.scripts.length, 1);
  assert.deepEqual(found, ['missing']);
  assert.equal((await fw.check(NET)).status, 'present');
});

test('a removed rule, a missing jump and a duplicated jump are repaired in one restore', async () => {
  const table = new FakeTable();
  const fw = new WorkerFirewall({ policy: POLICY, log: silentLogger(), iptables: table });
  await fw.install(NET);
  table.chains.get('ESB-FWD-esb0')!.splice(1, 1);
  table.chains.get('INPUT')!.push('-i esb0 -j ESB-IN-esb0');
  table.chains.set('FORWARD', ['-i other -j ACCEPT']);
  const before = await fw.check(NET);
  assert.equal(before.status, 'partial');
  assert.equal(before.problems.length, 3, before.problems.join('; '));
  assert.equal(await fw.install(NET), 'partial');
  assert.equal(table.scripts.length, 2);
  assert.deepEqual(table.chains.get('INPUT'), ['-i esb0 -j ESB-IN-esb0']);
  assert.deepEqual(table.chains.get('FORWARD'), ['-i esb0 -j ESB-FWD-esb0', '-i other -j ACCEPT']);
  assert.equal((await fw.check(NET)).status, 'present');
});

test('ensure checks a bridge once per process, and again after a failure', async () => {
  const table = new FakeTable();
  const fw = new WorkerFirewall({ policy: POLICY, log: silentLogger(), iptables: table });
  await Promise.all([fw.ensure(NET), fw.ensure(NET), fw.ensure(NET)]);
  const lists = table.lists;
  await fw.ensure(NET);
  assert.equal(table.lists, lists, 'no iptables call for a bridge already checked');
  assert.equal(table.scripts.length, 1);

  const failing = new FakeTable();
  let fail = true;
  const restore = failing.restore.bind(failing);
  failing.restore = async (f, s) => {
    if (fail) throw new Error('xtables lock');
    await restore(f, s);
  };
  const fw2 = new WorkerFirewall({ policy: POLICY, log: silentLogger(), iptables: failing });
  await assert.rejects(fw2.ensure(NET), /xtables lock/);
  fail = false;
  await fw2.ensure(NET);
  assert.equal((await fw2.check(NET)).status, 'present');
});

test('remove deletes the jumps and the chains and leaves other rules alone', async () => {
  const table = new FakeTable();
  const fw = new WorkerFirewall({ policy: POLICY, log: silentLogger(), iptables: table });
  await fw.install(NET);
  table.chains.get('INPUT')!.push('-i eth0 -j ACCEPT');
  assert.equal(await fw.remove(NET), 'present');
  assert.deepEqual(table.chains.get('INPUT'), ['-i eth0 -j ACCEPT']);
  assert.deepEqual(table.chains.get('FORWARD'), []);
  assert.equal(table.chains.has('ESB-IN-esb0'), false);
  assert.equal(table.chains.has('ESB-FWD-esb0'), false);
  assert.equal(await fw.remove(NET), 'missing');
});
