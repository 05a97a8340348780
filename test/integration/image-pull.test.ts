/**
 * ImageService against a real private containerd and real registries (docker-registry 2.8):
 * pulls of a single manifest and of a 2-platform OCI index, GC labels as in
 * docs/containerd.md#pull-sequence, pull policies, single-flight, errors, Basic and Bearer auth, and an
 * abort in the middle of a blob. A counting HTTP proxy in front of the registry shows exactly
 * which requests a pull made (and can hold a blob mid-stream).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import type { Counter } from 'prom-client';
import tar from 'tar-stream';
import { after, before, test, type TestContext } from 'node:test';
import { AgentError } from '../../src/errors.js';
import { createLogger, silentLogger, type Logger } from '../../src/log.js';
import { AgentMetrics } from '../../src/metrics.js';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import type { ImageService as ImageServiceClass } from '../../src/runtime/containerd/image/image-service.js';
import { ingestRef, writeBlob } from '../../src/runtime/containerd/image/content-writer.js';
import { sha256Digest } from '../../src/registry/digest.js';
import { createLease, deleteLease } from '../../src/runtime/containerd/leases.js';
import { MediaType, type Platform } from '../../src/registry/oci.js';
import { hostPlatform } from '../../src/registry/platform.js';
import { RegistryHosts, parseHostList } from '../../src/registry/registry-hosts.js';
import type { ImageBounds } from '../../src/config/config.js';
import { listSnapshotKeys, startContainerd, wipeNamespace, type ContainerdInstance } from '../harness/containerd.js';
import { buildTestImages, pushImage, pushTestImages, type BuiltImage, type BuiltImages, type PushedTestImages } from '../harness/images.js';
import { waitFor } from '../harness/process.js';
import { startRegistry, type RegistryInstance } from '../harness/registry.js';
import { makeHtpasswd, startTokenServer } from '../harness/token-server.js';

const SNAPSHOTTER = 'overlayfs';
const DIST_KEY = 'containerd.io/distribution.source.127.0.0.1';

let ctd: ContainerdInstance | undefined;
let registry: RegistryInstance | undefined;
let proxy: CountingProxy | undefined;
let images: BuiltImages;
let pushed: PushedTestImages;

after(async () => {
  await proxy?.close();
  await registry?.stop();
  await ctd?.stop();
});

/**
 * Loaded in `before`, after a first global fetch: importing undici 7 before Node's bundled fetch
 * has initialised makes undici 7's Agent the global dispatcher, and the harness's push
 * (`fetch` with an explicit `Content-Length: 0`, test/harness/images.ts) then fails with
 * "invalid content-length header". Reported; remove once the harness sends no Content-Length.
 */
let ImageService: typeof ImageServiceClass;

before(async () => {
  await fetch('data:,warm-up');
  ({ ImageService } = await import('../../src/runtime/containerd/image/image-service.js'));
  ctd = await startContainerd();
  registry = await startRegistry();
  images = await buildTestImages();
  pushed = await pushTestImages(registry, { images });
  proxy = await startProxy(registry.host);
});

// ------------------------------------------------------------------------------------ helpers

interface ProxiedRequest {
  readonly method: string;
  readonly path: string;
  status: number;
  bytes: number;
}

interface CountingProxy {
  /** `127.0.0.1:<port>`: use as the registry part of references. */
  readonly host: string;
  readonly requests: ProxiedRequest[];
  /** Holds every blob response after `bytes` bytes until the returned release() is called. */
  holdBlobsAfter(bytes: number): () => void;
  close(): Promise<void>;
}

/** An HTTP proxy that forwards to the registry and records every request. */
async function startProxy(upstream: string): Promise<CountingProxy> {
  const [upHost, upPort] = upstream.split(':') as [string, string];
  const requests: ProxiedRequest[] = [];
  let hold: { after: number; waiting: (() => void)[]; released: boolean } | undefined;
  const srv = http.createServer((req, res) => {
    const rec: ProxiedRequest = { method: req.method ?? '', path: req.url ?? '', status: 0, bytes: 0 };
    requests.push(rec);
    const up = http.request(
      { host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: { ...req.headers, host: upstream } },
      (ur) => {
        rec.status = ur.statusCode ?? 0;
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const h = rec.path.includes('/blobs/') ? hold : undefined;
        let sent = 0;
        const gate = new Transform({
          transform(chunk: Buffer, _enc, cb: TransformCallback) {
            const pass = (): void => {
              sent += chunk.length;
              rec.bytes += chunk.length;
              cb(null, chunk);
            };
            if (h && !h.released && sent >= h.after) h.waiting.push(pass);
            else pass();
          },
        });
        ur.pipe(gate).pipe(res);
        res.on('close', () => {
          ur.destroy();
          gate.destroy();
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(srv.address() as AddressInfo).port}`,
    requests,
    holdBlobsAfter(bytes) {
      const h = { after: bytes, waiting: [] as (() => void)[], released: false };
      hold = h;
      return () => {
        h.released = true;
        if (hold === h) hold = undefined;
        for (const w of h.waiting.splice(0)) w();
      };
    },
    close: () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => {
          resolve();
        });
      }),
  };
}

/** Requests made to the proxy while `fn` ran. */
async function counted<T>(fn: () => Promise<T>): Promise<{ value: T; reqs: ProxiedRequest[] }> {
  const start = proxy!.requests.length;
  const value = await fn();
  return { value, reqs: proxy!.requests.slice(start) };
}

const via = (ref: string): string => ref.replace(registry!.host, proxy!.host);
const summary = (reqs: readonly ProxiedRequest[]): string[] =>
  reqs.map((r) => `${r.method} ${r.path.replace(/^\/v2\/[^/]+\/[^/]+\//, '')}`);

let nsCounter = 0;

/** A containerd client on a namespace of its own, wiped after the test. */
async function namespace(t: TestContext): Promise<ContainerdClient> {
  const name = `img-${process.pid}-${++nsCounter}-${randomBytes(3).toString('hex')}`;
  const c = new ContainerdClient({ socket: ctd!.socket, namespace: name });
  t.after(async () => {
    await wipeNamespace(c).catch(() => undefined);
    c.close();
  });
  await c.ensureNamespace();
  return c;
}

interface ServiceOpts {
  readonly policy?: 'if-not-present' | 'always' | 'never';
  readonly auths?: Record<string, unknown>;
  readonly platform?: Platform;
  readonly log?: Logger;
  /** AGENT_ALLOWED_REGISTRIES and CONTAINER_REGISTRY_INSECURE; default `*` for both. */
  readonly allowed?: string;
  readonly insecure?: string;
  readonly bounds?: Partial<ImageBounds>;
}

const BOUNDS: ImageBounds = { maxConcurrentPulls: 4, maxLayers: 128, maxLayerBytes: 2 ** 31, maxImageBytes: 2 ** 32 };

/** An ImageService on `c` with its own metrics and DOCKER_CONFIG dir, closed after the test. */
function service(t: TestContext, c: ContainerdClient, opts: ServiceOpts = {}): { svc: ImageServiceClass; metrics: AgentMetrics } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-dockercfg-'));
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const svc = new ImageService({
    client: c,
    snapshotter: SNAPSHOTTER,
    registry: {
      hosts: new RegistryHosts({ allowed: parseHostList(opts.allowed ?? '*'), insecure: parseHostList(opts.insecure ?? '*') }),
      dockerConfigDir: dir,
    },
    pullPolicy: opts.policy ?? 'if-not-present',
    bounds: { ...BOUNDS, ...opts.bounds },
    log: opts.log ?? silentLogger(),
    metrics,
    platform: opts.platform,
  });
  t.after(async () => {
    await svc.close();
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: opts.auths ?? {} }));
  return { svc, metrics };
}

const signal = (): AbortSignal => AbortSignal.timeout(120_000);
const isCode =
  (code: string, re?: RegExp) =>
  (e: unknown): boolean =>
    e instanceof AgentError && e.code === code && (re === undefined || re.test(e.message));

async function contentLabels(c: ContainerdClient, digest: string): Promise<Record<string, string>> {
  const res = await c.call('content', 'Info', { digest });
  return res.info?.labels ?? {};
}

function listContent(c: ContainerdClient): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const out: string[] = [];
    const s = c.svc.content.List({ filters: [] }, c.metadata());
    s.on('data', (r: { info: { digest: string }[] }) => {
      for (const i of r.info) out.push(i.digest);
    });
    s.on('error', reject);
    s.on('end', () => {
      resolve(out);
    });
  });
}

async function leases(c: ContainerdClient): Promise<string[]> {
  return (await c.call('leases', 'List', { filters: [] })).leases.map((l) => l.id);
}

async function ingests(c: ContainerdClient): Promise<string[]> {
  return (await c.call('content', 'ListStatuses', { filters: [] })).statuses.map((s) => s.ref);
}

/** Runs containerd's GC now (a lease deleted with sync: true collects before answering, §2.6). */
async function collectGarbage(c: ContainerdClient): Promise<void> {
  const id = `gc-kick-${randomBytes(4).toString('hex')}`;
  await c.call('leases', 'Create', { id, labels: {} });
  await c.call('leases', 'Delete', { id, sync: true });
}

async function snapshotExists(c: ContainerdClient, key: string): Promise<boolean> {
  try {
    await c.call('snapshots', 'Stat', { snapshotter: SNAPSHOTTER, key });
    return true;
  } catch {
    return false;
  }
}

async function counterValue(m: Counter, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await m.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0);
}

/**
 * A one-layer image of `layerBytes` random bytes (tar-stream + gzip), pushed under a fresh
 * repository: its blobs are in no content store yet, whatever earlier tests pulled (all
 * namespaces of one containerd share the blob store, docs/containerd.md#content-write).
 */
async function pushRandomImage(t: TestContext, layerBytes: number): Promise<{ ref: string; image: BuiltImage }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-randimg-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const pack = tar.pack();
  pack.entry({ name: 'data.bin', size: layerBytes, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, randomBytes(layerBytes));
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  const layerTar = Buffer.concat(chunks);
  const gz = zlib.gzipSync(layerTar, { level: 1 });
  const write = (data: Buffer, mediaType: string): { mediaType: string; digest: string; size: number; path: string } => {
    const digest = sha256Digest(data);
    const file = path.join(dir, digest.slice(7));
    writeFileSync(file, data);
    return { mediaType, digest, size: data.length, path: file };
  };
  const platform = hostPlatform();
  const layer = { ...write(gz, MediaType.ociLayerGzip), diffId: sha256Digest(layerTar), uncompressedSize: layerTar.length };
  const config = write(
    Buffer.from(
      JSON.stringify({
        architecture: platform.architecture,
        os: 'linux',
        config: { Cmd: ['/bin/true'] },
        rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      }),
    ),
    MediaType.ociConfig,
  );
  const manifest = write(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
        layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
      }),
    ),
    MediaType.ociManifest,
  );
  const repo = `esb-test/rand-${randomBytes(4).toString('hex')}`;
  const image: BuiltImage = {
    ...manifest,
    name: repo,
    kind: 'manifest',
    manifests: [{ ...manifest, platform: { os: 'linux', architecture: platform.architecture }, config, layers: [layer] }],
  };
  await pushImage(registry!.url, image, repo, 'v1');
  return { ref: `${proxy!.host}/${repo}:v1`, image };
}

/** The host's manifest of a built image. */
function hostManifest(name: 'busybox' | 'worker' | 'multiarch'): BuiltImages['busybox']['manifests'][number] {
  const img = images[name];
  if (img.kind === 'manifest') return img.manifests[0]!;
  const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
  return img.manifests.find((m) => m.platform.architecture === arch)!;
}

// -------------------------------------------------------------------------------------- tests

test('pull of a single-manifest image → image record, GC labels, unpacked chain, no lease or ingest left', async (t) => {
  const c = await namespace(t);
  const { svc, metrics } = service(t, c);
  const { ref, image } = await pushRandomImage(t, 256 * 1024);
  const t0 = performance.now();
  const { value: img, reqs } = await counted(() => svc.ensureImage(ref, { signal: signal() }));
  t.diagnostic(`pull+unpack ${Math.round(performance.now() - t0)} ms, requests: ${summary(reqs).join(' | ')}`);
  const m = image.manifests[0]!;
  const layer = m.layers[0]!;
  const repo = image.name;

  assert.equal(img.name, ref);
  assert.equal(img.target.digest, m.digest);
  assert.equal(img.target.mediaType, MediaType.ociManifest);
  assert.equal(img.manifestDigest, m.digest);
  assert.equal(img.configDigest, m.config.digest);
  assert.deepEqual(img.config.rootfs.diff_ids, [layer.diffId]);
  assert.deepEqual(img.config.config?.Cmd, ['/bin/true']);
  assert.equal(img.chainId, layer.diffId, 'single layer: chainID = diffID');
  // The Go client's sequence (docs/containerd.md#resolve, docs/containerd.md#registry-auth, docs/containerd.md#platform-manifest): HEAD by tag, then everything by digest.
  assert.deepEqual(summary(reqs), [
    'HEAD manifests/v1',
    `GET manifests/${m.digest}`,
    `GET blobs/${m.config.digest}`,
    `GET blobs/${layer.digest}`,
  ]);

  const rec = await c.call('images', 'Get', { name: ref });
  assert.equal(rec.image?.target?.digest, m.digest);
  assert.equal(rec.image.target.media_type, MediaType.ociManifest);
  assert.equal(rec.image.target.size, String(m.size));
  assert.deepEqual(await contentLabels(c, m.digest), {
    'containerd.io/gc.ref.content.config': m.config.digest,
    'containerd.io/gc.ref.content.l.0': layer.digest,
    [DIST_KEY]: repo,
  });
  assert.deepEqual(await contentLabels(c, m.config.digest), { [DIST_KEY]: repo, 'containerd.io/gc.ref.snapshot.overlayfs': img.chainId });
  assert.deepEqual(await contentLabels(c, layer.digest), { [DIST_KEY]: repo, 'containerd.io/uncompressed': layer.diffId });
  assert.ok(await snapshotExists(c, img.chainId));
  assert.deepEqual(await leases(c), []);
  assert.deepEqual(await ingests(c), []);

  // Nothing but the image record roots the blobs now: GC keeps all three and the snapshot.
  await collectGarbage(c);
  assert.deepEqual((await listContent(c)).sort(), [m.digest, m.config.digest, layer.digest].sort());
  assert.ok(await snapshotExists(c, img.chainId));

  assert.equal(await counterValue(metrics.pulls, { result: 'ok' }), 1);
  assert.equal(await counterValue(metrics.pulledBytes), m.size + m.config.size + layer.size);
  const histogram = (await metrics.coldStartPhase.get()).values;
  for (const phase of ['pull', 'unpack']) {
    assert.equal(histogram.find((v) => v.metricName?.endsWith('_count') === true && v.labels.phase === phase)?.value, 1, phase);
  }
});

test('pull of an OCI index (2 platforms) → record targets the index, every child labelled, only the host manifest fetched', async (t) => {
  const c = await namespace(t);
  const { svc } = service(t, c);
  const ref = via(pushed.multiarch);
  const { value: img, reqs } = await counted(() => svc.ensureImage(ref, { signal: signal() }));
  const host = hostManifest('multiarch');
  const index = images.multiarch;

  assert.equal(img.target.digest, pushed.digests.multiarch);
  assert.equal(img.target.mediaType, MediaType.ociIndex);
  assert.equal(img.manifestDigest, pushed.digests.multiarchHost);
  assert.equal(host.digest, pushed.digests.multiarchHost);
  const rec = await c.call('images', 'Get', { name: ref });
  assert.equal(rec.image?.target?.digest, index.digest);
  assert.equal(rec.image.target.media_type, MediaType.ociIndex);
  const indexLabels = await contentLabels(c, index.digest);
  assert.deepEqual(indexLabels, {
    ...Object.fromEntries(index.manifests.map((mm, i) => [`containerd.io/gc.ref.content.m.${i}`, mm.digest])),
    [DIST_KEY]: 'esb-test/multiarch',
  });
  assert.equal((await contentLabels(c, host.digest))['containerd.io/gc.ref.content.config'], host.config.digest);
  const other = index.manifests.find((mm) => mm.digest !== host.digest)!;
  await assert.rejects(c.call('content', 'Info', { digest: other.digest }), isCode('NOT_FOUND'), 'the other platform is not fetched');
  assert.ok(!reqs.some((r) => r.path.includes(other.digest)));
  assert.deepEqual(summary(reqs).slice(0, 2), ['HEAD manifests/v1', `GET manifests/${index.digest}`]);
  assert.ok(await snapshotExists(c, img.chainId));
  assert.deepEqual(await leases(c), []);
});

test('a 3-layer image unpacks to the chainIDs containerd itself computes (ctr images check)', async (t) => {
  const c = await namespace(t);
  const lines: string[] = [];
  const log = createLogger({ level: 'info', format: 'json', destination: { write: (l: string) => lines.push(l) } });
  const { svc } = service(t, c, { log });
  const ref = via(pushed.worker);
  const t0 = performance.now();
  const img = await svc.ensureImage(ref, { signal: signal() });
  const ms = Math.round(performance.now() - t0);
  const m = hostManifest('worker');
  t.diagnostic(
    `worker pull+unpack: ${ms} ms for ${m.layers.reduce((n, l) => n + l.size, 0)} compressed bytes in ${m.layers.length} layers`,
  );
  const pulled = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'image pulled');
  assert.ok(pulled);
  t.diagnostic(
    `phases: resolve ${String(pulled['resolveMs'])} ms, fetch ${String(pulled['fetchMs'])} ms, unpack ${String(pulled['unpackMs'])} ms, ${String(pulled['bytes'])} bytes downloaded, ${String(pulled['blobsFetched'])} fetched / ${String(pulled['blobsPresent'])} present`,
  );
  assert.equal(img.config.rootfs.diff_ids.length, 3);
  const out = execFileSync('ctr', ['--address', ctd!.socket, '-n', c.namespace, 'images', 'check'], { encoding: 'utf8' });
  t.diagnostic(out.trim());
  const line = out.split('\n').find((l) => l.startsWith(ref));
  assert.ok(line, out);
  assert.match(line, /complete \((\d+)\/\1\)/);
  assert.match(line, /\btrue\s*$/, 'ctr finds the unpacked chain by its own chainID computation');
});

test('second ensureImage: if-not-present makes no registry request; always makes one HEAD and downloads nothing', async (t) => {
  const c = await namespace(t);
  const ref = via(pushed.busybox);
  const { svc, metrics } = service(t, c);
  await svc.ensureImage(ref, { signal: signal() });
  const bytes = await counterValue(metrics.pulledBytes);
  const tLocal = performance.now();
  const again = await counted(() => svc.ensureImage(ref, { signal: signal() }));
  t.diagnostic(`if-not-present, image local: ${(performance.now() - tLocal).toFixed(1)} ms`);
  assert.deepEqual(again.reqs, []);
  assert.equal(again.value.chainId, hostManifest('busybox').layers[0]!.diffId);
  assert.equal(await counterValue(metrics.pulledBytes), bytes);

  const always = service(t, c, { policy: 'always' });
  const t0 = performance.now();
  const r = await counted(() => always.svc.ensureImage(ref, { signal: signal() }));
  t.diagnostic(`always, unchanged digest: ${Math.round(performance.now() - t0)} ms`);
  assert.deepEqual(summary(r.reqs), ['HEAD manifests/v1']);
  assert.equal(await counterValue(always.metrics.pulledBytes), 0);
  assert.equal(r.value.target.digest, pushed.digests.busybox);
});

test('if-not-present with blobs present but the snapshot gone re-unpacks without downloading', async (t) => {
  const c = await namespace(t);
  const ref = via(pushed.busybox);
  const { svc } = service(t, c);
  const img = await svc.ensureImage(ref, { signal: signal() });
  await c.call('snapshots', 'Remove', { snapshotter: SNAPSHOTTER, key: img.chainId });
  assert.ok(!(await snapshotExists(c, img.chainId)));
  const r = await counted(() => svc.ensureImage(ref, { signal: signal() }));
  assert.deepEqual(r.reqs, [], 'every blob was local');
  assert.ok(await snapshotExists(c, img.chainId));
  assert.deepEqual(await leases(c), []);
});

test('8 concurrent ensureImage of one reference share one pull', async (t) => {
  const c = await namespace(t);
  const { svc, metrics } = service(t, c);
  const { ref, image } = await pushRandomImage(t, 1024 * 1024);
  const m = image.manifests[0]!;
  const { value: results, reqs } = await counted(() =>
    Promise.all(Array.from({ length: 8 }, () => svc.ensureImage(ref, { signal: signal() }))),
  );
  assert.equal(await counterValue(metrics.pulls), 1);
  assert.deepEqual(summary(reqs), [
    'HEAD manifests/v1',
    `GET manifests/${m.digest}`,
    `GET blobs/${m.config.digest}`,
    `GET blobs/${m.layers[0]!.digest}`,
  ]);
  for (const r of results) assert.deepEqual(r, results[0]!);
  assert.equal(svc.pullsInFlight, 0);
});

test('a blob committed in another namespace is not downloaded again (STAT offset == total → COMMIT only)', async (t) => {
  const a = await namespace(t);
  const b = await namespace(t);
  const { ref, image } = await pushRandomImage(t, 512 * 1024);
  await service(t, a).svc.ensureImage(ref, { signal: signal() });
  const { svc, metrics } = service(t, b);
  const { value: img, reqs } = await counted(() => svc.ensureImage(ref, { signal: signal() }));
  assert.deepEqual(summary(reqs), ['HEAD manifests/v1'], 'everything else came from the shared blob store');
  assert.equal(await counterValue(metrics.pulledBytes), 0);
  const m = image.manifests[0]!;
  assert.equal(
    (await contentLabels(b, m.digest))['containerd.io/gc.ref.content.l.0'],
    m.layers[0]!.digest,
    'labels set although nothing was fetched',
  );
  assert.ok(await snapshotExists(b, img.chainId), 'snapshots are per namespace: unpacked again here');
  await collectGarbage(b);
  assert.equal((await listContent(b)).length, 3);
});

test('IMAGE_PULL_POLICY=never: missing → NOT_FOUND; present → used without any registry request', async (t) => {
  const c = await namespace(t);
  const ref = via(pushed.busybox);
  const never = service(t, c, { policy: 'never' });
  const r = await counted(() => never.svc.ensureImage(ref, { signal: signal() }).catch((e: unknown) => e));
  assert.ok(isCode('NOT_FOUND')(r.value), String(r.value));
  assert.equal((r.value as AgentError).message, `image ${ref} is not present locally and IMAGE_PULL_POLICY=never`);
  assert.deepEqual(r.reqs, []);

  await service(t, c).svc.ensureImage(ref, { signal: signal() });
  const ok = await counted(() => never.svc.ensureImage(ref, { signal: signal() }));
  assert.deepEqual(ok.reqs, []);
  assert.equal(ok.value.target.digest, pushed.digests.busybox);
});

test('unknown tag → NOT_FOUND; index without the host platform → NOT_FOUND "no manifest for …"', async (t) => {
  const c = await namespace(t);
  const { svc } = service(t, c);
  const missing = `${proxy!.host}/esb-test/busybox:does-not-exist`;
  await assert.rejects(
    svc.ensureImage(missing, { signal: signal() }),
    (e: unknown) => isCode('NOT_FOUND')(e) && (e as Error).message === `image ${missing} not found in ${proxy!.host} (HTTP 404)`,
  );
  await assert.rejects(svc.ensureImage(`${proxy!.host}/esb-test/nothing-here:v1`, { signal: signal() }), isCode('NOT_FOUND'));
  const s390 = service(t, c, { platform: { os: 'linux', architecture: 's390x' } });
  const ref = via(pushed.multiarch);
  await assert.rejects(
    s390.svc.ensureImage(ref, { signal: signal() }),
    isCode('NOT_FOUND', new RegExp(`^no manifest for linux/s390x in ${ref.replace(/[.]/g, '\\.')}`)),
  );
  assert.deepEqual(await leases(c), []);
  await assert.rejects(c.call('images', 'Get', { name: ref }), isCode('NOT_FOUND'));
  await assert.rejects(svc.ensureImage('Bad Ref', { signal: signal() }), isCode('INVALID_ARGUMENT'));
});

test('registry down → UNAVAILABLE with the cause; back up → pull works', async (t) => {
  const started: { reg?: RegistryInstance } = {};
  t.after(() => started.reg?.stop());
  const reg = (started.reg = await startRegistry());
  await pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1');
  const c = await namespace(t);
  const { svc, metrics } = service(t, c);
  const ref = `${reg.host}/esb-test/busybox:v1`;
  await reg.pause();
  await assert.rejects(svc.ensureImage(ref, { signal: signal() }), isCode('UNAVAILABLE', /ECONNREFUSED/));
  assert.equal(await counterValue(metrics.pulls, { result: 'unavailable' }), 1);
  assert.deepEqual(await leases(c), []);
  await reg.restart();
  const img = await svc.ensureImage(ref, { signal: signal() });
  assert.equal(img.target.digest, pushed.digests.busybox);
});

test('Basic auth (htpasswd registry): config.json credentials → OK; none or wrong → PERMISSION_DENIED', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-htpasswd-'));
  const started: { reg?: RegistryInstance } = {};
  t.after(async () => {
    await started.reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const htpasswd = makeHtpasswd(dir, { alice: 'secret' });
  const reg = (started.reg = await startRegistry({ htpasswdPath: htpasswd }));
  await pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1', { username: 'alice', password: 'secret' });
  const ref = `${reg.host}/esb-test/busybox:v1`;
  const c = await namespace(t);
  await assert.rejects(service(t, c).svc.ensureImage(ref, { signal: signal() }), isCode('PERMISSION_DENIED', /no credentials/));
  const wrong = service(t, c, { auths: { [reg.host]: { auth: Buffer.from('alice:nope').toString('base64') } } });
  await assert.rejects(wrong.svc.ensureImage(ref, { signal: signal() }), isCode('PERMISSION_DENIED'));
  const good = service(t, c, { auths: { [`http://${reg.host}/v1/`]: { auth: Buffer.from('alice:secret').toString('base64') } } });
  const img = await good.svc.ensureImage(ref, { signal: signal() });
  assert.equal(img.target.digest, pushed.digests.busybox);
  assert.deepEqual(await leases(c), []);
});

/**
 * A token server (user bob) and a registry that sends its clients there, busybox pushed as
 * esb-test/busybox:v1; both stopped after the test, also when it fails.
 */
async function tokenRegistry(t: TestContext): Promise<{ ts: Awaited<ReturnType<typeof startTokenServer>>; reg: RegistryInstance }> {
  const started: { reg?: RegistryInstance; ts?: Awaited<ReturnType<typeof startTokenServer>> } = {};
  t.after(async () => {
    await started.reg?.stop();
    await started.ts?.stop();
  });
  const ts = (started.ts = await startTokenServer({ users: { bob: 'hunter2' } }));
  const reg = (started.reg = await startRegistry({
    token: { realm: ts.realm, service: ts.service, issuer: ts.issuer, rootCertBundle: ts.rootCertBundle },
  }));
  await pushImage(reg.url, images.busybox, 'esb-test/busybox', 'v1', { username: 'bob', password: 'hunter2' });
  return { ts, reg };
}

test('Bearer auth (token registry): credentials → POST password grant → OK; anonymous → PERMISSION_DENIED', async (t) => {
  const { ts, reg } = await tokenRegistry(t);
  const ref = `${reg.host}/esb-test/busybox:v1`;
  const c = await namespace(t);
  const before = ts.requests.length;
  await assert.rejects(service(t, c).svc.ensureImage(ref, { signal: signal() }), isCode('PERMISSION_DENIED'));
  assert.deepEqual(
    ts.requests.slice(before).map((r) => `${r.method} ${r.user ?? 'anonymous'} ${r.status}`),
    ['GET anonymous 200'],
  );

  const mark = ts.requests.length;
  const good = service(t, c, { auths: { [reg.host]: { username: 'bob', password: 'hunter2' } } });
  const img = await good.svc.ensureImage(ref, { signal: signal() });
  assert.equal(img.target.digest, pushed.digests.busybox);
  const used = ts.requests.slice(mark);
  assert.equal(used.length, 1, 'one token for the whole pull (cached per scope)');
  assert.equal(used[0]?.method, 'POST');
  assert.equal(used[0].grantType, 'password');
  assert.equal(used[0].clientId, 'containerd-client');
  assert.deepEqual(used[0].scopes, ['repository:esb-test/busybox:pull']);
  const wrong = service(t, c, { auths: { [reg.host]: { username: 'bob', password: 'nope' } } });
  await c.call('images', 'Delete', { name: ref, sync: true });
  await assert.rejects(
    wrong.svc.ensureImage(ref, { signal: signal() }),
    (e: unknown) => isCode('PERMISSION_DENIED', /DOCKER_CONFIG/)(e) && !(e as Error).message.includes('bob'),
  );
});

test('a token realm on plain http at another loopback port never sees the credentials', async (t) => {
  const { ts, reg } = await tokenRegistry(t);
  const ref = `${reg.host}/esb-test/busybox:v1`;
  const realmHost = new URL(ts.realm).host;
  const c = await namespace(t);
  const before = ts.requests.length;
  // The registry is plain http (listed); its realm is on another port, not listed as insecure.
  const svc = service(t, c, {
    allowed: `${reg.host},${realmHost}`,
    insecure: reg.host,
    auths: { [reg.host]: { username: 'bob', password: 'hunter2' } },
  }).svc;
  await assert.rejects(
    svc.ensureImage(ref, { signal: signal() }),
    (e: unknown) => isCode('PERMISSION_DENIED', /plain-http realm/)(e) && !(e as Error).message.includes('bob'),
  );
  assert.deepEqual(ts.requests.slice(before), [], 'the realm received no request, so no Authorization and no password');
  // Anonymous, the same realm is on loopback and not allowed: refused too, nothing sent.
  const anon = service(t, c, { allowed: reg.host, insecure: reg.host }).svc;
  await assert.rejects(anon.ensureImage(ref, { signal: signal() }), isCode('FAILED_PRECONDITION', /token realm/));
  assert.deepEqual(ts.requests.slice(before), []);
  assert.deepEqual(await leases(c), []);
});

/** A TCP listener on 127.0.0.1 that counts connections and closes them at once. */
async function connectionCounter(t: TestContext): Promise<{ host: string; connections: () => number }> {
  let n = 0;
  const srv = net.createServer((sock) => {
    n++;
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
  return { host: `127.0.0.1:${(srv.address() as AddressInfo).port}`, connections: () => n };
}

test('an image on a loopback port outside AGENT_ALLOWED_REGISTRIES → INVALID_ARGUMENT, and the port sees no connection', async (t) => {
  const port = await connectionCounter(t);
  const c = await namespace(t);
  const { svc, metrics } = service(t, c, { allowed: registry!.host, insecure: '*' });
  for (const policy of ['if-not-present', 'always'] as const) {
    const s = policy === 'always' ? service(t, c, { allowed: registry!.host, policy }).svc : svc;
    await assert.rejects(
      s.ensureImage(`${port.host}/admin/page:v1`, { signal: signal() }),
      isCode('INVALID_ARGUMENT', new RegExp(`${port.host}.*AGENT_ALLOWED_REGISTRIES`)),
    );
  }
  assert.equal(port.connections(), 0);
  assert.equal(await counterValue(metrics.imageRefusals, { reason: 'registry_not_allowed' }), 1);
  assert.deepEqual(await leases(c), []);
});

test('a blob redirect to a loopback host outside the allowlist is refused with no connection to it', async (t) => {
  const target = await connectionCounter(t);
  // A registry stand-in that sends every blob elsewhere; manifests come from the real registry.
  const [upHost, upPort] = registry!.host.split(':') as [string, string];
  const srv = http.createServer((req, res) => {
    if (req.url?.includes('/blobs/')) {
      res.writeHead(307, { location: `http://${target.host}${req.url}` }).end();
      return;
    }
    const up = http.request(
      { host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: { ...req.headers, host: registry!.host } },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  t.after(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => {
          resolve();
        });
      }),
  );
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const { ref } = await pushRandomImage(t, 64 * 1024);
  const c = await namespace(t);
  const { svc } = service(t, c, { allowed: host, insecure: host });
  await assert.rejects(
    svc.ensureImage(ref.replace(proxy!.host, host), { signal: signal() }),
    isCode('FAILED_PRECONDITION', /redirect.*refused/),
  );
  assert.equal(target.connections(), 0);
  await expectNothingKept(c);
});

/** No lease, no ingest, no image record, no snapshot, and after a GC no content. */
async function expectNothingKept(c: ContainerdClient): Promise<void> {
  await waitFor('the pull lease to go', async () => (await leases(c)).length === 0, 15_000, 20);
  assert.deepEqual(await ingests(c), []);
  assert.deepEqual(
    (await c.call('images', 'List', { filters: [] })).images.map((i) => i.name),
    [],
  );
  await collectGarbage(c);
  assert.deepEqual(await listContent(c), [], 'nothing is GC-rooted');
  assert.deepEqual(await listSnapshotKeys(c, SNAPSHOTTER), []);
}

test('images over AGENT_IMAGE_MAX_LAYERS / _LAYER_BYTES / _BYTES → INVALID_ARGUMENT before any layer download, nothing kept', async (t) => {
  const worker = hostManifest('worker'); // 3 layers
  const layerSizes = worker.layers.map((l) => l.size);
  const total = worker.config.size + layerSizes.reduce((a, b) => a + b, 0);
  const cases: [Partial<ImageBounds>, string, RegExp][] = [
    [{ maxLayers: 2 }, 'layers', /3 layers, more than AGENT_IMAGE_MAX_LAYERS=2/],
    [{ maxLayerBytes: Math.max(...layerSizes) - 1 }, 'layer_bytes', /AGENT_IMAGE_MAX_LAYER_BYTES/],
    [{ maxImageBytes: total - 1 }, 'image_bytes', /AGENT_IMAGE_MAX_BYTES/],
  ];
  for (const [bounds, reason, re] of cases) {
    const c = await namespace(t);
    const { svc, metrics } = service(t, c, { bounds });
    const { value, reqs } = await counted(() =>
      svc.ensureImage(via(pushed.worker), { signal: signal() }).then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    assert.ok(isCode('INVALID_ARGUMENT', re)(value), String(value));
    assert.deepEqual(
      reqs.filter((r) => r.path.includes('/blobs/')),
      [],
      `${reason}: no blob downloaded`,
    );
    assert.equal(await counterValue(metrics.imageRefusals, { reason }), 1);
    await expectNothingKept(c);
  }
});

test('a registry that serves more bytes than a layer declares is cut off at the declared size; nothing kept', async (t) => {
  const { ref, image } = await pushRandomImage(t, 256 * 1024);
  const m = image.manifests[0]!;
  const layer = m.layers[0]!;
  // The stand-in declares a small layer in its manifest and then streams the real, bigger blob.
  const smallSize = 1024;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: m.config.mediaType, digest: m.config.digest, size: m.config.size },
      layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: smallSize }],
    }),
  );
  let blobBytesSent = 0;
  const srv = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (url.includes('/manifests/')) {
      res.writeHead(200, {
        'content-type': MediaType.ociManifest,
        'docker-content-digest': sha256Digest(manifest),
        'content-length': String(manifest.length),
      });
      res.end(req.method === 'HEAD' ? undefined : manifest);
    } else if (url.endsWith(m.config.digest)) {
      res.writeHead(200).end(readFileSync(m.config.path));
    } else {
      const big = readFileSync(layer.path);
      res.writeHead(200);
      res.on('close', () => undefined);
      blobBytesSent = big.length;
      res.end(big);
    }
  });
  t.after(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => {
          resolve();
        });
      }),
  );
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const c = await namespace(t);
  const { svc } = service(t, c, { allowed: host, insecure: host, bounds: { maxLayerBytes: 4096 } });
  await assert.rejects(
    svc.ensureImage(ref.replace(proxy!.host, host), { signal: signal() }),
    isCode('FAILED_PRECONDITION', /larger than the 1024 bytes its descriptor declares/),
  );
  assert.ok(blobBytesSent > 4096, 'the stand-in did send more than the bound');
  await expectNothingKept(c);
});

test('abort in the middle of a blob → CANCELLED; then no lease, no ingest, no image, and GC leaves no content', async (t) => {
  const c = await namespace(t);
  const { svc, metrics } = service(t, c);
  const { ref } = await pushRandomImage(t, 16 * 1024 * 1024);
  const release = proxy!.holdBlobsAfter(4 * 1024 * 1024);
  t.after(release);
  const ac = new AbortController();
  const p = svc.ensureImage(ref, { signal: ac.signal });
  // Wait until the big layer is being written (its ingest exists and has data), then abort.
  await waitFor(
    'a layer ingest in progress',
    async () => (await c.call('content', 'ListStatuses', { filters: [] })).statuses.some((s) => Number(s.offset) >= 2 * 1024 * 1024),
    30_000,
    20,
  );
  const inProgress = await c.call('content', 'ListStatuses', { filters: [] });
  t.diagnostic(`aborting with ingests ${inProgress.statuses.map((s) => `${s.ref} ${s.offset}/${s.total}`).join(', ')}`);
  const t0 = performance.now();
  ac.abort();
  await assert.rejects(p, isCode('CANCELLED'));
  t.diagnostic(`caller released ${Math.round(performance.now() - t0)} ms after abort`);
  release();
  await waitFor('the pull to clean up', async () => svc.pullsInFlight === 0 && (await leases(c)).length === 0, 15_000, 20);
  assert.deepEqual(await ingests(c), []);
  await assert.rejects(c.call('images', 'Get', { name: ref }), isCode('NOT_FOUND'));
  await collectGarbage(c);
  assert.deepEqual(await listContent(c), [], 'nothing is GC-rooted');
  assert.equal(await counterValue(metrics.pulls, { result: 'cancelled' }), 1);

  // The same pull afterwards works.
  const img = await svc.ensureImage(ref, { signal: signal() });
  assert.ok(await snapshotExists(c, img.chainId));
});

test('one caller giving up does not cancel the pull shared with another', async (t) => {
  const c = await namespace(t);
  const { svc, metrics } = service(t, c);
  const { ref } = await pushRandomImage(t, 8 * 1024 * 1024);
  const release = proxy!.holdBlobsAfter(2 * 1024 * 1024);
  t.after(release);
  const quitter = new AbortController();
  const p1 = svc.ensureImage(ref, { signal: quitter.signal });
  const p2 = svc.ensureImage(ref, { signal: signal() });
  await waitFor(
    'a layer ingest in progress',
    async () => (await c.call('content', 'ListStatuses', { filters: [] })).statuses.some((s) => Number(s.offset) >= 1024 * 1024),
    30_000,
    20,
  );
  quitter.abort();
  await assert.rejects(p1, isCode('CANCELLED'));
  release();
  const img = await p2;
  assert.ok(await snapshotExists(c, img.chainId));
  assert.equal(await counterValue(metrics.pulls), 1);
  assert.deepEqual(await leases(c), []);
});

test('two tags of one image pulled at once: both succeed, one snapshot chain, no extract-* snapshot or lease left', async (t) => {
  const c = await namespace(t);
  const { ref, image } = await pushRandomImage(t, 4 * 1024 * 1024);
  await pushImage(registry!.url, image, image.name, 'v2');
  const ref2 = ref.replace(/:v1$/, ':v2');
  const [a, b] = await Promise.all([
    service(t, c).svc.ensureImage(ref, { signal: signal() }),
    service(t, c).svc.ensureImage(ref2, { signal: signal() }),
  ]);
  assert.equal(a.chainId, b.chainId);
  assert.ok(await snapshotExists(c, a.chainId));
  assert.deepEqual(
    (await listSnapshotKeys(c, SNAPSHOTTER)).filter((k) => k.startsWith('extract-')),
    [],
  );
  assert.deepEqual(await leases(c), []);
  assert.deepEqual(await ingests(c), []);
  const names = (await c.call('images', 'List', { filters: [] })).images.map((i) => i.name).sort();
  assert.deepEqual(names, [ref, ref2].sort());
});

/** Leaves a partial ingest behind: STAT + one WRITE of `bytes`, then the stream is cancelled. */
async function partialIngest(c: ContainerdClient, lease: string, ref: string, data: Buffer, digest: string, bytes: number): Promise<void> {
  const call = c.svc.content.Write(c.metadata({ lease }));
  const replies = (call as AsyncIterable<{ offset: string }>)[Symbol.asyncIterator]();
  call.write({ action: 'STAT', ref, total: data.length, expected: digest });
  await replies.next();
  call.write({ action: 'WRITE', offset: 0, data: data.subarray(0, bytes) });
  const wrote = await replies.next();
  assert.equal(wrote.done, false);
  assert.equal(Number(wrote.value.offset), bytes);
  call.cancel();
  await replies.next().catch(() => undefined);
}

test('Content.Write resumes a partial ingest from its offset (Range), or restarts at 0 when the source cannot seek', async (t) => {
  const c = await namespace(t);
  // The namespace's cleanup (registered first) deletes this lease if the test fails.
  const lease = await createLease(c, 'test', 3_600_000, {});
  for (const seekable of [true, false]) {
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const desc = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(data), size: data.length };
    const ref = ingestRef('layer', desc.digest);
    await partialIngest(c, lease, ref, data, desc.digest, 1024 * 1024);
    await waitFor(
      'the partial ingest to be listed',
      async () =>
        (await c.call('content', 'ListStatuses', { filters: [] })).statuses.some((s) => s.ref === ref && s.offset === String(1024 * 1024)),
      5000,
      20,
    );
    const opened: number[] = [];
    const outcome = await writeBlob(c, {
      ref,
      desc,
      labels: { 'test/label': 'x' },
      lease,
      signal: signal(),
      open: (offset) => {
        opened.push(offset);
        const from = seekable ? offset : 0;
        return Promise.resolve({ offset: from, body: [data.subarray(from)], destroy: () => undefined });
      },
    });
    assert.equal(outcome, 'committed');
    assert.deepEqual(opened, [1024 * 1024]);
    assert.equal((await contentLabels(c, desc.digest))['test/label'], 'x');
    assert.ok(!(await ingests(c)).includes(ref));
  }
  await deleteLease(c, lease, {});
});

test('Content.Write on a ref locked by another writer backs off and succeeds once it is released', async (t) => {
  const c = await namespace(t);
  // The namespace's cleanup (registered first) deletes this lease if the test fails.
  const lease = await createLease(c, 'test', 3_600_000, {});
  const data = randomBytes(64 * 1024);
  const desc = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(data), size: data.length };
  const ref = ingestRef('layer', desc.digest);
  const holder = c.svc.content.Write(c.metadata({ lease }));
  const replies = (holder as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  holder.write({ action: 'STAT', ref, total: data.length, expected: desc.digest });
  await replies.next();
  const t0 = performance.now();
  setTimeout(() => {
    holder.end();
  }, 300);
  const outcome = await writeBlob(c, {
    ref,
    desc,
    labels: {},
    lease,
    signal: signal(),
    open: () => Promise.resolve({ offset: 0, body: [data], destroy: () => undefined }),
  });
  const waited = performance.now() - t0;
  t.diagnostic(`locked ref released after 300 ms; write done after ${Math.round(waited)} ms`);
  assert.equal(outcome, 'committed');
  assert.ok(waited >= 250, `waited ${waited} ms`);
  await replies.next().catch(() => undefined);
  await deleteLease(c, lease, {});
});
