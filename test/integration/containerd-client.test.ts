/**
 * The containerd client against a real private containerd: version, namespace creation (and
 * the header pitfall), error mapping, and a raw Images/Content round-trip of the test image
 * pulled from the harness registry.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import { readContent } from '../../src/runtime/containerd/image/content-store.js';
import { silentLogger } from '../../src/log.js';
import { AgentMetrics } from '../../src/metrics.js';
import { startContainerd, type ContainerdInstance } from '../harness/containerd.js';
import { RegistryHosts, parseHostList } from '../../src/registry/registry-hosts.js';
import { startRegistry, type RegistryInstance } from '../harness/registry.js';
import { pushTestImages, type PushedTestImages } from '../harness/images.js';

let ctd: ContainerdInstance;
let reg: RegistryInstance;
let images: PushedTestImages;
const clients: ContainerdClient[] = [];
const ns = `esb-client-${process.pid}`;

before(async () => {
  ctd = await startContainerd();
  reg = await startRegistry();
  images = await pushTestImages(reg);
});
after(async () => {
  for (const c of clients) c.close();
  await reg.stop();
  await ctd.stop();
});

function client(namespace = ns): ContainerdClient {
  const c = new ContainerdClient({ socket: ctd.socket, namespace });
  clients.push(c);
  return c;
}

test('Version answers with the daemon version', async () => {
  const v = await client().getVersion();
  assert.match(v.version, /^\d+\.\d+/);
});

test('ensureNamespace creates once, then reports it exists', async () => {
  const c = client();
  assert.equal(await c.ensureNamespace(), true);
  assert.equal(await c.ensureNamespace(), false);
  const list = await c.call('namespaces', 'List', { filter: '' });
  assert.ok(list.namespaces.some((n) => n.name === ns));
});

test('containerd errors keep their class: NOT_FOUND, and UNAVAILABLE for a missing socket', async () => {
  await assert.rejects(client().call('tasks', 'Get', { container_id: 'missing' }), { code: 'NOT_FOUND' });
  const gone = new ContainerdClient({ socket: `${ctd.dir}/no-such.sock`, namespace: ns });
  clients.push(gone);
  await assert.rejects(gone.getVersion(), { code: 'UNAVAILABLE' });
});

test('an aborted call rejects CANCELLED at once', async () => {
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(client().call('version', 'Version', {}, { signal: ac.signal }), { code: 'CANCELLED' });
});

test('Images/Content round-trip: the pulled image record points at the registry manifest, and its blobs read back intact', async () => {
  const c = client();
  await c.ensureNamespace();
  const { ImageService } = await import('../../src/runtime/containerd/image/image-service.js');
  const svc = new ImageService({
    client: c,
    snapshotter: 'overlayfs',
    registry: {
      hosts: new RegistryHosts({ allowed: parseHostList(reg.host), insecure: parseHostList(reg.host) }),
      caFile: undefined,
      dockerConfigDir: ctd.dir,
    },
    pullPolicy: 'if-not-present',
    bounds: { maxConcurrentPulls: 2, maxLayers: 128, maxLayerBytes: 2 ** 31, maxImageBytes: 2 ** 32 },
    log: silentLogger(),
    metrics: new AgentMetrics({ defaultMetrics: false }),
  });
  const resolved = await svc.ensureImage(images.worker, { signal: AbortSignal.timeout(60_000) });
  const rec = await c.call('images', 'Get', { name: resolved.name });
  assert.equal(rec.image?.target?.digest, images.digests.worker);
  const manifestBytes = await readContent(c, images.digests.worker, { maxBytes: 4 << 20 });
  assert.equal(`sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`, images.digests.worker);
  const manifest = JSON.parse(manifestBytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  assert.equal(manifest.config.digest, resolved.configDigest);
  const info = await c.call('content', 'Info', { digest: images.digests.worker });
  assert.ok(
    Object.keys(info.info?.labels ?? {}).some((k) => k.startsWith('containerd.io/gc.ref.content.l.')),
    'manifest carries layer GC refs',
  );
  const snap = await c.call('snapshots', 'Stat', { snapshotter: 'overlayfs', key: resolved.chainId });
  assert.equal(snap.info?.name, resolved.chainId);
  await svc.close();
});
