/**
 * Test images end to end: deterministic offline builds, pushes to a real registry (anonymous,
 * Bearer-token and htpasswd auth) read back over the HTTP API, archives in OCI-layout and
 * `docker save` form, and containerd's own client (`ctr`) pulling, importing and running them.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { startContainerd, type ContainerdInstance } from './containerd.js';
import {
  buildTestImages,
  manifestFor,
  MEDIA_TYPES,
  pushImage,
  pushTestImages,
  RegistryError,
  RegistryRepo,
  writeDockerArchive,
  writeOciArchive,
  type BuiltImage,
  type BuiltImages,
  type FetchedManifest,
} from './images.js';
import { freePort, waitFor } from './process.js';
import { startRegistry, type RegistryInstance } from './registry.js';
import { makeHtpasswd, startTokenServer, type TokenServer } from './token-server.js';
import { WORKER_SOURCE } from './image-builder.js';

const execFileP = promisify(execFile);

interface TarFile {
  readonly type: string;
  readonly size: number;
  readonly linkname: string | undefined;
  readonly mode: number;
  readonly sha256: string;
  readonly data: Buffer | undefined;
}

/** Reads a tar (gzip when `gzip`), hashing every file and keeping small ones. */
async function readTar(file: string, gzip: boolean): Promise<Map<string, TarFile>> {
  const out = new Map<string, TarFile>();
  const ex = tar.extract();
  const src = createReadStream(file);
  const feeding = gzip ? pipeline(src, zlib.createGunzip(), ex) : pipeline(src, ex);
  for await (const entry of ex) {
    const h = createHash('sha256');
    const keep: Buffer[] = [];
    let size = 0;
    for await (const chunk of entry) {
      const c = chunk as Buffer;
      h.update(c);
      size += c.length;
      if (size <= 1024 * 1024) keep.push(c);
    }
    out.set(entry.header.name.replace(/\/$/, ''), {
      type: entry.header.type,
      size,
      linkname: entry.header.linkname,
      mode: entry.header.mode,
      sha256: `sha256:${h.digest('hex')}`,
      data: size <= 1024 * 1024 ? Buffer.concat(keep) : undefined,
    });
  }
  await feeding;
  return out;
}

async function sha256File(file: string, gunzip = false): Promise<string> {
  const h = createHash('sha256');
  const src = createReadStream(file);
  for await (const chunk of gunzip ? src.pipe(zlib.createGunzip()) : src) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

function digestsOf(images: BuiltImages): Record<string, unknown> {
  const one = (img: BuiltImage): unknown => ({
    digest: img.digest,
    manifests: img.manifests.map((m) => ({
      digest: m.digest,
      config: m.config.digest,
      layers: m.layers.map((l) => [l.digest, l.diffId, l.size]),
    })),
  });
  return { busybox: one(images.busybox), worker: one(images.worker), multiarch: one(images.multiarch) };
}

async function ctr(ctd: ContainerdInstance, namespace: string, args: readonly string[], timeout = 120_000): Promise<string> {
  try {
    const { stdout } = await execFileP('ctr', ['--address', ctd.socket, '--namespace', namespace, ...args], {
      timeout,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ctr ${args.join(' ')} failed: ${e.stderr ?? ''} ${e.message}`);
  }
}

test('images build offline and deterministically; the cache answers at once', async (t) => {
  const dirs: string[] = [];
  t.after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  dirs.push(mkdtempSync(path.join(os.tmpdir(), 'esb-img-a-')), mkdtempSync(path.join(os.tmpdir(), 'esb-img-b-')));
  const [dirA, dirB] = dirs as [string, string];

  let t0 = Date.now();
  const a = await buildTestImages(dirA);
  const coldMs = Date.now() - t0;
  const b = await buildTestImages(dirB);
  assert.equal(a.cached, false);
  assert.equal(b.cached, false);
  assert.deepEqual(digestsOf(a), digestsOf(b), 'two cold builds give the same digests');
  assert.equal(a.key, b.key);

  t0 = Date.now();
  const again = await buildTestImages(dirA);
  const warmMs = Date.now() - t0;
  assert.equal(again.cached, true);
  assert.deepEqual(digestsOf(again), digestsOf(a));
  t.diagnostic(`cold build ${coldMs} ms, cached ${warmMs} ms`);
  assert.ok(warmMs < 2000, `cached build took ${warmMs} ms`);

  const forced = await buildTestImages(dirA, { force: true });
  assert.equal(forced.cached, false);
  assert.deepEqual(digestsOf(forced), digestsOf(a), 'a forced rebuild gives the same digests');

  // Every blob: digest and size match the file; layers: diffID = sha256 of the plain tar.
  for (const img of [a.busybox, a.worker, a.multiarch]) {
    for (const m of img.manifests) {
      for (const blob of [m, m.config, ...m.layers]) {
        assert.equal(await sha256File(blob.path), blob.digest);
        assert.equal(statSync(blob.path).size, blob.size);
      }
      for (const l of m.layers) {
        assert.equal(l.mediaType, MEDIA_TYPES.layerGzip);
        assert.equal(await sha256File(l.path, true), l.diffId);
      }
    }
    assert.equal(await sha256File(img.path), img.digest);
  }

  // Layer contents.
  const worker = a.worker.manifests[0]!;
  assert.equal(worker.layers.length, 3);
  assert.equal(worker.layers[0]!.digest, a.busybox.manifests[0]!.layers[0]!.digest, 'the worker shares the busybox layer');
  const bb = await readTar(worker.layers[0]!.path, true);
  assert.equal(bb.get('bin/busybox')?.sha256, await sha256File('/bin/busybox'));
  for (const applet of ['sh', 'sleep', 'cat', 'echo', 'httpd', 'ls', 'id', 'ps']) {
    assert.deepEqual([bb.get(`bin/${applet}`)?.type, bb.get(`bin/${applet}`)?.linkname], ['symlink', 'busybox'], applet);
  }
  assert.match(bb.get('etc/passwd')?.data?.toString() ?? '', /^nobody:x:65534:65534:/m);
  assert.match(bb.get('etc/group')?.data?.toString() ?? '', /^nobody:x:65534:/m);
  assert.equal(bb.get('tmp')?.mode, 0o1777);
  const nodeLayer = await readTar(worker.layers[1]!.path, true);
  assert.equal(nodeLayer.get('usr/bin/node')?.size, statSync(process.execPath).size);
  assert.equal(nodeLayer.get('lib64/ld-linux-x86-64.so.2')?.type, 'file');
  assert.ok(
    [...nodeLayer.keys()].some((n) => /^lib\/.*\/libc\.so\.6$/.test(n)),
    'libc is in the node layer',
  );
  const wl = await readTar(worker.layers[2]!.path, true);
  assert.deepEqual(wl.get('worker/worker.mjs')?.data, readFileSync(WORKER_SOURCE));
  for (const f of [...bb.values(), ...nodeLayer.values(), ...wl.values()]) assert.ok(f.type !== 'file' || f.size >= 0);

  // Configs.
  const cfg = JSON.parse(readFileSync(worker.config.path, 'utf8')) as {
    architecture: string;
    os: string;
    config: Record<string, unknown>;
    rootfs: { diff_ids: string[] };
  };
  assert.deepEqual(cfg.config['Entrypoint'], ['/usr/bin/node', '/worker/worker.mjs']);
  assert.deepEqual(cfg.config['ExposedPorts'], { '8080/tcp': {} });
  assert.equal(cfg.config['WorkingDir'], '/worker');
  assert.ok((cfg.config['Env'] as string[]).some((e) => e.startsWith('PATH=')));
  assert.deepEqual(
    cfg.rootfs.diff_ids,
    worker.layers.map((l) => l.diffId),
  );
  assert.equal(cfg.os, 'linux');
  const bbCfg = JSON.parse(readFileSync(a.busybox.manifests[0]!.config.path, 'utf8')) as { config: Record<string, unknown> };
  assert.deepEqual(bbCfg.config['Cmd'], ['/bin/sh']);

  // The index: arm64/v8 first (never run), then this host's manifest = the busybox image.
  assert.equal(a.multiarch.kind, 'index');
  assert.equal(a.multiarch.mediaType, MEDIA_TYPES.index);
  const index = JSON.parse(readFileSync(a.multiarch.path, 'utf8')) as { manifests: { digest: string; platform: Record<string, string> }[] };
  assert.deepEqual(
    index.manifests.map((m) => m.platform),
    [
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
      { architecture: 'amd64', os: 'linux' },
    ],
  );
  assert.equal(index.manifests[1]!.digest, a.busybox.digest);
  assert.equal(manifestFor(a.multiarch).digest, a.busybox.digest);
  const armCfg = JSON.parse(readFileSync(a.multiarch.manifests[0]!.config.path, 'utf8')) as { architecture: string; variant: string };
  assert.deepEqual([armCfg.architecture, armCfg.variant], ['arm64', 'v8']);
});

test('push to a registry and read the manifests back', async (t) => {
  let reg: RegistryInstance | undefined = undefined;
  t.after(() => reg?.stop());
  reg = await startRegistry();
  const pushed = await pushTestImages(reg);
  assert.equal(pushed.worker, `${reg.host}/esb-test/worker:v1`);
  assert.equal(pushed.busybox, `${reg.host}/esb-test/busybox:v1`);
  assert.equal(pushed.multiarch, `${reg.host}/esb-test/multiarch:v1`);

  for (const [name, img] of [
    ['worker', pushed.images.worker],
    ['busybox', pushed.images.busybox],
    ['multiarch', pushed.images.multiarch],
  ] as const) {
    const repo: RegistryRepo = new RegistryRepo(reg.url, `esb-test/${name}`);
    const m: FetchedManifest = await repo.getManifest('v1');
    assert.equal(m.digest, img.digest, name);
    assert.equal(m.mediaType, img.mediaType, name);
    assert.deepEqual(m.body, readFileSync(img.path), name);
    assert.equal(pushed.digests[name], img.digest);
  }
  const idx = await new RegistryRepo(reg.url, 'esb-test/multiarch').getManifest('v1');
  const platforms = (idx.json as { manifests: { digest: string; platform: { architecture: string; variant?: string } }[] }).manifests.map(
    (m) => m.platform,
  );
  assert.deepEqual(
    platforms.map((p) => `${p.architecture}${p.variant ? '/' + p.variant : ''}`),
    ['arm64/v8', 'amd64'],
  );
  assert.equal(pushed.digests.multiarchHost, pushed.images.busybox.digest);
  for (const child of pushed.images.multiarch.manifests) {
    const m = await new RegistryRepo(reg.url, 'esb-test/multiarch').getManifest(child.digest);
    assert.equal(m.digest, child.digest);
    assert.equal(m.mediaType, MEDIA_TYPES.manifest);
  }
  // A blob reads back intact.
  const layer = pushed.images.worker.manifests[0]!.layers[2]!;
  const blob = await fetch(`${reg.url}/v2/esb-test/worker/blobs/${layer.digest}`);
  assert.equal(blob.status, 200);
  assert.deepEqual(Buffer.from(await blob.arrayBuffer()), readFileSync(layer.path));

  // A second push uploads nothing.
  const again = await pushImage(reg.url, pushed.images.worker, 'esb-test/worker', 'v1');
  assert.equal(again.uploaded.length, 0);
  assert.equal(again.skipped.length, 4, '3 layers + config');
  assert.equal(again.digest, pushed.images.worker.digest);
});

test('token auth: anonymous and wrong passwords are refused, the right user pushes and pulls', async (t) => {
  let ts: TokenServer | undefined = undefined;
  let reg: RegistryInstance | undefined = undefined;
  t.after(async () => {
    await reg?.stop();
    await ts?.stop();
  });
  ts = await startTokenServer({ users: { alice: 's3cret', bob: 'pa:ss w0rd' }, service: 'esb-test-registry', issuer: 'esb-test-issuer' });
  reg = await startRegistry({ token: { realm: ts.realm, service: ts.service, issuer: ts.issuer, rootCertBundle: ts.rootCertBundle } });
  const images = await buildTestImages();

  const probe = await fetch(`${reg.url}/v2/`);
  assert.equal(probe.status, 401);
  assert.match(probe.headers.get('www-authenticate') ?? '', new RegExp(`^Bearer realm="${ts.realm}",service="esb-test-registry"`));
  await probe.body?.cancel();

  await assert.rejects(pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1'), (err: RegistryError) => err.status === 401);
  await assert.rejects(
    pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1', { username: 'alice', password: 'wrong' }),
    (err: RegistryError) => {
      return err.status === 401 && err.message.includes('token request');
    },
  );
  const pushed = await pushTestImages(reg, { auth: { username: 'alice', password: 's3cret' } });
  assert.equal(pushed.digests.busybox, images.busybox.digest);
  const bobPush = await pushImage(reg.url, images.busybox, 'esb-test/bob', 'v1', { username: 'bob', password: 'pa:ss w0rd' });
  assert.equal(bobPush.digest, images.busybox.digest);

  // Pull: anonymous refused, alice reads it.
  await assert.rejects(
    new RegistryRepo(reg.url, 'esb-test/worker', undefined, 'pull').getManifest('v1'),
    (err: RegistryError) => err.status === 401,
  );
  const got = await new RegistryRepo(reg.url, 'esb-test/worker', { username: 'alice', password: 's3cret' }, 'pull').getManifest('v1');
  assert.equal(got.digest, images.worker.digest);

  // The token endpoint itself: GET (Basic), POST (OAuth2 password grant), anonymous, refused.
  const scope = 'repository:esb-test/worker:pull';
  const anon = (await (await fetch(`${ts.realm}?service=${ts.service}&scope=${encodeURIComponent(scope)}`)).json()) as { token: string };
  const anonClaims = JSON.parse(Buffer.from(anon.token.split('.')[1]!, 'base64url').toString()) as { access: unknown[] };
  assert.deepEqual(anonClaims.access, []);
  const bad = await fetch(`${ts.realm}?service=${ts.service}&scope=${encodeURIComponent(scope)}`, {
    headers: { Authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` },
  });
  assert.equal(bad.status, 401);
  await bad.body?.cancel();
  const form = new URLSearchParams({
    grant_type: 'password',
    username: 'alice',
    password: 's3cret',
    service: ts.service,
    scope,
    client_id: 'esb-test',
  });
  const post = await fetch(ts.realm, { method: 'POST', body: form });
  assert.equal(post.status, 200);
  const postBody = (await post.json()) as { access_token: string; expires_in: number; issued_at: string };
  assert.ok(postBody.expires_in > 0 && postBody.issued_at.length > 0);
  const [h64, p64] = postBody.access_token.split('.') as [string, string];
  const header = JSON.parse(Buffer.from(h64, 'base64url').toString()) as { alg: string; x5c: string[] };
  assert.equal(header.alg, 'ES256');
  assert.equal(header.x5c.length, 1);
  const claims = JSON.parse(Buffer.from(p64, 'base64url').toString()) as Record<string, unknown>;
  assert.equal(claims['iss'], 'esb-test-issuer');
  assert.equal(claims['aud'], 'esb-test-registry');
  assert.equal(claims['sub'], 'alice');
  assert.deepEqual(claims['access'], [{ type: 'repository', name: 'esb-test/worker', actions: ['pull'] }]);
  for (const k of ['exp', 'nbf', 'iat', 'jti']) assert.ok(claims[k] !== undefined, k);
  // The POSTed token works as a ready Bearer token; an anonymous one does not.
  const viaBearer = await new RegistryRepo(reg.url, 'esb-test/worker', { bearer: postBody.access_token }).getManifest('v1');
  assert.equal(viaBearer.digest, images.worker.digest);
  await assert.rejects(
    new RegistryRepo(reg.url, 'esb-test/worker', { bearer: anon.token }).getManifest('v1'),
    (err: RegistryError) => err.status === 401,
  );
  const badPost = await fetch(ts.realm, { method: 'POST', body: new URLSearchParams({ ...Object.fromEntries(form), password: 'nope' }) });
  assert.equal(badPost.status, 401);
  await badPost.body?.cancel();
  assert.ok(ts.requests.some((r) => r.method === 'GET' && r.user === 'alice' && r.status === 200));
  assert.ok(ts.requests.some((r) => r.method === 'GET' && r.user === undefined && r.triedUser === 'alice' && r.status === 401));
});

test('htpasswd auth: anonymous and wrong passwords are refused, the right user pushes and pulls', async (t) => {
  let dir: string | undefined = undefined;
  let reg: RegistryInstance | undefined = undefined;
  t.after(async () => {
    await reg?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'esb-htpasswd-'));
  const htpasswdPath = makeHtpasswd(dir, { carol: 'c4rol-pw', dave: 'another one' });
  assert.match(readFileSync(htpasswdPath, 'utf8'), /^carol:\$2y\$05\$[./A-Za-z0-9]{53}\ndave:\$2y\$05\$/);
  reg = await startRegistry({ htpasswdPath });
  const images = await buildTestImages();

  const probe = await fetch(`${reg.url}/v2/`);
  assert.equal(probe.status, 401);
  assert.match(probe.headers.get('www-authenticate') ?? '', /^Basic realm=/);
  await probe.body?.cancel();

  await assert.rejects(pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1'), (err: RegistryError) => err.status === 401);
  await assert.rejects(
    pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1', { username: 'carol', password: 'wrong' }),
    (err: RegistryError) => err.status === 401,
  );
  const pushed = await pushTestImages(reg, { auth: { username: 'carol', password: 'c4rol-pw' } });
  assert.equal(pushed.digests.worker, images.worker.digest);
  await assert.rejects(new RegistryRepo(reg.url, 'esb-test/worker').getManifest('v1'), (err: RegistryError) => err.status === 401);
  const got = await new RegistryRepo(reg.url, 'esb-test/multiarch', { username: 'dave', password: 'another one' }).getManifest('v1');
  assert.equal(got.digest, images.multiarch.digest);
  assert.equal(got.mediaType, MEDIA_TYPES.index);
});

test('archives: OCI layout and docker save layouts carry the right files', async (t) => {
  let dir: string | undefined = undefined;
  t.after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'esb-archives-'));
  const images = await buildTestImages();
  const hex = (d: string): string => d.slice('sha256:'.length);

  const oci = path.join(dir, 'oci.tar');
  await writeOciArchive(images.multiarch, oci, { refName: 'v1', imageName: 'esb-test/multiarch:v1' });
  const ociFiles = await readTar(oci, false);
  assert.deepEqual(JSON.parse(ociFiles.get('oci-layout')?.data?.toString() ?? '{}'), { imageLayoutVersion: '1.0.0' });
  const ociIndex = JSON.parse(ociFiles.get('index.json')?.data?.toString() ?? '{}') as {
    manifests: { digest: string; mediaType: string; annotations: Record<string, string> }[];
  };
  assert.equal(ociIndex.manifests[0]?.digest, images.multiarch.digest);
  assert.equal(ociIndex.manifests[0].mediaType, MEDIA_TYPES.index);
  assert.equal(ociIndex.manifests[0].annotations['org.opencontainers.image.ref.name'], 'v1');
  // index, 2 manifests, 2 configs, 1 shared layer
  const blobNames = [...ociFiles.entries()].filter(([n, f]) => n.startsWith('blobs/sha256/') && f.type === 'file');
  assert.equal(blobNames.length, 6);
  for (const [n, f] of blobNames) assert.equal(f.sha256, `sha256:${n.slice('blobs/sha256/'.length)}`, n);

  const m = images.worker.manifests[0]!;
  const modern = path.join(dir, 'docker-blobs.tar');
  await writeDockerArchive(images.worker, modern, { repoTags: ['esb-test/worker:v1'], withOciIndex: true });
  const modernFiles = await readTar(modern, false);
  const mj = JSON.parse(modernFiles.get('manifest.json')?.data?.toString() ?? '[]') as {
    Config: string;
    RepoTags: string[];
    Layers: string[];
  }[];
  assert.deepEqual(mj, [
    {
      Config: `blobs/sha256/${hex(m.config.digest)}`,
      RepoTags: ['esb-test/worker:v1'],
      Layers: m.layers.map((l) => `blobs/sha256/${hex(l.digest)}`),
    },
  ]);
  assert.ok(modernFiles.has('index.json') && modernFiles.has('oci-layout') && modernFiles.has(`blobs/sha256/${hex(m.digest)}`));

  const legacy = path.join(dir, 'docker-legacy.tar');
  await writeDockerArchive(images.worker, legacy, { repoTags: ['esb-test/worker:v1'], layout: 'legacy', metadataFirst: true });
  const legacyFiles = await readTar(legacy, false);
  assert.equal([...legacyFiles.keys()][0], 'manifest.json');
  const lj = JSON.parse(legacyFiles.get('manifest.json')?.data?.toString() ?? '[]') as { Config: string; Layers: string[] }[];
  assert.equal(lj[0]?.Config, `${hex(m.config.digest)}.json`);
  for (const l of m.layers) {
    const f = legacyFiles.get(`${hex(l.diffId)}/layer.tar`);
    assert.equal(f?.sha256, l.diffId, 'legacy layers are the plain tars');
    assert.equal(f.size, l.uncompressedSize);
  }
});

test('containerd pulls, imports and runs the images (ctr)', async (t) => {
  let reg: RegistryInstance | undefined = undefined;
  let ts: TokenServer | undefined = undefined;
  let treg: RegistryInstance | undefined = undefined;
  let ctd: ContainerdInstance | undefined = undefined;
  let dir: string | undefined = undefined;
  t.after(async () => {
    await ctd?.stop();
    await reg?.stop();
    await treg?.stop();
    await ts?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'esb-ctr-'));
  reg = await startRegistry();
  ctd = await startContainerd();
  const pushed = await pushTestImages(reg);
  const ns = 'esb-images-test';

  // Pull: the worker image and the index (containerd picks the amd64 entry, the second one).
  await ctr(ctd, ns, ['images', 'pull', '--plain-http', pushed.worker]);
  await ctr(ctd, ns, ['images', 'pull', '--plain-http', pushed.multiarch]);
  const check = await ctr(ctd, ns, ['images', 'check']);
  assert.match(check, new RegExp(`${pushed.worker.replace(/[.]/g, '\\.')}\\s.*complete \\(4/4\\)`));
  assert.match(check, new RegExp(`${pushed.multiarch.replace(/[.]/g, '\\.')}\\s.*complete \\(2/2\\)`));

  // Run the worker with host networking on a loopback port and invoke it.
  const port = await freePort();
  await ctr(ctd, ns, [
    'run',
    '-d',
    '--net-host',
    '--env',
    'HOST=127.0.0.1',
    '--env',
    `PORT=${port}`,
    '--env',
    'MARK=ctr',
    pushed.worker,
    'esb-images-worker',
  ]);
  const url = `http://127.0.0.1:${port}/2015-03-31/functions/function/invocations`;
  await waitFor(
    'worker in the container',
    async () => {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      await r.body?.cancel();
      return r.status === 404;
    },
    30_000,
    100,
  );
  const echo = await fetch(url, { method: 'POST', body: '{"action":"echo","x":1}', headers: { 'Content-Type': 'application/json' } });
  assert.equal(await echo.text(), '{"action":"echo","x":1}');
  const st = (await (await fetch(url, { method: 'POST', body: '{"action":"stats"}' })).json()) as {
    pid: number;
    env: Record<string, string>;
    deliveries: number;
  };
  assert.equal(st.pid, 1, 'node is PID 1 in its own pid namespace');
  assert.equal(st.env['MARK'], 'ctr');
  assert.match(st.env['PATH'] ?? '', /\/usr\/bin/);
  assert.equal(st.deliveries, 2);
  await ctr(ctd, ns, ['task', 'kill', '--signal', 'SIGTERM', 'esb-images-worker']);
  await waitFor('worker to stop', async () => /esb-images-worker\s+\d+\s+STOPPED/.test(await ctr(ctd, ns, ['task', 'ls'])), 15_000, 100);
  await ctr(ctd, ns, ['task', 'delete', 'esb-images-worker']);
  await ctr(ctd, ns, ['containers', 'delete', 'esb-images-worker']);

  // Import archives and run busybox from each.
  const archives: [string, () => Promise<void>, string][] = [
    [
      'oci.tar',
      () => writeOciArchive(pushed.images.busybox, path.join(dir, 'oci.tar'), { imageName: 'esb-test/imported-oci:v1', refName: 'v1' }),
      'esb-test/imported-oci:v1',
    ],
    [
      'docker.tar',
      () => writeDockerArchive(pushed.images.busybox, path.join(dir, 'docker.tar'), { repoTags: ['esb-test/imported-docker:v1'] }),
      'docker.io/esb-test/imported-docker:v1',
    ],
    [
      'legacy.tar',
      () =>
        writeDockerArchive(pushed.images.multiarch, path.join(dir, 'legacy.tar'), {
          repoTags: ['esb-test/imported-legacy:v1'],
          layout: 'legacy',
        }),
      'docker.io/esb-test/imported-legacy:v1',
    ],
  ];
  for (const [file, write, name] of archives) {
    await write();
    await ctr(ctd, ns, ['images', 'import', path.join(dir, file)]);
    const ls = await ctr(ctd, ns, ['images', 'ls', '-q']);
    assert.ok(ls.split('\n').includes(name), `${file} imported as ${name}; have:\n${ls}`);
    const id = `esb-images-${file.replace(/\W/g, '-')}`;
    const out = await ctr(ctd, ns, ['run', '--rm', name, id, '/bin/sh', '-c', 'echo hello from $(id -un) in $(pwd); ls /bin/busybox']);
    assert.equal(out, 'hello from root in /\n/bin/busybox\n', file);
  }

  // A token-auth registry with containerd's own resolver (POST password grant, then GET fallback).
  ts = await startTokenServer({ users: { alice: 's3cret' } });
  treg = await startRegistry({ token: { realm: ts.realm, service: ts.service, issuer: ts.issuer, rootCertBundle: ts.rootCertBundle } });
  const tpushed = await pushTestImages(treg, { auth: { username: 'alice', password: 's3cret' } });
  await assert.rejects(ctr(ctd, ns, ['images', 'pull', '--plain-http', tpushed.busybox], 60_000));
  await ctr(ctd, ns, ['images', 'pull', '--plain-http', '--user', 'alice:s3cret', tpushed.busybox]);
  assert.ok(
    ts.requests.some((r) => r.method === 'POST' && r.user === 'alice' && r.status === 200 && r.clientId !== undefined),
    JSON.stringify(ts.requests),
  );
});
