/**
 * Issue 4 on real parts: EnsureContainer / DestroyContainer / ListContainers on a real
 * containerd + runc + CNI plugins + registry (test/harness/stack.ts). Every failure path is
 * checked for leftovers: containers, tasks, snapshots, leases, netns, veths, host-local IPs,
 * CNI cache entries and worker dirs.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { defaultConflist } from '../../src/network/default-conflist.js';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import { findLeaks } from '../harness/leaks.js';
import { CNI_BIN_DIR, leakCount, startStack, type TestStack } from '../harness/stack.js';
import { manifestFor, MEDIA_TYPES, pushImage, type BuiltImage } from '../harness/images.js';
import { FakePlugins } from '../fixtures/cni/fake-plugins.js';
import { makeHtpasswd } from '../harness/token-server.js';
import { startRegistry, type RegistryInstance } from '../harness/registry.js';
import type { WorkerReply as Worker, ContainerStateReply as ContainerState } from '../helpers/replies.js';

const OWNER = 'gateway-a';
const INVOKE_PATH = '/2015-03-31/functions/function/invocations';

/** POSTs to the worker's RIE port from the host, retrying until it listens. */
async function invokeDirect(ip: string, payload: object, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`http://${ip}:8080${INVOKE_PATH}`, {
        method: 'POST',
        body: JSON.stringify(payload),
        signal: AbortSignal.timeout(5000),
      });
      return { status: res.status, body: await res.text() };
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Pushes a copy of `base` whose image config is changed by `patch`. */
async function pushVariant(
  reg: RegistryInstance,
  base: BuiltImage,
  repo: string,
  patch: (config: Record<string, unknown>) => void,
  dir: string,
): Promise<string> {
  const m = manifestFor(base);
  const cfg = JSON.parse(readFileSync(m.config.path, 'utf8')) as { config: Record<string, unknown> };
  patch(cfg.config);
  const cfgBytes = Buffer.from(JSON.stringify(cfg));
  const cfgDigest = `sha256:${createHash('sha256').update(cfgBytes).digest('hex')}`;
  const cfgPath = path.join(dir, `${repo.replace(/\W/g, '_')}-config.json`);
  writeFileSync(cfgPath, cfgBytes);
  const manifest = JSON.parse(readFileSync(m.path, 'utf8')) as Record<string, unknown>;
  manifest['config'] = { mediaType: m.config.mediaType, digest: cfgDigest, size: cfgBytes.length };
  const mBytes = Buffer.from(JSON.stringify(manifest));
  const mDigest = `sha256:${createHash('sha256').update(mBytes).digest('hex')}`;
  const mPath = path.join(dir, `${repo.replace(/\W/g, '_')}-manifest.json`);
  writeFileSync(mPath, mBytes);
  const config = { mediaType: m.config.mediaType, digest: cfgDigest, size: cfgBytes.length, path: cfgPath };
  const manifestRef = { ...m, digest: mDigest, size: mBytes.length, path: mPath, config };
  const image: BuiltImage = {
    name: repo,
    kind: 'manifest',
    mediaType: MEDIA_TYPES.manifest,
    digest: mDigest,
    size: mBytes.length,
    path: mPath,
    manifests: [manifestRef],
  };
  await pushImage(reg.url, image, repo, 'v1');
  return `${reg.host}/${repo}:v1`;
}

async function expectNoLeaks(stack: TestStack, what: string): Promise<void> {
  const leaks = await stack.leaks();
  assert.equal(leakCount(leaks), 0, `${what} left: ${JSON.stringify(leaks)}`);
}

/** Like expectNoLeaks, for another containerd namespace of the same stack. */
async function expectNoLeaksIn(stack: TestStack, namespace: string): Promise<void> {
  const c = new ContainerdClient({ socket: stack.ctd.socket, namespace });
  try {
    const leaks = await findLeaks({
      client: c,
      snapshotter: stack.snapshotter,
      idPrefix: stack.idPrefix,
      bridge: stack.bridge,
      netDir: stack.netDir,
      networkName: stack.networkName,
      stateDir: stack.stateDir,
    });
    assert.equal(leakCount(leaks), 0, `${namespace} left: ${JSON.stringify(leaks)}`);
  } finally {
    c.close();
  }
}

describe('containerd workers: Ensure / Destroy / List on real containerd, runc, CNI and registry', () => {
  let stack: TestStack;
  let tmp: string;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-workers-'));
    cleanups.push(() => {
      rmSync(tmp, { recursive: true, force: true });
    });
    stack = await startStack();
    cleanups.push(() => stack.stop());
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  // A failed assertion must not leave its workers to the next test.
  afterEach(async () => {
    if (!stack.client) return;
    for (const owner of [OWNER, 'gateway-b']) {
      for (const c of await list(owner)) await destroy(c.container_id, owner);
    }
  });

  const ensure = (
    req: Partial<{ function_name: string; image: string; env: Record<string, string>; owner_id: string }>,
    opts?: { deadlineMs?: number },
  ) => stack.call<Worker>('EnsureContainer', { function_name: 'fn', image: stack.images.worker, env: {}, owner_id: OWNER, ...req }, opts);
  const destroy = (id: string, owner = OWNER) =>
    stack.call<{ success: boolean }>('DestroyContainer', { container_id: id, owner_id: owner });
  const list = async (owner = OWNER) =>
    (await stack.call<{ containers: ContainerState[] }>('ListContainers', { owner_id: owner })).containers;

  test('Ensure with a tagged image → a worker that answers HTTP on its IP:8080 from the host', async () => {
    const w = await ensure({ function_name: 'hello-tagged' });
    assert.match(w.id, new RegExp(`^${stack.idPrefix}hello-tagged-[0-9a-f]{8}$`));
    assert.equal(w.name, w.id);
    assert.equal(w.port, 8080);
    assert.ok(w.ip_address.startsWith(stack.subnet.replace(/0\/24$/, '')), `${w.ip_address} not in ${stack.subnet}`);
    const res = await invokeDirect(w.ip_address, { action: 'echo', hello: 'world' });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.body), { action: 'echo', hello: 'world' });
    // The worker sees its env, its own hostname and our resolv.conf.
    const stats = JSON.parse((await invokeDirect(w.ip_address, { action: 'stats' })).body) as {
      hostname: string;
      env: Record<string, string>;
    };
    assert.equal(stats.hostname, w.id);
    assert.equal((await destroy(w.id)).success, true);
    await expectNoLeaks(stack, 'ensure + destroy');
  });

  test('Ensure with a blank image resolves CONTAINER_REGISTRY/safe(function_name):ESB_TAG', async () => {
    // CONTAINER_REGISTRY=<registry>/esb-test and ESB_TAG=v1: "Worker" → <registry>/esb-test/worker:v1.
    const w = await ensure({ function_name: 'Worker', image: '', env: { GREETING: 'hi' } });
    const stats = JSON.parse((await invokeDirect(w.ip_address, { action: 'stats' })).body) as { env: Record<string, string> };
    assert.equal(stats.env['GREETING'], 'hi', 'request env reaches the worker');
    await destroy(w.id);
    await expectNoLeaks(stack, 'blank-image ensure');
  });

  test('Ensure with a multi-platform index picks the host platform', async () => {
    const w = await ensure({ function_name: 'multi', image: stack.images.multiarch });
    assert.ok(w.ip_address !== '');
    assert.equal((await destroy(w.id)).success, true);
    await expectNoLeaks(stack, 'multi-platform ensure');
  });

  test('a worker that exits on its own shows STOPPED in List; Destroy of an exited worker works', async () => {
    const ref = await pushVariant(
      stack.registry,
      stack.images.images.busybox,
      'esb-test/exits',
      (c) => {
        c['Entrypoint'] = ['/bin/sh', '-c', 'exit 3'];
        c['Cmd'] = [];
      },
      tmp,
    );
    const w = await ensure({ function_name: 'exits', image: ref });
    let state: ContainerState | undefined;
    for (let i = 0; i < 100; i++) {
      state = (await list()).find((c) => c.container_id === w.id);
      if (state?.status === 'STOPPED') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(state?.status, 'STOPPED');
    assert.equal(state.function_name, 'exits');
    assert.ok(Number(state.created_at) > 1_600_000_000 && Number(state.created_at) <= Date.now() / 1000, 'created_at is Unix seconds');
    assert.equal((await destroy(w.id)).success, true);
    await expectNoLeaks(stack, 'exited worker destroy');
  });

  test("List shows exactly the caller's workers; Destroy by another owner → PERMISSION_DENIED", async () => {
    const a = await ensure({ function_name: 'mine' });
    const b = await ensure({ function_name: 'theirs', owner_id: 'gateway-b' });
    assert.deepEqual(
      (await list()).map((c) => c.container_id),
      [a.id],
    );
    assert.deepEqual(
      (await list('gateway-b')).map((c) => c.container_id),
      [b.id],
    );
    const denied = await stack.callError('DestroyContainer', { container_id: b.id, owner_id: OWNER });
    assert.equal(denied.name, 'PERMISSION_DENIED');
    assert.ok(!denied.details.includes('gateway-b'), 'the other owner is not revealed');
    assert.equal((await list('gateway-b')).length, 1, 'still there');
    await destroy(a.id);
    await destroy(b.id, 'gateway-b');
    // Destroy twice: success both times.
    assert.equal((await destroy(b.id, 'gateway-b')).success, true);
    await expectNoLeaks(stack, 'two owners');
  });

  test('Destroy of a paused worker thaws and removes it', async () => {
    const w = await ensure({ function_name: 'paused' });
    await invokeDirect(w.ip_address, { action: 'echo' });
    await stack.call('PauseContainer', { container_id: w.id, owner_id: OWNER });
    assert.equal((await list()).find((c) => c.container_id === w.id)?.status, 'PAUSED');
    assert.equal((await destroy(w.id)).success, true);
    await expectNoLeaks(stack, 'paused destroy');
  });

  test('unknown image → NOT_FOUND; bad env → INVALID_ARGUMENT; nothing left behind', async () => {
    const missing = await stack.callError('EnsureContainer', {
      function_name: 'nope',
      image: `${stack.registry.host}/esb-test/does-not-exist:v1`,
      env: {},
      owner_id: OWNER,
    });
    assert.equal(missing.name, 'NOT_FOUND');
    assert.match(missing.details, /not found/);
    const badRef = await stack.callError('EnsureContainer', { function_name: 'nope', image: 'UPPER/Case::bad', env: {}, owner_id: OWNER });
    assert.equal(badRef.name, 'INVALID_ARGUMENT');
    const badKey = await stack.callError('EnsureContainer', {
      function_name: 'nope',
      image: stack.images.worker,
      env: { 'A=B': '1' },
      owner_id: OWNER,
    });
    assert.equal(badKey.name, 'INVALID_ARGUMENT');
    const badMem = await stack.callError('EnsureContainer', {
      function_name: 'nope',
      image: stack.images.worker,
      env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: 'lots' },
      owner_id: OWNER,
    });
    assert.equal(badMem.name, 'INVALID_ARGUMENT');
    assert.match(badMem.details, /AWS_LAMBDA_FUNCTION_MEMORY_SIZE/);
    await expectNoLeaks(stack, 'refused ensures');
  });

  test('a task that cannot start (missing entrypoint) → error, and the rollback leaves nothing', async () => {
    const ref = await pushVariant(
      stack.registry,
      stack.images.images.busybox,
      'esb-test/broken',
      (c) => {
        c['Entrypoint'] = ['/no/such/binary'];
        c['Cmd'] = [];
      },
      tmp,
    );
    const err = await stack.callError('EnsureContainer', { function_name: 'broken', image: ref, env: {}, owner_id: OWNER });
    assert.ok(['INTERNAL', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT'].includes(err.name), `${err.name}: ${err.details}`);
    assert.match(err.details, /no such|not found|executable/i);
    assert.equal((await list()).length, 0);
    await expectNoLeaks(stack, 'failed task start');
  });

  test('registry down → UNAVAILABLE; deadline in mid-pull → DEADLINE_EXCEEDED; both leave nothing', async () => {
    // A separate containerd namespace: nothing is unpacked there yet, so the pull takes a while.
    await stack.stopAgent();
    const ns = `${stack.namespace}-cold`;
    await stack.startAgent({ CONTAINERD_NAMESPACE: ns });
    try {
      const t0 = Date.now();
      const late = await stack.callError(
        'EnsureContainer',
        { function_name: 'cold', image: stack.images.worker, env: {}, owner_id: OWNER },
        { deadlineMs: 250 },
      );
      assert.equal(late.name, 'DEADLINE_EXCEEDED');
      assert.ok(Date.now() - t0 < 5000);
      await stack.registry.pause();
      const down = await stack.callError('EnsureContainer', {
        function_name: 'down',
        image: `${stack.registry.host}/esb-test/never-pulled:v1`,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(down.name, 'UNAVAILABLE');
      await stack.registry.restart();
      // Give the cancelled pull's background cleanup a moment, then check that namespace.
      await new Promise((r) => setTimeout(r, 500));
      await expectNoLeaksIn(stack, ns);
    } finally {
      await stack.stopAgent();
      await stack.startAgent();
    }
  });

  test('a CNI plugin that fails, and a deadline in mid-CNI, roll back the network', async () => {
    const fakes = await FakePlugins.create(['esb-test-failer', 'esb-test-sleeper']);
    cleanups.push(() => fakes.remove());
    await fakes.set('esb-test-failer', 'ADD.error', { cniVersion: '1.0.0', code: 7, msg: 'refusing on purpose' });
    await fakes.set('esb-test-sleeper', 'ADD.sleep', '3');
    const gw = stack.subnet.replace(/0\/24$/, '1');
    const base = defaultConflist(
      { name: stack.networkName, subnet: stack.subnet, bridge: stack.bridge, gatewayIp: gw, dnsServer: gw, netDir: stack.netDir },
      { ipMasq: false },
    ) as { plugins: object[] };
    const confFor = (type: string): string => {
      const file = path.join(tmp, `${type}.conflist`);
      writeFileSync(file, JSON.stringify({ ...base, plugins: [...base.plugins, { type }] }));
      return file;
    };
    const binDirs = `${CNI_BIN_DIR}:${fakes.dir}`;
    await stack.stopAgent();
    try {
      await stack.startAgent({ CNI_CONF_FILE: confFor('esb-test-failer'), CNI_BIN_DIR: binDirs });
      const failed = await stack.callError('EnsureContainer', {
        function_name: 'cni-fail',
        image: stack.images.worker,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(failed.name, 'INTERNAL');
      // The plugin's own words go to the agent's debug log, never to the caller (docs/errors.md).
      assert.match(
        failed.details,
        /CNI plugin esb-test-failer ADD failed: plugin error \(CNI error code \d+; the plugin's message is in the agent log/,
      );
      assert.doesNotMatch(failed.details, /refusing on purpose/);
      await expectNoLeaks(stack, 'failed CNI ADD');
      assert.ok((await fakes.calls('DEL')).length >= 1, 'the chain was DELeted');
      await stack.stopAgent();

      await stack.startAgent({ CNI_CONF_FILE: confFor('esb-test-sleeper'), CNI_BIN_DIR: binDirs });
      const t0 = Date.now();
      const late = await stack.callError(
        'EnsureContainer',
        { function_name: 'cni-slow', image: stack.images.worker, env: {}, owner_id: OWNER },
        { deadlineMs: 1000 },
      );
      assert.equal(late.name, 'DEADLINE_EXCEEDED');
      assert.ok(Date.now() - t0 < 2900, 'did not wait for the slow plugin');
      // Rollback runs on its own deadline after the answer; wait for it to finish.
      for (let i = 0; i < 100 && leakCount(await stack.leaks()) > 0; i++) await new Promise((r) => setTimeout(r, 100));
      await expectNoLeaks(stack, 'deadline in mid-CNI');
    } finally {
      await stack.stopAgent();
      await stack.startAgent();
    }
  });

  test('Ensure from an htpasswd registry: credentials from DOCKER_CONFIG work, none → PERMISSION_DENIED', async () => {
    const htpasswd = makeHtpasswd(tmp, { esb: 's3cret' });
    const secure = await startRegistry({ htpasswdPath: htpasswd });
    cleanups.push(() => secure.stop());
    await pushImage(secure.url, stack.images.images.worker, 'esb-test/private', 'v1', { username: 'esb', password: 's3cret' });
    const ref = `${secure.host}/esb-test/private:v1`;
    // Not listed yet: refused before the registry is contacted.
    const unlisted = await stack.callError('EnsureContainer', { function_name: 'private', image: ref, env: {}, owner_id: OWNER });
    assert.equal(unlisted.name, 'INVALID_ARGUMENT');
    assert.match(unlisted.details, /AGENT_ALLOWED_REGISTRIES/);
    const listed = {
      AGENT_ALLOWED_REGISTRIES: `${stack.registry.host},${secure.host}`,
      CONTAINER_REGISTRY_INSECURE: `${stack.registry.host},${secure.host}`,
    };
    await stack.stopAgent();
    await stack.startAgent(listed);
    const denied = await stack.callError('EnsureContainer', { function_name: 'private', image: ref, env: {}, owner_id: OWNER });
    assert.equal(denied.name, 'PERMISSION_DENIED');
    const dockerDir = path.join(tmp, 'docker');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dockerDir, { recursive: true });
    writeFileSync(
      path.join(dockerDir, 'config.json'),
      JSON.stringify({ auths: { [secure.host]: { auth: Buffer.from('esb:s3cret').toString('base64') } } }),
    );
    await stack.stopAgent();
    try {
      await stack.startAgent({ ...listed, DOCKER_CONFIG: dockerDir });
      const w = await ensure({ function_name: 'private', image: ref });
      assert.equal((await invokeDirect(w.ip_address, { action: 'echo' })).status, 200);
      await destroy(w.id);
      await expectNoLeaks(stack, 'private registry');
    } finally {
      await stack.stopAgent();
      await stack.startAgent();
    }
  });

  test('32 concurrent Ensures of one image: all succeed with distinct IPs and one pull, then all destroyed with no leaks', async () => {
    await stack.stopAgent();
    const ns = `${stack.namespace}-many`;
    await stack.startAgent({ CONTAINERD_NAMESPACE: ns });
    try {
      const t0 = Date.now();
      const workers = await Promise.all(Array.from({ length: 32 }, (_, i) => ensure({ function_name: `many-${i % 4}` })));
      const ensureMs = Date.now() - t0;
      assert.equal(new Set(workers.map((w) => w.ip_address)).size, 32, 'distinct IPs');
      assert.equal(new Set(workers.map((w) => w.id)).size, 32, 'distinct ids');
      const metrics = await stack.agent!.metrics.registry.getSingleMetricAsString('esb_agent_image_pulls_total');
      const pulls = [...metrics.matchAll(/esb_agent_image_pulls_total\{[^}]*\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      assert.equal(pulls, 1, `one pull for 32 ensures: ${metrics}`);
      // Every worker answers.
      const answers = await Promise.all(workers.map((w) => invokeDirect(w.ip_address, { action: 'echo', id: w.id })));
      assert.ok(answers.every((a) => a.status === 200));
      await Promise.all(workers.map((w) => destroy(w.id)));
      await expectNoLeaksIn(stack, ns);
      console.log(`# 32 concurrent ensures took ${ensureMs} ms`);
    } finally {
      await stack.stopAgent();
      await stack.startAgent();
    }
  });
});
