import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AgentError, type ErrorCode } from '../../../src/errors.js';
import { cniVersionAtLeast, loadNetworkList, parseNetworkList } from '../../../src/cni/conflist.js';
import { defaultConflist, defaultNetworkName, ensureConflist } from '../../../src/network/default-conflist.js';

const CFG = {
  name: 'esb-net',
  subnet: '10.88.0.0/16',
  bridge: 'esb0',
  gatewayIp: '10.88.0.1',
  dnsServer: '10.88.0.1',
  netDir: '/var/lib/cni/networks',
};

function isAgentError(code: ErrorCode, re: RegExp): (err: unknown) => boolean {
  return (err: unknown) => err instanceof AgentError && err.code === code && re.test(err.message);
}

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-cni-conf-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test('parseNetworkList reads a conflist and keeps each plugin config as written', () => {
  const list = parseNetworkList(
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'net1',
      disableCheck: true,
      plugins: [
        { type: 'bridge', bridge: 'b0', ipam: { type: 'host-local' } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }),
    '/etc/cni/net.d/10-x.conflist',
  );
  assert.equal(list.name, 'net1');
  assert.equal(list.cniVersion, '1.0.0');
  assert.equal(list.disableCheck, true);
  assert.deepEqual(
    list.plugins.map((p) => p.type),
    ['bridge', 'portmap'],
  );
  assert.equal(list.plugins[0]?.['bridge'], 'b0');
  assert.equal(list.source, '/etc/cni/net.d/10-x.conflist');
  assert.equal((JSON.parse(list.bytes.toString()) as { name: string }).name, 'net1');
});

test('parseNetworkList wraps a single-plugin .conf into a one-plugin list', () => {
  const list = parseNetworkList(JSON.stringify({ cniVersion: '0.4.0', name: 'old', type: 'bridge', bridge: 'b1' }), 'x.conf');
  assert.equal(list.name, 'old');
  assert.equal(list.cniVersion, '0.4.0');
  assert.equal(list.disableCheck, false);
  assert.equal(list.plugins.length, 1);
  assert.equal(list.plugins[0]?.type, 'bridge');
  assert.equal(list.plugins[0]['bridge'], 'b1');
  assert.equal((JSON.parse(list.bytes.toString()) as { plugins: unknown[] }).plugins.length, 1);
});

test('parseNetworkList rejects bad lists → INVALID_ARGUMENT naming the file', () => {
  const cases: [string, RegExp][] = [
    ['{', /not valid JSON/],
    ['[]', /expected a JSON object/],
    [JSON.stringify({ name: 'n', plugins: [{ type: 'bridge' }] }), /cniVersion is missing/],
    [JSON.stringify({ cniVersion: '0.2.0', name: 'n', plugins: [{ type: 'bridge' }] }), /cniVersion "0\.2\.0" is not supported/],
    [JSON.stringify({ cniVersion: '1.0.0', plugins: [{ type: 'bridge' }] }), /name undefined is invalid/],
    [JSON.stringify({ cniVersion: '1.0.0', name: '-bad', plugins: [{ type: 'bridge' }] }), /name "-bad" is invalid/],
    [
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', disableCheck: 'yes', plugins: [{ type: 'bridge' }] }),
      /disableCheck must be true or false/,
    ],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n' }), /neither "plugins".*nor "type"/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [] }), /plugins must be a non-empty list/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: ['bridge'] }), /plugins\[0\] is not an object/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ bridge: 'b' }] }), /plugins\[0\]\.type undefined/],
    [
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: '../bin/sh' }] }),
      /plugins\[0\]\.type "\.\.\/bin\/sh" is not a plugin binary name/,
    ],
    [
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'portmap', capabilities: { portMappings: 'yes' } }] }),
      /capabilities must map/,
    ],
    [
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge', ipam: 'host-local' }] }),
      /\(bridge\)\.ipam must be an object/,
    ],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge', ipam: {} }] }), /ipam must be an object whose "type"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseNetworkList(text, '/etc/cni/net.d/bad.conflist'),
      isAgentError('INVALID_ARGUMENT', new RegExp(`^CNI network config /etc/cni/net\\.d/bad\\.conflist: .*${re.source}`)),
      text,
    );
  }
});

test('loadNetworkList: a missing file → FAILED_PRECONDITION naming it; bad content → INVALID_ARGUMENT', async (t) => {
  const dir = await tempDir(t);
  const missing = path.join(dir, 'nope.conflist');
  await assert.rejects(loadNetworkList(missing), isAgentError('FAILED_PRECONDITION', new RegExp(`${missing} does not exist`)));
  const bad = path.join(dir, 'bad.conflist');
  await fs.writeFile(bad, '{"cniVersion": "1.0.0"');
  await assert.rejects(loadNetworkList(bad), isAgentError('INVALID_ARGUMENT', new RegExp(`${bad}: not valid JSON`)));
  await assert.rejects(loadNetworkList(dir), isAgentError('FAILED_PRECONDITION', /cannot be read/));
});

test('cniVersionAtLeast compares semantic versions', () => {
  assert.equal(cniVersionAtLeast('1.0.0', '0.4.0'), true);
  assert.equal(cniVersionAtLeast('0.4.0', '0.4.0'), true);
  assert.equal(cniVersionAtLeast('0.3.1', '0.4.0'), false);
  assert.equal(cniVersionAtLeast('0.10.0', '0.4.0'), true);
});

test('defaultConflist: bridge (gateway, hairpin, host-local over the subnet minus the gateway, default route) then portmap', () => {
  assert.equal(defaultNetworkName('esb'), 'esb-net');
  const doc = defaultConflist(CFG);
  assert.deepEqual(doc, {
    cniVersion: '1.0.0',
    name: 'esb-net',
    plugins: [
      {
        type: 'bridge',
        bridge: 'esb0',
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          subnet: '10.88.0.0/16',
          rangeStart: '10.88.0.2',
          rangeEnd: '10.88.255.254',
          gateway: '10.88.0.1',
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: '/var/lib/cni/networks',
        },
        dns: { nameservers: ['10.88.0.1'] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  });
  // What we generate is what we accept.
  assert.equal(parseNetworkList(JSON.stringify(doc), 'generated').plugins.length, 2);
});

test('defaultConflist: ipMasq option, gateway at the top end, subnet normalised', () => {
  const doc = defaultConflist({ ...CFG, subnet: '10.250.7.9/24', gatewayIp: '10.250.7.254' }, { ipMasq: false });
  const bridge = (doc['plugins'] as Record<string, unknown>[])[0]!;
  assert.equal(bridge['ipMasq'], false);
  assert.deepEqual(bridge['ipam'], {
    type: 'host-local',
    subnet: '10.250.7.0/24',
    rangeStart: '10.250.7.1',
    rangeEnd: '10.250.7.253',
    gateway: '10.250.7.254',
    routes: [{ dst: '0.0.0.0/0' }],
    dataDir: '/var/lib/cni/networks',
  });
});

test('defaultConflist rejects an unusable subnet or gateway → INVALID_ARGUMENT', () => {
  assert.throws(() => defaultConflist({ ...CFG, subnet: '10.88.0.0/33' }), isAgentError('INVALID_ARGUMENT', /CNI_SUBNET/));
  assert.throws(
    () => defaultConflist({ ...CFG, gatewayIp: '10.89.0.1' }),
    isAgentError('INVALID_ARGUMENT', /not a host address in 10\.88\.0\.0\/16/),
  );
  assert.throws(() => defaultConflist({ ...CFG, gatewayIp: '10.88.0.0' }), isAgentError('INVALID_ARGUMENT', /not a host address/));
  assert.throws(() => defaultConflist({ ...CFG, name: 'bad name' }), isAgentError('INVALID_ARGUMENT', /network name/));
});

test('ensureConflist writes the default once, creating the directory, and never replaces a file', async (t) => {
  const dir = await tempDir(t);
  const confFile = path.join(dir, 'net.d', '10-esb-net.conflist');
  assert.equal(await ensureConflist({ ...CFG, confFile }, { ipMasq: false }), true);
  const written: unknown = JSON.parse(await fs.readFile(confFile, 'utf8'));
  assert.deepEqual(written, defaultConflist(CFG, { ipMasq: false }));
  assert.equal((await loadNetworkList(confFile)).name, 'esb-net');

  // An operator's file (here: anything) stays as it is.
  await fs.writeFile(confFile, 'operator owned');
  assert.equal(await ensureConflist({ ...CFG, confFile }), false);
  assert.equal(await fs.readFile(confFile, 'utf8'), 'operator owned');
  // No temp files are left in the directory.
  assert.deepEqual(await fs.readdir(path.dirname(confFile)), ['10-esb-net.conflist']);
});

test('ensureConflist: concurrent calls write exactly once', async (t) => {
  const dir = await tempDir(t);
  const confFile = path.join(dir, 'c.conflist');
  const wrote = await Promise.all(Array.from({ length: 8 }, () => ensureConflist({ ...CFG, confFile })));
  assert.equal(wrote.filter(Boolean).length, 1);
  assert.deepEqual(await fs.readdir(dir), ['c.conflist']);
});

test('ensureConflist: an unwritable place → FAILED_PRECONDITION naming the file', async (t) => {
  const dir = await tempDir(t);
  const blocker = path.join(dir, 'file');
  await fs.writeFile(blocker, '');
  const confFile = path.join(blocker, 'x.conflist'); // parent is a file
  await assert.rejects(ensureConflist({ ...CFG, confFile }), isAgentError('FAILED_PRECONDITION', /x\.conflist/));
});

test('CNI 1.1.0: cniVersion 1.1.0 parses; cniVersions picks the highest supported', () => {
  const one = parseNetworkList(JSON.stringify({ cniVersion: '1.1.0', name: 'n', plugins: [{ type: 'bridge' }] }), 'x');
  assert.equal(one.cniVersion, '1.1.0');
  const many = parseNetworkList(
    JSON.stringify({ cniVersion: '0.4.0', cniVersions: ['0.4.0', '1.0.0', '1.1.0', '9.0.0'], name: 'n', plugins: [{ type: 'bridge' }] }),
    'x',
  );
  assert.equal(many.cniVersion, '1.1.0');
  assert.throws(
    () => parseNetworkList(JSON.stringify({ cniVersions: ['9.0.0'], name: 'n', plugins: [{ type: 'bridge' }] }), 'x'),
    /none of cniVersions is supported/,
  );
  assert.throws(
    () => parseNetworkList(JSON.stringify({ cniVersions: '1.1.0', name: 'n', plugins: [{ type: 'bridge' }] }), 'x'),
    /cniVersions must be a list/,
  );
});
