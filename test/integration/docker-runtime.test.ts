/**
 * The docker runtime (AGENT_RUNTIME=docker) on a real, private dockerd (harness/dockerd.ts): what
 * is specific to it. The contract cases it shares with containerd are in conformance.test.ts.
 * Checked here: the container's labels and limits, Pause/Resume → UNIMPLEMENTED, a failing start
 * leaves no container, containers that are not ours are never touched, registry auth through
 * X-Registry-Auth, pull policy `never`, registry down, dockerd down (UNAVAILABLE, health
 * NOT_SERVING, and back), and the worker table rebuilt after an agent restart. (That the
 * harness's teardown leaves no dockerd process behind is test/harness/dockerd.test.ts.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import net, { type AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { checkHealth, healthClient } from '../helpers/grpc.js';
import { dockerLeakCount, startDockerStack, type DockerTestStack } from '../harness/docker-stack.js';
import { manifestFor, MEDIA_TYPES, pushImage, pushTestImages, type BuiltImage } from '../harness/images.js';
import { waitFor } from '../harness/process.js';
import { startRegistry, type RegistryInstance } from '../harness/registry.js';
import { makeHtpasswd } from '../harness/token-server.js';
import type { WorkerReply as Worker, ContainerStateReply as ContainerState } from '../helpers/replies.js';

interface Inspect {
  Name: string;
  Config: { Labels: Record<string, string>; Hostname: string };
  HostConfig: {
    Memory: number;
    MemorySwap: number;
    PidsLimit: number;
    CpuShares: number;
    Ulimits: { Name: string; Soft: number; Hard: number }[];
    SecurityOpt: string[];
    NetworkMode: string;
    CapDrop: string[];
    ReadonlyRootfs: boolean;
    Tmpfs: Record<string, string>;
  };
  NetworkSettings: { Networks: Record<string, { IPAddress: string }> };
}

const OWNER = 'gateway-docker';

/** Pushes a copy of `base` whose image config is changed by `patch`; returns its reference. */
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
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const cfgBytes = Buffer.from(JSON.stringify(cfg));
  const cfgPath = path.join(dir, `${repo.replace(/\W/g, '_')}-config.json`);
  writeFileSync(cfgPath, cfgBytes);
  const manifest = JSON.parse(readFileSync(m.path, 'utf8')) as Record<string, unknown>;
  manifest['config'] = { mediaType: m.config.mediaType, digest: sha(cfgBytes), size: cfgBytes.length };
  const mBytes = Buffer.from(JSON.stringify(manifest));
  const mPath = path.join(dir, `${repo.replace(/\W/g, '_')}-manifest.json`);
  writeFileSync(mPath, mBytes);
  const config = { mediaType: m.config.mediaType, digest: sha(cfgBytes), size: cfgBytes.length, path: cfgPath };
  const manifestRef = { ...m, digest: sha(mBytes), size: mBytes.length, path: mPath, config };
  const image: BuiltImage = {
    name: repo,
    kind: 'manifest',
    mediaType: MEDIA_TYPES.manifest,
    digest: sha(mBytes),
    size: mBytes.length,
    path: mPath,
    manifests: [manifestRef],
  };
  await pushImage(reg.url, image, repo, 'v1');
  return `${reg.host}/${repo}:v1`;
}

describe('docker runtime on a real dockerd', () => {
  let stack: DockerTestStack;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    stack = await startDockerStack();
    cleanups.push(() => stack.stop());
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  afterEach(async () => {
    if (!stack.client) return;
    for (const c of await list()) await destroy(c.container_id);
  });

  const ensure = (req: Partial<{ function_name: string; image: string; env: Record<string, string>; owner_id: string }> = {}) =>
    stack.call<Worker>('EnsureContainer', { function_name: 'dk-fn', image: stack.images.worker, env: {}, owner_id: OWNER, ...req });
  const destroy = (id: string) => stack.call<{ success: boolean }>('DestroyContainer', { container_id: id, owner_id: OWNER });
  const list = async () => (await stack.call<{ containers: ContainerState[] }>('ListContainers', { owner_id: OWNER })).containers;
  const invoke = (id: string, payload: object) =>
    stack.call<{ status_code: number; body: Buffer }>('InvokeWorker', {
      container_id: id,
      owner_id: OWNER,
      path: '',
      payload: Buffer.from(JSON.stringify(payload)),
      headers: {},
      timeout_ms: 20_000,
    });
  const inspect = (name: string) =>
    stack.dockerd.client.json<Inspect>({ method: 'GET', path: `/containers/${name}/json`, what: 'inspect' });
  async function expectNoLeaks(what: string): Promise<void> {
    const leaks = await stack.leaks();
    assert.equal(dockerLeakCount(leaks), 0, `${what} left: ${JSON.stringify(leaks)}`);
  }

  test('the worker container carries the contract labels and limits, named by the worker id', async () => {
    const w = await ensure({ function_name: 'dk-Labels', env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256' } });
    const c = await inspect(w.id);
    assert.equal(c.Name, `/${w.id}`);
    assert.equal(c.Config.Hostname, w.id);
    const l = c.Config.Labels;
    assert.equal(l['esb_function'], 'dk-Labels');
    assert.equal(l['created_by'], 'esb-agent');
    assert.equal(l['esb_env'], stack.envName);
    assert.equal(l['com.esb.kind'], 'function');
    assert.equal(l['com.esb.owner'], OWNER);
    assert.equal(l['com.esb.memory_mb'], '256');
    assert.equal(l['com.esb.cni_network'], stack.dockerd.network.name);
    assert.equal(l['com.esb.image'], stack.images.worker);
    assert.ok(Math.abs(Number(l['com.esb.created_at']) - Date.now() / 1000) < 120);
    assert.equal(c.HostConfig.Memory, 256 * 1024 * 1024);
    assert.equal(c.HostConfig.MemorySwap, 256 * 1024 * 1024);
    assert.equal(c.HostConfig.PidsLimit, 1024);
    assert.equal(c.HostConfig.CpuShares, Math.round((256 / 1769) * 1024));
    assert.deepEqual(c.HostConfig.Ulimits, [{ Name: 'nofile', Soft: 1024, Hard: 1024 }]);
    const [noNewPrivs, seccomp] = c.HostConfig.SecurityOpt;
    assert.equal(noNewPrivs, 'no-new-privileges');
    assert.ok(seccomp?.startsWith('seccomp={'), "the agent's own seccomp profile, not dockerd's default");
    assert.ok(!seccomp?.includes('"io_uring_setup"'), 'without io_uring');
    assert.deepEqual(c.HostConfig.CapDrop, ['NET_RAW']);
    assert.equal(c.HostConfig.ReadonlyRootfs, true);
    assert.deepEqual(c.HostConfig.Tmpfs, { '/tmp': 'nosuid,nodev,exec,mode=1777,size=512m' });
    assert.equal(c.HostConfig.NetworkMode, stack.dockerd.network.name);
    assert.equal(c.NetworkSettings.Networks[stack.dockerd.network.name]?.IPAddress, w.ip_address);
    // Inside: the limits hold for the function's process.
    const stats = JSON.parse(
      (await invoke(w.id, { action: 'exec', argv: ['/bin/sh', '-c', 'ulimit -n; grep NoNewPrivs /proc/self/status'] })).body.toString(
        'utf8',
      ),
    ) as { stdout?: string };
    assert.match(stats.stdout ?? '', /^1024\n/);
    assert.match(stats.stdout ?? '', /NoNewPrivs:\s+1/);
    await destroy(w.id);
    await expectNoLeaks('labels test');
  });

  test('PauseContainer and ResumeContainer → UNIMPLEMENTED naming the docker runtime; the worker keeps running', async () => {
    const w = await ensure({ function_name: 'dk-pause' });
    for (const method of ['PauseContainer', 'ResumeContainer'] as const) {
      const e = await stack.callError(method, { container_id: w.id, owner_id: OWNER });
      assert.equal(e.name, 'UNIMPLEMENTED', `${method}: ${e.details}`);
      assert.match(e.details, /docker runtime/);
    }
    assert.equal((await list())[0]?.status, 'RUNNING');
    assert.equal((await invoke(w.id, { action: 'echo' })).status_code, 200);
    await destroy(w.id);
  });

  test('a container that cannot start (missing entrypoint) → an error naming it, and no container left', async (t) => {
    const dir = path.join(stack.tmp, 'variants');
    mkdirSync(dir, { recursive: true });
    const ref = await pushVariant(
      stack.registry,
      stack.images.images.busybox,
      'esb-test/broken',
      (c) => {
        c['Entrypoint'] = ['/no/such/binary'];
        c['Cmd'] = [];
      },
      dir,
    );
    const e = await stack.callError('EnsureContainer', { function_name: 'dk-broken', image: ref, env: {}, owner_id: OWNER });
    t.diagnostic(`${e.name}: ${e.details}`);
    assert.ok(['INTERNAL', 'FAILED_PRECONDITION', 'INVALID_ARGUMENT'].includes(e.name), `${e.name}: ${e.details}`);
    assert.match(e.details, /no such file|not found|executable/i);
    assert.deepEqual(await list(), []);
    await expectNoLeaks('failed start');
    assert.ok(
      stack.logs
        .find('EnsureContainer failed; rolled back')
        .some((l) => Array.isArray(l['rollbackFailures']) && l['rollbackFailures'].length === 0),
    );
  });

  test('containers in the same dockerd without our labels are never listed or touched', async () => {
    const name = `${stack.idPrefix}foreign-0000beef`;
    await stack.dockerd.client.json({
      method: 'POST',
      path: '/containers/create',
      query: { name },
      body: { Image: stack.images.worker, Labels: { created_by: 'someone-else', esb_env: stack.envName } },
      what: 'create foreign container',
    });
    try {
      assert.deepEqual(await list(), []);
      assert.equal((await destroy(name)).success, true);
      const still = await stack.dockerd.client.request({ method: 'GET', path: `/containers/${name}/json`, what: 'inspect foreign' });
      assert.equal(still.status, 200, 'the foreign container is still there');
    } finally {
      await stack.dockerd.client.request({ method: 'DELETE', path: `/containers/${name}`, query: { force: 1 }, what: 'remove foreign' });
    }
  });

  test("a worker removed behind the agent's back leaves the List (events keep the table current)", async () => {
    const w = await ensure({ function_name: 'dk-removed' });
    await stack.dockerd.client.request({
      method: 'DELETE',
      path: `/containers/${w.id}`,
      query: { force: 1 },
      what: 'remove behind the back',
    });
    await waitFor('the worker to leave the List', async () => (await list()).length === 0, 10_000, 100);
    assert.equal((await stack.callError('GetContainerMetrics', { container_id: w.id, owner_id: OWNER })).name, 'NOT_FOUND');
  });

  test('an agent restart rebuilds the worker table from labels: the worker is listed and keeps serving', async () => {
    const w = await ensure({ function_name: 'dk-restart' });
    const [first] = await list();
    assert.ok(first);
    await stack.stopAgent();
    await stack.startAgent();
    const again = await list();
    assert.equal(again.length, 1);
    const [one] = again;
    assert.ok(one);
    assert.equal(one.container_id, w.id);
    assert.equal(one.status, 'RUNNING');
    assert.equal(one.created_at, first.created_at);
    const r = await invoke(w.id, { action: 'echo', after: 'restart' });
    assert.equal(r.status_code, 200);
    assert.deepEqual(JSON.parse(r.body.toString('utf8')), { action: 'echo', after: 'restart' });
    assert.ok(stack.logs.find('worker table rebuilt from dockerd').some((l) => l['workers'] === 1));
    await destroy(w.id);
    await expectNoLeaks('restart');
  });

  test('X-Registry-Auth from DOCKER_CONFIG: right credentials pull, none → PERMISSION_DENIED; IMAGE_PULL_POLICY=never → NOT_FOUND', async (t) => {
    const dir = path.join(stack.tmp, 'auth');
    mkdirSync(dir, { recursive: true });
    const secure = await startRegistry({ htpasswdPath: makeHtpasswd(dir, { esb: 's3cret' }) });
    t.after(() => secure.stop());
    await pushTestImages(secure, { auth: { username: 'esb', password: 's3cret' }, images: stack.images.images });
    const ref = `${secure.host}/esb-test/busybox:v1`;
    const listed = { AGENT_ALLOWED_REGISTRIES: `${stack.registry.host},${secure.host}` };
    await stack.stopAgent();
    await stack.startAgent(listed);
    const denied = await stack.callError('EnsureContainer', { function_name: 'dk-auth', image: ref, env: {}, owner_id: OWNER });
    assert.equal(denied.name, 'PERMISSION_DENIED', denied.details);

    const dockerDir = path.join(dir, 'docker');
    mkdirSync(dockerDir, { recursive: true });
    writeFileSync(
      path.join(dockerDir, 'config.json'),
      JSON.stringify({ auths: { [secure.host]: { auth: Buffer.from('esb:s3cret').toString('base64') } } }),
    );
    await stack.stopAgent();
    await stack.startAgent({ ...listed, DOCKER_CONFIG: dockerDir });
    try {
      const w = await ensure({ function_name: 'dk-auth', image: `${secure.host}/esb-test/worker:v1` });
      assert.equal((await invoke(w.id, { action: 'echo' })).status_code, 200);
      await destroy(w.id);
    } finally {
      await stack.stopAgent();
      await stack.startAgent({ ...listed, IMAGE_PULL_POLICY: 'never' });
    }
    try {
      // Pulled above, so present: `never` uses it. Never pulled: NOT_FOUND, without a registry call.
      const w = await ensure({ function_name: 'dk-never', image: `${secure.host}/esb-test/worker:v1` });
      await destroy(w.id);
      const missing = await stack.callError('EnsureContainer', { function_name: 'dk-never', image: ref, env: {}, owner_id: OWNER });
      assert.equal(missing.name, 'NOT_FOUND', missing.details);
      assert.match(missing.details, /IMAGE_PULL_POLICY=never/);
    } finally {
      await stack.stopAgent();
      await stack.startAgent();
    }
    await expectNoLeaks('auth and pull policy');
  });

  test('an image from a registry outside AGENT_ALLOWED_REGISTRIES → INVALID_ARGUMENT before dockerd pulls: its port sees no connection', async (t) => {
    let connections = 0;
    const srv = net.createServer((sock) => {
      connections++;
      sock.destroy();
    });
    t.after(
      () =>
        new Promise<void>((resolve) =>
          srv.close(() => {
            resolve();
          }),
        ),
    );
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
    for (const policy of ['if-not-present', 'always']) {
      await stack.stopAgent();
      await stack.startAgent({ IMAGE_PULL_POLICY: policy });
      const e = await stack.callError('EnsureContainer', {
        function_name: 'dk-ssrf',
        image: `${host}/admin/page:v1`,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(e.name, 'INVALID_ARGUMENT', e.details);
      assert.match(e.details, new RegExp(`${host}.*AGENT_ALLOWED_REGISTRIES`));
    }
    await stack.stopAgent();
    await stack.startAgent();
    assert.equal(connections, 0);
    const pulls = await stack.dockerd.client.request({ method: 'GET', path: '/images/json', what: 'list images' });
    assert.ok(!pulls.body.includes(host), 'dockerd has no image of that registry');
    await expectNoLeaks('allowlist');
  });

  test('registry down → UNAVAILABLE, nothing left', async () => {
    await stack.registry.pause();
    try {
      const e = await stack.callError('EnsureContainer', {
        function_name: 'dk-down',
        image: `${stack.registry.host}/esb-test/never-pulled:v1`,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(e.name, 'UNAVAILABLE', e.details);
    } finally {
      await stack.registry.restart();
    }
    await expectNoLeaks('registry down');
  });

  test('dockerd down → Ensure UNAVAILABLE and health NOT_SERVING; back up → SERVING and workers again', async (t) => {
    const agent = stack.agent;
    assert.ok(agent);
    const h = healthClient(`127.0.0.1:${agent.grpcPort}`, grpc.credentials.createInsecure());
    t.after(() => {
      h.close();
    });
    assert.equal(await checkHealth(h, 'esb.agent.v1.AgentService'), 'SERVING');
    await stack.dockerd.pause();
    try {
      await waitFor('health NOT_SERVING', async () => (await checkHealth(h, 'esb.agent.v1.AgentService')) === 'NOT_SERVING', 20_000, 100);
      assert.equal(await checkHealth(h, ''), 'NOT_SERVING');
      const e = await stack.callError('EnsureContainer', {
        function_name: 'dk-nodaemon',
        image: stack.images.worker,
        env: {},
        owner_id: OWNER,
      });
      assert.equal(e.name, 'UNAVAILABLE', e.details);
      assert.match(e.details, /dockerd/);
    } finally {
      await stack.dockerd.restart();
    }
    await waitFor('health SERVING again', async () => (await checkHealth(h, 'esb.agent.v1.AgentService')) === 'SERVING', 30_000, 100);
    const w = await ensure({ function_name: 'dk-back' });
    assert.equal((await invoke(w.id, { action: 'echo' })).status_code, 200);
    await destroy(w.id);
    await expectNoLeaks('dockerd restart');
  });

  test('doctor with AGENT_RUNTIME=docker checks dockerd and the network, not containerd', () => {
    const run = (extra: Record<string, string>): { code: number | null; stdout: string } => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts'), 'doctor'], {
        cwd: PROJECT_ROOT,
        env: {
          PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
          HOME: stack.tmp,
          ...stack.env,
          AGENT_STATE_DIR: path.join(stack.tmp, 'doctor-state'),
          ...extra,
        },
        encoding: 'utf8',
        timeout: 120_000,
      });
      return { code: r.status, stdout: r.stdout };
    };
    const good = run({});
    assert.match(good.stdout, /^OK {4}dockerd +dockerd \S+ \(API [\d.]+\) at unix:\/\/\/.* network \S+$/m, good.stdout);
    assert.doesNotMatch(good.stdout, /containerd|compat/, 'no containerd checks on the docker runtime');
    assert.doesNotMatch(good.stdout, /not available yet/);
    // The workers above ran on CONTAINERS_NETWORK, so the agent has installed its chains there.
    assert.match(good.stdout, /^OK {4}firewall +present: chains ESB-IN-\S+, ESB-FWD-\S+ complete/m, good.stdout);
    const noNet = run({ CONTAINERS_NETWORK: 'esb-no-such-network' });
    assert.equal(noNet.code, 1);
    assert.match(noNet.stdout, /^FAIL {2}dockerd +.*CONTAINERS_NETWORK esb-no-such-network does not exist/m);
  });
});
