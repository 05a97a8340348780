import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { AgentError, type ErrorCode } from '../../../src/errors.js';
import { parseNetworkList } from '../../../src/cni/conflist.js';
import {
  findPlugin,
  formatCniArgs,
  type PluginCall,
  type PluginExec,
  pluginOutputOf,
  type PluginRunner,
  pluginStdin,
  pluginVersions,
  runPlugin,
  spawnPlugin,
} from '../../../src/cni/exec.js';
import { FakePlugins } from '../../fixtures/cni/fake-plugins.js';

const ENV_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Matches an AgentError by code and message; `output`, when given, must be in the plugin output
 * kept for the log (pluginOutputOf) and never in the message itself.
 */
function isAgentError(code: ErrorCode, re: RegExp, output?: string): (err: unknown) => boolean {
  return (err: unknown) =>
    err instanceof AgentError &&
    err.code === code &&
    re.test(err.message) &&
    (output === undefined || ((pluginOutputOf(err) ?? '').includes(output) && !err.message.includes(output)));
}

async function fakes(t: { after: (fn: () => Promise<void>) => void }, types: string[]): Promise<FakePlugins> {
  const f = await FakePlugins.create(types);
  t.after(() => f.remove());
  return f;
}

function runner(f: FakePlugins, over: Partial<PluginRunner> = {}): PluginRunner {
  return { binDirs: [f.dir], exec: spawnPlugin, timeoutMs: 10_000, envPath: ENV_PATH, ...over };
}

function call(over: Partial<PluginCall> = {}): PluginCall {
  return {
    type: 'fake',
    command: 'ADD',
    stdin: '{"cniVersion":"1.0.0","name":"n","type":"fake"}',
    containerId: 'c1',
    netns: '/run/netns/c1',
    ifName: 'eth0',
    cniArgs: '',
    ...over,
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const LIST = parseNetworkList(JSON.stringify({ cniVersion: '1.0.0', name: 'net1', plugins: [{ type: 'x' }] }), 'test');

test("pluginStdin injects name and cniVersion from the list, over the plugin's own", () => {
  const stdin = pluginStdin(LIST, { type: 'bridge', name: 'other', cniVersion: '0.3.1', bridge: 'b0' });
  assert.ok(stdin.startsWith('{"cniVersion":"1.0.0","name":"net1",'), stdin);
  assert.deepEqual(JSON.parse(stdin), { cniVersion: '1.0.0', name: 'net1', type: 'bridge', bridge: 'b0' });
});

test('pluginStdin gives runtimeConfig only for declared capabilities, and removes capabilities', () => {
  const args = { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }], bandwidth: { ingressRate: 1 }, ips: ['10.0.0.9'] };
  const pm = JSON.parse(
    pluginStdin(LIST, { type: 'portmap', capabilities: { portMappings: true, ips: false } }, { capabilityArgs: args }),
  ) as Record<string, unknown>;
  assert.deepEqual(pm['runtimeConfig'], { portMappings: args.portMappings });
  assert.equal('capabilities' in pm, false);
  // A plugin that declares nothing gets no runtimeConfig at all.
  const br = JSON.parse(pluginStdin(LIST, { type: 'bridge' }, { capabilityArgs: args })) as Record<string, unknown>;
  assert.equal('runtimeConfig' in br, false);
  // Declared, but the attachment has no such argument: nothing either.
  const none = JSON.parse(pluginStdin(LIST, { type: 'portmap', capabilities: { portMappings: true } }, { capabilityArgs: {} })) as Record<
    string,
    unknown
  >;
  assert.equal('runtimeConfig' in none, false);
});

test('pluginStdin adds prevResult only when given', () => {
  const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
  assert.deepEqual((JSON.parse(pluginStdin(LIST, { type: 'x' }, { prevResult: prev })) as Record<string, unknown>)['prevResult'], prev);
  assert.equal('prevResult' in (JSON.parse(pluginStdin(LIST, { type: 'x' })) as Record<string, unknown>), false);
});

test('formatCniArgs joins K=V pairs with ";" and refuses separators inside them', () => {
  assert.equal(formatCniArgs([]), '');
  assert.equal(
    formatCniArgs([
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAME', 'a=b'],
    ]),
    'IgnoreUnknown=1;K8S_POD_NAME=a=b',
  );
  assert.throws(() => formatCniArgs([['A', 'x;y']]), isAgentError('INVALID_ARGUMENT', /cannot contain/));
  assert.throws(() => formatCniArgs([['A=B', 'x']]), isAgentError('INVALID_ARGUMENT', /cannot contain/));
});

test('runPlugin passes exactly the CNI_* environment, PATH and stdin, and returns the result', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'result', { cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/24' }] });
  const out = await runPlugin(runner(f, { binDirs: [f.dir, '/nonexistent'] }), call({ cniArgs: 'IgnoreUnknown=1' }));
  assert.deepEqual(out, { cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/24' }] });
  const [c] = await f.calls();
  assert.ok(c);
  assert.equal(c.command, 'ADD');
  assert.equal(c.containerId, 'c1');
  assert.equal(c.netns, '/run/netns/c1');
  assert.equal(c.ifName, 'eth0');
  assert.equal(c.args, 'IgnoreUnknown=1');
  assert.equal(c.cniPath, `${f.dir}:/nonexistent`);
  assert.equal(c.envPath, ENV_PATH);
  // Nothing of the agent's own environment leaks into plugins (sh adds PWD itself).
  assert.deepEqual(
    c.envNames
      .trim()
      .split(' ')
      .filter((n) => n !== 'PWD'),
    ['CNI_ARGS', 'CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_NETNS', 'CNI_PATH', 'PATH'],
  );
  assert.deepEqual(c.stdin, { cniVersion: '1.0.0', name: 'n', type: 'fake' });
});

test('runPlugin: DEL and CHECK output is ignored', async (t) => {
  const f = await fakes(t, ['fake']);
  assert.equal(await runPlugin(runner(f), call({ command: 'DEL' })), undefined);
  assert.equal(await runPlugin(runner(f), call({ command: 'CHECK' })), undefined);
});

test('runPlugin: CNI error 11 "try again later" → UNAVAILABLE', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'ADD.error', { cniVersion: '1.0.0', code: 11, msg: 'resource busy', details: 'lock held' });
  await assert.rejects(
    runPlugin(runner(f), call()),
    isAgentError(
      'UNAVAILABLE',
      /^CNI plugin fake ADD failed: try again later \(CNI error code 11; the plugin's message is in the agent log at debug level\)$/,
      'resource busy: lock held',
    ),
  );
});

test('runPlugin: any other CNI error → INTERNAL "CNI plugin <type> <CMD> failed: <msg> (code N)"', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'DEL.error', { cniVersion: '1.0.0', code: 999, msg: 'container veth name provided (eth0) already exists' });
  await assert.rejects(
    runPlugin(runner(f), call({ command: 'DEL' })),
    isAgentError(
      'INTERNAL',
      /^CNI plugin fake DEL failed: plugin error \(CNI error code 999; the plugin's message is in the agent log at debug level\)$/,
      'container veth name provided (eth0) already exists',
    ),
  );
  await f.set('fake', 'ADD.error', { code: 7, msg: '' });
  await assert.rejects(runPlugin(runner(f), call()), isAgentError('INTERNAL', /failed: plugin error \(CNI error code 7;/, 'no message'));
});

test('runPlugin: host-local out of addresses → RESOURCE_EXHAUSTED (the contract\'s "host out of IPs")', async (t) => {
  const f = await fakes(t, ['fake']);
  // What bridge relays from host-local on this host, code 999 included.
  await f.set('fake', 'ADD.error', {
    cniVersion: '1.0.0',
    code: 999,
    msg: 'failed to allocate for range 0: no IP addresses available in range set: 10.250.77.2-10.250.77.2',
  });
  await assert.rejects(
    runPlugin(runner(f), call()),
    isAgentError(
      'RESOURCE_EXHAUSTED',
      /^CNI plugin fake ADD failed: no IP address left in the network's range \(CNI error code 999;/,
      'failed to allocate for range 0: no IP addresses available in range set: 10.250.77.2-10.250.77.2',
    ),
  );
});

test('runPlugin: a failure without a CNI error document → INTERNAL with exit status and stderr', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'ADD.stderr', 'panic: runtime error\n  goroutine 1');
  await assert.rejects(
    runPlugin(runner(f), call()),
    isAgentError(
      'INTERNAL',
      /^CNI plugin fake ADD failed: exit status 2 \(its output is in the agent log at debug level\)$/,
      'panic: runtime error goroutine 1',
    ),
  );
});

test('runPlugin: ADD that prints no JSON → INTERNAL', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'result', 'ok!');
  await assert.rejects(
    runPlugin(runner(f), call()),
    isAgentError('INTERNAL', /printed no JSON result \(its output is in the agent log at debug level\)$/, 'ok!'),
  );
});

test('runPlugin: a missing plugin → FAILED_PRECONDITION naming the type and the dirs', async (t) => {
  const f = await fakes(t, ['fake']);
  await fs.writeFile(path.join(f.dir, 'noexec'), '#!/bin/sh\n', { mode: 0o644 });
  await assert.rejects(
    runPlugin(runner(f, { binDirs: ['/nonexistent', f.dir] }), call({ type: 'bridgee' })),
    isAgentError('FAILED_PRECONDITION', /^CNI plugin bridgee not found in CNI_BIN_DIR \(install the CNI plugins or fix CNI_BIN_DIR\)$/),
  );
  // A file that is not executable does not count.
  await assert.rejects(findPlugin('noexec', [f.dir]), isAgentError('FAILED_PRECONDITION', /noexec not found/));
  assert.equal(await findPlugin('fake', ['/nonexistent', f.dir]), path.join(f.dir, 'fake'));
});

test('runPlugin: the exec timeout kills the plugin and its children → INTERNAL (a backend timeout is not the client deadline)', async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'ADD.sleep', '30');
  const t0 = Date.now();
  await assert.rejects(
    runPlugin(runner(f, { timeoutMs: 300 }), call()),
    isAgentError('INTERNAL', /^CNI plugin fake ADD timed out after 300 ms/),
  );
  assert.ok(Date.now() - t0 < 5000);
  const [c] = await f.calls();
  assert.ok(c);
  assert.equal(alive(c.pid), false);
  // The `sleep` child was in the same process group and is gone too.
  assert.deepEqual(await groupMembers(c.pid), []);
});

test("runPlugin: the caller's abort kills the plugin → CANCELLED (or DEADLINE_EXCEEDED for a timeout reason)", async (t) => {
  const f = await fakes(t, ['fake']);
  await f.set('fake', 'ADD.sleep', '30');
  const ac = new AbortController();
  const p = runPlugin(runner(f), call(), ac.signal);
  await waitUntil(async () => (await f.calls()).length === 1);
  ac.abort();
  await assert.rejects(p, isAgentError('CANCELLED', /CNI plugin fake ADD: cancelled/));
  const [c] = await f.calls();
  assert.equal(alive(c!.pid), false);
  assert.deepEqual(await groupMembers(c!.pid), []);
  await assert.rejects(runPlugin(runner(f), call(), AbortSignal.timeout(200)), isAgentError('DEADLINE_EXCEEDED', /deadline exceeded/));
  // Already aborted: nothing runs.
  await f.clearCalls();
  await assert.rejects(runPlugin(runner(f), call(), AbortSignal.abort()), isAgentError('CANCELLED', /cancelled/));
  assert.equal((await f.calls()).length, 0);
});

test('runPlugin goes through the exec seam (a fake exec, no process)', async (t) => {
  const f = await fakes(t, ['fake']); // only for the lookup
  const seen: string[] = [];
  const exec: PluginExec = (req) => {
    seen.push(`${req.env['CNI_COMMAND']} ${path.basename(req.file)} ${req.stdin}`);
    return Promise.resolve({
      exitCode: 1,
      signal: null,
      stdout: JSON.stringify({ cniVersion: '1.0.0', code: 11, msg: 'later' }),
      stderr: '',
    });
  };
  await assert.rejects(
    runPlugin(runner(f, { exec }), call({ stdin: '{}' })),
    isAgentError('UNAVAILABLE', /try again later \(CNI error code 11;/),
  );
  assert.deepEqual(seen, ['ADD fake {}']);
  const crashed: PluginExec = () => Promise.resolve({ exitCode: null, signal: 'SIGSEGV', stdout: '', stderr: 'boom' });
  await assert.rejects(runPlugin(runner(f, { exec: crashed }), call()), (err: unknown) => {
    // The plugin's own words stay out of the gRPC message; the log gets them (pluginOutputOf).
    assert.ok(err instanceof AgentError && err.code === 'INTERNAL' && err.message.endsWith('killed by SIGSEGV'), String(err));
    assert.equal(pluginOutputOf(err), 'boom');
    return true;
  });
  const unstartable: PluginExec = () => Promise.reject(Object.assign(new Error('spawn EACCES'), { code: 'EACCES' }));
  await assert.rejects(
    runPlugin(runner(f, { exec: unstartable }), call()),
    isAgentError('INTERNAL', /cannot run the plugin binary \(EACCES\)$/),
  );
});

test('pluginVersions reads supportedVersions (VERSION)', async (t) => {
  const f = await fakes(t, ['fake']);
  assert.deepEqual(await pluginVersions(runner(f), 'fake', '1.0.0'), ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  const [c] = await f.calls();
  assert.equal(c?.command, 'VERSION');
  assert.deepEqual(c.stdin, { cniVersion: '1.0.0' });
  await f.set('fake', 'version', '{"cniVersion":"1.0.0"}');
  await assert.rejects(pluginVersions(runner(f), 'fake', '1.0.0'), isAgentError('INTERNAL', /no supportedVersions/));
});

test('the real plugins answer VERSION (when installed)', { skip: !existsSync('/usr/lib/cni/bridge') }, async () => {
  const versions = await pluginVersions(
    { binDirs: ['/usr/lib/cni'], exec: spawnPlugin, timeoutMs: 10_000, envPath: ENV_PATH },
    'bridge',
    '1.0.0',
  );
  assert.ok(versions.includes('1.0.0'));
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Live processes in process group `pgid` (the fake's group: it runs as a group leader). */
async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8');
      // Fields after the command's closing parenthesis: state, ppid, pgrp, ...
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') out.push(Number(name));
    } catch {
      // raced with an exit
    }
  }
  return out;
}
