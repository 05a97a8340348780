import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { containerIpv4, parseResult } from '../../../src/cni/result.js';

/** What the bridge plugin printed on this host (cniVersion 1.0.0): bridge, host veth, eth0. */
const BRIDGE_1_0 = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'esb0', mac: '6a:1f:00:00:00:01' },
    { name: 'veth1234', mac: '6a:1f:00:00:00:02' },
    { name: 'eth0', mac: '6a:1f:00:00:00:03', sandbox: '/run/netns/w1' },
  ],
  ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

const BRIDGE_0_4 = {
  cniVersion: '0.4.0',
  interfaces: BRIDGE_1_0.interfaces,
  ips: [
    { version: '4', address: '10.213.0.3/24', gateway: '10.213.0.1', interface: 2 },
    { version: '6', address: 'fd00::3/64', gateway: 'fd00::1', interface: 2 },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.213.0.1' }],
  dns: { nameservers: ['10.213.0.1'], search: ['svc'] },
};

test('parseResult reads a 1.0.0 bridge result', () => {
  const r = parseResult(BRIDGE_1_0, 'test');
  assert.equal(r.cniVersion, '1.0.0');
  assert.equal(r.interfaces.length, 3);
  assert.deepEqual(r.interfaces[2], { name: 'eth0', mac: '6a:1f:00:00:00:03', sandbox: '/run/netns/w1' });
  assert.deepEqual(r.ips, [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 2 }]);
  assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0' }]);
  assert.deepEqual(r.dns, {});
});

test('parseResult reads a 0.4.0 result and drops ips[].version', () => {
  const r = parseResult(BRIDGE_0_4, 'test');
  assert.equal(r.cniVersion, '0.4.0');
  assert.deepEqual(r.ips[0], { address: '10.213.0.3/24', gateway: '10.213.0.1', interface: 2 });
  assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: '10.213.0.1' }]);
  assert.deepEqual(r.dns, { nameservers: ['10.213.0.1'], search: ['svc'] });
});

test('parseResult accepts a 0.3.1 result and a result with no lists (a chained plugin with nothing to add)', () => {
  assert.equal(parseResult({ ...BRIDGE_0_4, cniVersion: '0.3.1' }, 'test').ips.length, 2);
  assert.deepEqual(parseResult({ cniVersion: '1.0.0' }, 'test'), { cniVersion: '1.0.0', interfaces: [], ips: [], routes: [], dns: {} });
});

test('parseResult rejects broken results → INTERNAL naming the plugin', () => {
  const cases: [unknown, RegExp][] = [
    [null, /not a JSON object/],
    [[], /not a JSON object/],
    [{}, /cniVersion missing/],
    [{ cniVersion: '0.2.0', ip4: { ip: '10.0.0.2/24' } }, /unsupported cniVersion \(expected/],
    [{ cniVersion: '1.0.0', interfaces: {} }, /interfaces is not an array/],
    [{ cniVersion: '1.0.0', interfaces: [{ mac: 'x' }] }, /interfaces\[0\]\.name missing/],
    [{ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2' }] }, /ips\[0\]\.address is not an IP\/prefix/],
    [{ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/33' }] }, /not an IP\/prefix/],
    [
      { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24', interface: 0 }] },
      /ips\[0\]\.interface 0 is not an index into interfaces \(0\)/,
    ],
    [{ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24', gateway: 'nope' }] }, /ips\[0\]\.gateway is not an IP/],
    [{ cniVersion: '0.4.0', ips: [{ version: '6', address: '10.0.0.2/24' }] }, /ips\[0\]\.version does not match its address/],
    [{ cniVersion: '1.0.0', routes: [{ gw: '10.0.0.1' }] }, /routes\[0\]\.dst/],
    [{ cniVersion: '1.0.0', dns: { nameservers: [1] } }, /dns\.nameservers is not a list of strings/],
  ];
  for (const [input, re] of cases) {
    assert.throws(
      () => parseResult(input, 'CNI plugin fake ADD'),
      (err: unknown) =>
        err instanceof AgentError &&
        err.code === 'INTERNAL' &&
        err.message.startsWith('CNI plugin fake ADD returned an invalid CNI result') &&
        re.test(err.message),
      JSON.stringify(input),
    );
  }
});

test('containerIpv4 takes the IPv4 of the sandbox interface, not of the host veth', () => {
  const r = parseResult(
    {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'esb0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/w1' }],
      // The host side's address comes first: a naive "first IP" would pick it.
      ips: [
        { address: '10.88.0.1/16', interface: 0 },
        { address: 'fd00::5/64', interface: 2 },
        { address: '10.88.0.5/16', interface: 2 },
      ],
    },
    'test',
  );
  assert.equal(containerIpv4(r, 'eth0'), '10.88.0.5');
  assert.equal(containerIpv4(parseResult(BRIDGE_0_4, 'test'), 'eth0'), '10.213.0.3');
});

test('containerIpv4 with no IPv4 on that sandbox interface → INTERNAL', () => {
  const r = parseResult(BRIDGE_1_0, 'test');
  const isInternal = (err: unknown): boolean => err instanceof AgentError && err.code === 'INTERNAL' && err.message.includes('eth1');
  assert.throws(() => containerIpv4(r, 'eth1'), isInternal);
  // An address without interface index (an IPAM-style result) is not attributed to any interface.
  const ipam = parseResult({ cniVersion: '1.0.0', ips: [{ address: '10.88.0.5/16' }] }, 'test');
  assert.throws(() => containerIpv4(ipam, 'eth0'), AgentError);
  // The name matches but the interface is on the host (no sandbox).
  const host = parseResult(
    { cniVersion: '1.0.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.88.0.5/16', interface: 0 }] },
    'test',
  );
  assert.throws(() => containerIpv4(host, 'eth0'), AgentError);
});
