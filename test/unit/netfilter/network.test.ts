import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNetworkList } from '../../../src/cni/conflist.js';
import { parseResult } from '../../../src/cni/result.js';
import { AgentError } from '../../../src/errors.js';
import { networkFromConflist, networkFromResult, subnetOf } from '../../../src/netfilter/network.js';
import { describeDockerNetwork, dockerWorkerNetwork } from '../../../src/runtime/docker/network.js';

const list = (plugins: object[]): ReturnType<typeof parseNetworkList> =>
  parseNetworkList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins }), 'test');

test('a conflist with the bridge plugin names its bridge (or the plugin default cni0) and subnets', () => {
  assert.deepEqual(
    networkFromConflist(
      list([{ type: 'bridge', bridge: 'esb0', ipam: { type: 'host-local', subnet: '10.88.0.0/16' } }, { type: 'portmap' }]),
    ),
    { bridge: 'esb0', subnet: '10.88.0.0/16', ipv6: false },
  );
  assert.deepEqual(
    networkFromConflist(
      list([{ type: 'bridge', ipam: { type: 'host-local', ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64' }]] } }]),
    ),
    { bridge: 'cni0', subnet: '10.1.0.0/24,fd00::/64', ipv6: true },
  );
  assert.equal(networkFromConflist(list([{ type: 'macvlan', master: 'eth0' }])), undefined);
});

const ADD = parseResult(
  {
    cniVersion: '1.0.0',
    interfaces: [
      { name: 'br7', mac: '00:11:22:33:44:55' },
      { name: 'veth1234', mac: '00:11:22:33:44:66' },
      { name: 'eth0', mac: '00:11:22:33:44:77', sandbox: '/run/netns/x' },
    ],
    ips: [{ address: '10.9.0.5/24', gateway: '10.9.0.1', interface: 2 }],
  },
  'test',
);

test('an ADD result gives the host-side interface that is a bridge, and the subnet of the address', async () => {
  const asked: string[] = [];
  const net = await networkFromResult(ADD, 'n', (name) => {
    asked.push(name);
    return Promise.resolve(name === 'br7');
  });
  assert.deepEqual(net, { bridge: 'br7', subnet: '10.9.0.0/24', ipv6: false });
  assert.ok(!asked.includes('eth0'), 'sandbox interfaces are never taken for the bridge');
});

test('an ADD result without a bridge is refused with FAILED_PRECONDITION naming the network and the opt-out', async () => {
  await assert.rejects(
    networkFromResult(ADD, 'macnet', () => Promise.resolve(false)),
    (err: unknown) =>
      err instanceof AgentError &&
      err.code === 'FAILED_PRECONDITION' &&
      err.message.includes('macnet') &&
      err.message.includes('AGENT_WORKER_FIREWALL=false'),
  );
});

test('subnetOf masks IPv4 addresses and keeps others', () => {
  assert.equal(subnetOf('10.88.3.7/16'), '10.88.0.0/16');
  assert.equal(subnetOf('10.88.3.7/32'), '10.88.3.7/32');
  assert.equal(subnetOf('fd00::5/64'), 'fd00::5/64');
});

test('docker: a bridge network with ICC off gives its bridge, subnet and gateway', () => {
  const r = dockerWorkerNetwork(
    {
      Name: 'w',
      Id: '0123456789abcdef',
      Driver: 'bridge',
      Options: { 'com.docker.network.bridge.enable_icc': 'false' },
      IPAM: { Config: [{ Subnet: '172.30.0.0/16', Gateway: '172.30.0.1' }] },
    },
    'w',
  );
  assert.deepEqual(r, { network: { bridge: 'br-0123456789ab', subnet: '172.30.0.0/16', ipv6: false }, gateway: '172.30.0.1' });
  const named = dockerWorkerNetwork(
    {
      Name: 'w',
      Driver: 'bridge',
      EnableIPv6: true,
      Options: { 'com.docker.network.bridge.enable_icc': 'false', 'com.docker.network.bridge.name': 'esbd1' },
    },
    'w',
  );
  assert.equal(named.network.bridge, 'esbd1');
  assert.equal(named.network.ipv6, true);
});

test('docker: ICC on (the default) or another driver is refused with the fix', () => {
  const refused =
    (re: RegExp) =>
    (err: unknown): boolean =>
      err instanceof AgentError && err.code === 'FAILED_PRECONDITION' && re.test(err.message);
  assert.throws(
    () => dockerWorkerNetwork({ Name: 'bridge', Driver: 'bridge', Options: { 'com.docker.network.bridge.enable_icc': 'true' } }, 'bridge'),
    refused(/CONTAINERS_NETWORK bridge lets containers talk.*enable_icc=false/),
  );
  assert.throws(() => dockerWorkerNetwork({ Name: 'w', Driver: 'bridge', Options: {} }, 'w'), refused(/enable_icc/));
  assert.throws(() => dockerWorkerNetwork({ Name: 'h', Driver: 'host' }, 'h'), refused(/uses the host driver/));
});

test('docker: status and doctor describe any network (ICC on too) the way the runtime installs it, gateway as DNS', () => {
  const inspect = {
    Name: 'bridge',
    Driver: 'bridge',
    Options: { 'com.docker.network.bridge.enable_icc': 'true' },
    IPAM: {
      Config: [
        { Subnet: 'fd00::/64', Gateway: 'fd00::1' },
        { Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' },
      ],
    },
  };
  assert.deepEqual(describeDockerNetwork(inspect), {
    network: { bridge: 'docker0', subnet: 'fd00::/64,172.17.0.0/16', ipv6: true },
    gateway: '172.17.0.1',
  });
  const ok = {
    ...inspect,
    Name: 'w',
    Options: { 'com.docker.network.bridge.enable_icc': 'false', 'com.docker.network.bridge.name': 'esbd2' },
  };
  assert.deepEqual(describeDockerNetwork(ok), dockerWorkerNetwork(ok, 'w'));
});
