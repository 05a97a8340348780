/**
 * `esb-agent import` as a child process into a real containerd: an OCI image layout, a legacy
 * `docker save` (plain layer.tar files) and a Docker ≥ 25 save of the test images, then
 * EnsureContainer from the imported name with IMAGE_PULL_POLICY=never and an InvokeWorker the
 * worker answers. Broken archives (not a tar, a blob that does not match its digest, no
 * manifest) fail with a clear message and leave no lease, ingest, content or image behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import tar from 'tar-stream';
import { PROJECT_ROOT } from '../../src/paths.js';
import { contentInfo } from '../../src/runtime/containerd/image/content-store.js';
import { sha256Digest } from '../../src/registry/digest.js';
import { getImage } from '../../src/runtime/containerd/image/image-store.js';
import { writeDockerArchive, writeOciArchive } from '../harness/images.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';

const ENTRY = path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** Runs `esb-agent import <args>` against the stack's containerd namespace. */
function importCli(stack: TestStack, args: readonly string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERD_SOCKET: stack.ctd.socket,
    CONTAINERD_NAMESPACE: stack.namespace,
    ...extraEnv,
  };
  delete env['NODE_TEST_CONTEXT'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'import', ...args], {
      cwd: PROJECT_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 5 * 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Writes a tar of in-memory files with tar-stream. */
async function writeTar(file: string, entries: readonly { name: string; data: Buffer }[]): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(file));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ name: e.name, size: e.data.length, mode: 0o644 }, e.data, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }
  pack.finalize();
  await done;
}

/** Ensure from `image` (pull policy never), invoke echo, destroy; asserts each step. */
async function runWorker(stack: TestStack, image: string, owner: string): Promise<void> {
  const w = await stack.call<{ id: string; port: number }>('EnsureContainer', {
    function_name: 'imported-fn',
    image,
    env: { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '128' },
    owner_id: owner,
  });
  assert.equal(w.port, 8080);
  const payload = JSON.stringify({ action: 'echo', from: image });
  const r = await stack.call<{ status_code: number; body: Buffer }>('InvokeWorker', {
    container_id: w.id,
    owner_id: owner,
    payload: Buffer.from(payload),
    timeout_ms: 30_000,
  });
  assert.equal(r.status_code, 200);
  assert.equal(r.body.toString(), payload);
  assert.deepEqual(await stack.call('DestroyContainer', { container_id: w.id, owner_id: owner, function_name: 'imported-fn' }), {
    success: true,
  });
}

async function leases(stack: TestStack): Promise<string[]> {
  return (await stack.containerd.call('leases', 'List', { filters: [] })).leases.map((l) => l.id);
}

async function ingests(stack: TestStack): Promise<string[]> {
  return (await stack.containerd.call('content', 'ListStatuses', { filters: [] })).statuses.map((s) => s.ref);
}

/** Deletes an image and runs GC, so the next import has to write and unpack everything again. */
async function deleteImage(stack: TestStack, name: string): Promise<void> {
  await stack.containerd.call('images', 'Delete', { name, sync: true });
}

test(
  'import: OCI layout, docker save (legacy and Docker 25), then Ensure with IMAGE_PULL_POLICY=never; broken archives leave nothing',
  { timeout: 10 * 60_000 },
  async (t) => {
    let stack: TestStack | undefined = undefined;
    let dir: string | undefined = undefined;
    t.after(async () => {
      await stack?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });
    dir = mkdtempSync(path.join(os.tmpdir(), 'esb-import-test-'));
    stack = await startStack({ env: { IMAGE_PULL_POLICY: 'never' } });
    const images = stack.images.images;
    const owner = `import-${stack.envName}`;
    const repo = `esb-import-${stack.envName}`;

    // Not imported yet: never means NOT_FOUND, with no registry access.
    const missing = await stack.callError('EnsureContainer', {
      function_name: 'imported-fn',
      image: `${repo}/oci-worker:v1`,
      owner_id: owner,
    });
    assert.equal(missing.name, 'NOT_FOUND');
    assert.match(missing.details, /IMAGE_PULL_POLICY=never/);

    // 1. OCI layout whose index names only a tag: refused without --name, imported with it.
    const oci = path.join(dir, 'worker-oci.tar');
    await writeOciArchive(images.worker, oci, { refName: 'v1' });
    const unnamed = await importCli(stack, [oci]);
    assert.equal(unnamed.code, 1, show(unnamed));
    assert.match(unnamed.stderr, /has no image name \(only the tag "v1"\); give one with --name/);
    assert.deepEqual(await leases(stack), [], 'the failed import deleted its lease');
    const ociName = `docker.io/${repo}/oci-worker:v1`;
    const ociRun = await importCli(stack, [oci, '--name', `${repo}/oci-worker:v1`, '-o', 'json']);
    assert.equal(ociRun.code, 0, show(ociRun));
    const ociResult = JSON.parse(ociRun.stdout) as {
      format: string;
      images: { names: string[]; target: { digest: string }; layersApplied: number }[];
      blobsWritten: number;
    };
    assert.equal(ociResult.format, 'oci-layout');
    assert.deepEqual(
      ociResult.images.map((i) => i.names),
      [[ociName]],
    );
    assert.equal(ociResult.images[0]!.target.digest, images.worker.digest, 'the image keeps its manifest digest');
    assert.equal(ociResult.images[0]!.layersApplied, images.worker.manifests[0]!.layers.length);
    assert.equal((await getImage(stack.containerd, ociName))?.target.digest, images.worker.digest);
    assert.deepEqual(await leases(stack), []);
    await runWorker(stack, `${repo}/oci-worker:v1`, owner);
    await deleteImage(stack, ociName);

    // 2. Legacy docker save: <id>/layer.tar (uncompressed), <config>.json, manifest.json; a new
    //    Docker schema 2 manifest is made, and every layer is unpacked from the plain tars.
    const legacy = path.join(dir, 'worker-docker-legacy.tar');
    await writeDockerArchive(images.worker, legacy, { repoTags: [`${repo}/docker-worker:v1`], layout: 'legacy' });
    const legacyRun = await importCli(stack, [legacy]);
    assert.equal(legacyRun.code, 0, show(legacyRun));
    const dockerName = `docker.io/${repo}/docker-worker:v1`;
    assert.match(legacyRun.stdout, /^imported .* \(docker-save; \d+ blob\(s\) written, \d+ already present\)$/m);
    assert.match(
      legacyRun.stdout,
      new RegExp(
        `^${dockerName.replace(/[.]/g, '\\.')}\\s+sha256:[0-9a-f]{64}\\s+${images.worker.manifests[0]!.layers.length} layer\\(s\\) unpacked$`,
        'm',
      ),
    );
    const record = await getImage(stack.containerd, dockerName);
    assert.equal(record?.target.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    await runWorker(stack, `${repo}/docker-worker:v1`, owner);

    // 3. Docker ≥ 25 save (blobs/sha256 + index.json + manifest.json) of busybox, gzip layers.
    const modern = path.join(dir, 'busybox-docker25.tar');
    await writeDockerArchive(images.busybox, modern, { repoTags: [`${repo}/busybox:v1`], withOciIndex: true });
    const modernRun = await importCli(stack, [modern, '-o', 'json']);
    assert.equal(modernRun.code, 0, show(modernRun));
    const modernResult = JSON.parse(modernRun.stdout) as { format: string; images: { names: string[]; chainId: string }[] };
    assert.equal(modernResult.format, 'oci-layout');
    assert.deepEqual(modernResult.images[0]!.names, [`docker.io/${repo}/busybox:v1`]);
    const snap = await stack.containerd.call('snapshots', 'Stat', { snapshotter: 'overlayfs', key: modernResult.images[0]!.chainId });
    assert.equal(snap.info?.kind, 'COMMITTED');

    // 4. Broken archives: a clear message, exit 1, and nothing left (GC ran when the lease went).
    const notTar = path.join(dir, 'not-a-tar.tar');
    writeFileSync(notTar, randomBytes(4096));
    const r1 = await importCli(stack, [notTar]);
    assert.equal(r1.code, 1, show(r1));
    assert.match(r1.stderr, /not-a-tar\.tar is not a readable tar archive/);

    const good = randomBytes(2048);
    const goodDigest = sha256Digest(good);
    const forged = path.join(dir, 'forged.tar');
    const claimed = sha256Digest(randomBytes(16));
    await writeTar(forged, [
      { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
      { name: `blobs/sha256/${goodDigest.slice(7)}`, data: good },
      { name: `blobs/sha256/${claimed.slice(7)}`, data: randomBytes(64) },
      { name: 'index.json', data: Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })) },
    ]);
    const r2 = await importCli(stack, [forged]);
    assert.equal(r2.code, 1, show(r2));
    assert.match(r2.stderr, new RegExp(`blob ${claimed}: digest mismatch`));
    assert.equal(await contentInfo(stack.containerd, goodDigest), undefined, 'a blob committed before the failure was collected');

    const noManifest = path.join(dir, 'no-manifest.tar');
    await writeTar(noManifest, [
      { name: `blobs/sha256/${goodDigest.slice(7)}`, data: good },
      { name: 'README', data: Buffer.from('hello') },
    ]);
    const r3 = await importCli(stack, [noManifest]);
    assert.equal(r3.code, 1, show(r3));
    assert.match(r3.stderr, /not an image archive: it has neither index\.json \(OCI image layout\) nor manifest\.json \(docker save\)/);
    assert.equal(await contentInfo(stack.containerd, goodDigest), undefined);

    const usage = await importCli(stack, []);
    assert.equal(usage.code, 64, show(usage));

    // 5. An archive may not silently repoint an existing name at another digest: ALREADY_EXISTS
    //    unless --force. The same digest again is fine.
    const before = (await getImage(stack.containerd, dockerName))?.target.digest;
    const clash = await importCli(stack, [modern, '--name', `${repo}/docker-worker:v1`]);
    assert.equal(clash.code, 1, show(clash));
    assert.match(clash.stderr, new RegExp(`image ${dockerName.replace(/[.]/g, '\\.')} already exists with digest ${before}; .*--force`));
    assert.equal((await getImage(stack.containerd, dockerName))?.target.digest, before, 'the record is unchanged');
    const again = await importCli(stack, [modern]);
    assert.equal(again.code, 0, show(again));
    const forced = await importCli(stack, [modern, '--name', `${repo}/docker-worker:v1`, '--force']);
    assert.equal(forced.code, 0, show(forced));
    assert.equal((await getImage(stack.containerd, dockerName))?.target.digest, images.busybox.digest);

    // 6. Bounds: layer count, archive bytes, metadata files. Refused before any record; nothing kept.
    const capped = `${repo}/capped:v1`;
    const layers = await importCli(stack, [oci, '--name', capped], { AGENT_IMAGE_MAX_LAYERS: '1' });
    assert.equal(layers.code, 1, show(layers));
    assert.match(layers.stderr, /has 3 layers, more than AGENT_IMAGE_MAX_LAYERS=1/);
    const bytes = await importCli(stack, [oci, '--name', capped], { AGENT_IMAGE_MAX_BYTES: '4096' });
    assert.equal(bytes.code, 1, show(bytes));
    assert.match(bytes.stderr, /hold more than 4096 bytes, over the AGENT_IMAGE_MAX_BYTES limit/);
    const manyJson = path.join(dir, 'many-json.tar');
    await writeTar(
      manyJson,
      Array.from({ length: 1025 }, (_, i) => ({ name: `m${i}.json`, data: Buffer.from('{}') })),
    );
    const meta = await importCli(stack, [manyJson]);
    assert.equal(meta.code, 1, show(meta));
    assert.match(meta.stderr, /more than 1024 metadata files/);
    assert.equal(await getImage(stack.containerd, `docker.io/${capped}`), undefined);

    assert.deepEqual(await leases(stack), [], 'no lease left');
    assert.deepEqual(await ingests(stack), [], 'no partial ingest left');
    const names = (await stack.containerd.call('images', 'List', { filters: [] })).images
      .map((i) => i.name)
      .filter((n) => n.includes(repo));
    assert.deepEqual(names.sort(), [`docker.io/${repo}/busybox:v1`, dockerName].sort(), 'only the successful imports have records');
    assert.equal(leakCount(await stack.leaks()), 0, JSON.stringify(await stack.leaks()));
  },
);
