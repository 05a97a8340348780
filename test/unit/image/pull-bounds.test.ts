/**
 * PullLimiter (AGENT_MAX_CONCURRENT_PULLS with a bounded queue) and the manifest checks of
 * AGENT_IMAGE_MAX_LAYERS / _LAYER_BYTES / _BYTES.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { ImageLimitError, checkImageLimits } from '../../../src/runtime/containerd/image/image-limits.js';
import { MediaType, type ImageManifest } from '../../../src/registry/oci.js';
import { PullLimiter } from '../../../src/runtime/pull-limiter.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

test('PullLimiter: at most max run, the next ones queue up to the bound, beyond it RESOURCE_EXHAUSTED', async () => {
  const seen: [number, number][] = [];
  let refused = 0;
  const l = new PullLimiter({ max: 2, maxQueued: 1, onChange: (r, q) => seen.push([r, q]), onRefused: () => refused++ });
  const gates = [deferred(), deferred(), deferred()];
  let running = 0;
  let peak = 0;
  const job = (i: number) => async (): Promise<number> => {
    running++;
    peak = Math.max(peak, running);
    await gates[i]!.promise;
    running--;
    return i;
  };
  const signal = new AbortController().signal;
  const p0 = l.run('pull a', signal, job(0));
  const p1 = l.run('pull b', signal, job(1));
  const p2 = l.run('pull c', signal, job(2));
  await new Promise((r) => setImmediate(r));
  assert.equal(l.running, 2);
  assert.equal(l.queued, 1);
  await assert.rejects(
    l.run('pull d', signal, job(0)),
    (e: unknown) => e instanceof AgentError && e.code === 'RESOURCE_EXHAUSTED' && e.message.includes('AGENT_MAX_CONCURRENT_PULLS=2'),
  );
  assert.equal(refused, 1);
  gates[0]!.resolve();
  assert.equal(await p0, 0);
  await new Promise((r) => setImmediate(r));
  assert.equal(l.queued, 0);
  assert.equal(l.running, 2);
  gates[1]!.resolve();
  gates[2]!.resolve();
  assert.deepEqual(await Promise.all([p1, p2]), [1, 2]);
  assert.equal(peak, 2);
  assert.equal(l.running, 0);
  assert.deepEqual(seen.at(-1), [0, 0]);
});

test('PullLimiter: a waiter whose signal fires leaves the queue with its abort code', async () => {
  const l = new PullLimiter({ max: 1 });
  const gate = deferred();
  const first = l.run('pull a', new AbortController().signal, () => gate.promise);
  const ac = new AbortController();
  let ran = false;
  const waiting = l.run('pull b', ac.signal, () => {
    ran = true;
    return Promise.resolve();
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(l.queued, 1);
  ac.abort();
  await assert.rejects(waiting, (e: unknown) => e instanceof AgentError && e.code === 'CANCELLED');
  assert.equal(l.queued, 0);
  gate.resolve();
  await first;
  assert.equal(ran, false);
  assert.equal(l.running, 0);
});

const layer = (size: number, i: number) => ({ mediaType: MediaType.ociLayerGzip, digest: `sha256:${String(i).padStart(64, '0')}`, size });
const manifest = (sizes: number[]): ImageManifest => ({
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: `sha256:${'c'.repeat(64)}`, size: 10 },
  layers: sizes.map(layer),
});
const LIMITS = { maxLayers: 3, maxLayerBytes: 100, maxImageBytes: 200 };

test('checkImageLimits: layer count, one layer, the whole image (config included) → INVALID_ARGUMENT naming the variable', () => {
  checkImageLimits('img', manifest([100, 50, 40]), LIMITS);
  const refused = (sizes: number[], reason: string, variable: string): void => {
    assert.throws(
      () => {
        checkImageLimits('img', manifest(sizes), LIMITS);
      },
      (e: unknown) => e instanceof ImageLimitError && e.code === 'INVALID_ARGUMENT' && e.reason === reason && e.message.includes(variable),
    );
  };
  refused([1, 1, 1, 1], 'layers', 'AGENT_IMAGE_MAX_LAYERS=3');
  refused([101], 'layer_bytes', 'AGENT_IMAGE_MAX_LAYER_BYTES=100');
  refused([100, 91], 'image_bytes', 'AGENT_IMAGE_MAX_BYTES=200');
});
