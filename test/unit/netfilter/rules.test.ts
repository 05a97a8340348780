import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildChains,
  chainNames,
  countJumps,
  forwardRules,
  inputRules,
  installScript,
  judge,
  MAX_CHAIN_NAME,
  parseChainListing,
  removeScript,
  type FirewallPolicy,
} from '../../../src/netfilter/rules.js';

const POLICY: FirewallPolicy = { dnsServer: '10.88.0.1', allowedHostPorts: [] };

test('chain names come from the bridge and fit the 28-character limit even for a 15-character bridge', () => {
  assert.deepEqual(chainNames('esb0'), { input: 'ESB-IN-esb0', forward: 'ESB-FWD-esb0' });
  const long = chainNames('abcdefghijklmno');
  assert.ok(long.input.length <= MAX_CHAIN_NAME && long.forward.length <= MAX_CHAIN_NAME, JSON.stringify(long));
  assert.notEqual(chainNames('esbt000001').input, chainNames('esbt000002').input);
  for (const bad of ['', 'a'.repeat(16), 'br 0', 'br/0', 'x;y', '-j']) assert.throws(() => chainNames(bad), /invalid bridge name/, bad);
});

test('INPUT: replies, DNS on the DNS server, then reject (TCP reset first), in iptables -S form', () => {
  assert.deepEqual(inputRules('ipv4', POLICY), [
    '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-d 10.88.0.1/32 -p udp -m udp --dport 53 -j ACCEPT',
    '-d 10.88.0.1/32 -p tcp -m tcp --dport 53 -j ACCEPT',
    '-p tcp -j REJECT --reject-with tcp-reset',
    '-j REJECT --reject-with icmp-port-unreachable',
  ]);
});

test('INPUT: allowed host ports are opened on every host address, before the rejects', () => {
  const rules = inputRules('ipv4', {
    dnsServer: '10.1.0.1',
    allowedHostPorts: [
      { port: 8125, proto: 'udp' },
      { port: 3128, proto: 'tcp' },
    ],
  });
  assert.deepEqual(rules.slice(3, 5), ['-p udp -m udp --dport 8125 -j ACCEPT', '-p tcp -m tcp --dport 3128 -j ACCEPT']);
  assert.equal(rules.at(-1), '-j REJECT --reject-with icmp-port-unreachable');
  assert.equal(rules.length, 7);
});

test('INPUT without a DNS server opens nothing but replies', () => {
  assert.deepEqual(inputRules('ipv4', { dnsServer: undefined, allowedHostPorts: [] }), [
    '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-p tcp -j REJECT --reject-with tcp-reset',
    '-j REJECT --reject-with icmp-port-unreachable',
  ]);
});

test('IPv6 INPUT keeps neighbour discovery, skips an IPv4 DNS server and rejects with icmp6', () => {
  const rules = inputRules('ipv6', POLICY);
  assert.deepEqual(rules, [
    '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT',
    '-p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT',
    '-p tcp -j REJECT --reject-with tcp-reset',
    '-j REJECT --reject-with icmp6-port-unreachable',
  ]);
  assert.ok(
    inputRules('ipv6', { dnsServer: 'fd00::1', allowedHostPorts: [] }).includes('-d fd00::1/128 -p udp -m udp --dport 53 -j ACCEPT'),
  );
  assert.ok(!inputRules('ipv4', { dnsServer: 'fd00::1', allowedHostPorts: [] }).some((r) => r.includes('--dport 53')));
});

test('FORWARD: worker to worker on the same bridge and link-local are refused', () => {
  assert.deepEqual(forwardRules('ipv4', 'esb0'), [
    '-o esb0 -p tcp -j REJECT --reject-with tcp-reset',
    '-o esb0 -j REJECT --reject-with icmp-port-unreachable',
    '-d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset',
    '-d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable',
  ]);
  assert.ok(forwardRules('ipv6', 'esb0').includes('-d fe80::/10 -j REJECT --reject-with icmp6-port-unreachable'));
});

test('buildChains: IPv4 only unless the network has IPv6; jumps match the bridge as input interface', () => {
  const v4 = buildChains({ bridge: 'esb0', subnet: '10.88.0.0/16', ipv6: false }, POLICY);
  assert.deepEqual(
    v4.map((c) => [c.family, c.parent, c.chain, c.jump]),
    [
      ['ipv4', 'INPUT', 'ESB-IN-esb0', '-i esb0 -j ESB-IN-esb0'],
      ['ipv4', 'FORWARD', 'ESB-FWD-esb0', '-i esb0 -j ESB-FWD-esb0'],
    ],
  );
  const both = buildChains({ bridge: 'esb0', subnet: '10.88.0.0/16,fd00::/64', ipv6: true }, POLICY);
  assert.deepEqual(
    both.map((c) => c.family),
    ['ipv4', 'ipv4', 'ipv6', 'ipv6'],
  );
});

test('installScript declares (flushes) and refills every chain, inserts missing jumps at the top and trims duplicates', () => {
  const chains = buildChains({ bridge: 'b1', subnet: 'x', ipv6: false }, { dnsServer: undefined, allowedHostPorts: [] });
  const script = installScript(
    chains,
    new Map([
      ['ESB-IN-b1', 0],
      ['ESB-FWD-b1', 3],
    ]),
  );
  assert.deepEqual(script.split('\n'), [
    '*filter',
    ':ESB-IN-b1 - [0:0]',
    ':ESB-FWD-b1 - [0:0]',
    '-A ESB-IN-b1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-A ESB-IN-b1 -p tcp -j REJECT --reject-with tcp-reset',
    '-A ESB-IN-b1 -j REJECT --reject-with icmp-port-unreachable',
    '-A ESB-FWD-b1 -o b1 -p tcp -j REJECT --reject-with tcp-reset',
    '-A ESB-FWD-b1 -o b1 -j REJECT --reject-with icmp-port-unreachable',
    '-A ESB-FWD-b1 -d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset',
    '-A ESB-FWD-b1 -d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable',
    '-I INPUT 1 -i b1 -j ESB-IN-b1',
    '-D FORWARD -i b1 -j ESB-FWD-b1',
    '-D FORWARD -i b1 -j ESB-FWD-b1',
    'COMMIT',
    '',
  ]);
});

test('removeScript deletes every jump, then only the chains that exist', () => {
  const chains = buildChains({ bridge: 'b1', subnet: 'x', ipv6: false }, POLICY);
  const script = removeScript(
    chains,
    new Map([
      ['ESB-IN-b1', 2],
      ['ESB-FWD-b1', 0],
    ]),
    new Set(['ESB-IN-b1']),
  );
  assert.deepEqual(script.split('\n'), [
    '*filter',
    '-D INPUT -i b1 -j ESB-IN-b1',
    '-D INPUT -i b1 -j ESB-IN-b1',
    ':ESB-IN-b1 - [0:0]',
    '-X ESB-IN-b1',
    'COMMIT',
    '',
  ]);
});

test('listings are parsed per chain and jumps are counted exactly', () => {
  const listing = ['-N ESB-IN-b1', '-A ESB-IN-b1 -j ACCEPT', '-A ESB-IN-b10 -j DROP', ''].join('\n');
  assert.deepEqual(parseChainListing(listing, 'ESB-IN-b1'), ['-j ACCEPT']);
  const input = ['-P INPUT ACCEPT', '-A INPUT -i b1 -j ESB-IN-b1', '-A INPUT -i b10 -j ESB-IN-b10', '-A INPUT -i b1 -j ESB-IN-b1'].join(
    '\n',
  );
  assert.equal(countJumps(input, 'INPUT', '-i b1 -j ESB-IN-b1'), 2);
  assert.equal(countJumps(input, 'INPUT', '-i b2 -j ESB-IN-b2'), 0);
});

test('judge: present, missing, and partial with one problem line each', () => {
  const [inSpec, fwdSpec] = buildChains({ bridge: 'b1', subnet: 'x', ipv6: false }, POLICY);
  const full = [
    { spec: inSpec!, actualRules: inSpec!.rules, jumps: 1 },
    { spec: fwdSpec!, actualRules: fwdSpec!.rules, jumps: 1 },
  ];
  assert.deepEqual(judge(full), { status: 'present', problems: [] });
  const none = judge([
    { spec: inSpec!, actualRules: undefined, jumps: 0 },
    { spec: fwdSpec!, actualRules: undefined, jumps: 0 },
  ]);
  assert.equal(none.status, 'missing');
  assert.equal(none.problems.length, 4);
  const partial = judge([
    { spec: inSpec!, actualRules: inSpec!.rules.slice(1), jumps: 1 },
    { spec: fwdSpec!, actualRules: fwdSpec!.rules, jumps: 0 },
  ]);
  assert.equal(partial.status, 'partial');
  assert.deepEqual(partial.problems, [
    'iptables chain ESB-IN-b1 differs: 1 rule(s) missing, 0 unexpected, of 5',
    'iptables jump from FORWARD to ESB-FWD-b1 is missing',
  ]);
  const reordered = judge([
    { spec: inSpec!, actualRules: [...inSpec!.rules].reverse(), jumps: 1 },
    { spec: fwdSpec!, actualRules: fwdSpec!.rules, jumps: 2 },
  ]);
  assert.equal(reordered.status, 'partial');
  assert.equal(reordered.problems.length, 2);
});
