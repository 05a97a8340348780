/**
 * The worker log cap (src/runtime/containerd/worker-log-cap.ts) on plain files in a temp dir:
 * when a log is rotated, what the rotated copy keeps, that an O_APPEND writer carries on at the
 * start of the truncated file, and the sweeper over a state dir.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { silentLogger } from '../../../src/log.js';
import { workerFiles } from '../../../src/runtime/containerd/worker-files.js';
import { WorkerLogCap, capLogFile, rotatedLogPath } from '../../../src/runtime/containerd/worker-log-cap.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-logcap-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** `n` numbered 10-byte lines: "000000000\n", "000000001\n", … */
function lines(from: number, n: number): string {
  let s = '';
  for (let i = from; i < from + n; i++) s += `${String(i).padStart(9, '0')}\n`;
  return s;
}

test('a log at or under the cap is left alone', async (t) => {
  const file = path.join(tempDir(t), 'output.log');
  writeFileSync(file, lines(0, 10));
  assert.deepEqual(await capLogFile(file, 100), { sizeBytes: 100, rotated: false });
  assert.equal(readFileSync(file, 'utf8'), lines(0, 10));
  assert.equal(existsSync(rotatedLogPath(file)), false);
});

test('a log over the cap: its newest cap bytes go to .1 and the live file is emptied', async (t) => {
  const file = path.join(tempDir(t), 'output.log');
  writeFileSync(file, lines(0, 100));
  writeFileSync(rotatedLogPath(file), 'previous generation\n');
  const r = await capLogFile(file, 250);
  assert.deepEqual(r, { sizeBytes: 1000, rotated: true });
  assert.equal(readFileSync(rotatedLogPath(file), 'utf8'), lines(75, 25), 'the newest 250 bytes replace the old .1');
  assert.equal(statSync(file).size, 0);
  assert.equal(existsSync(`${rotatedLogPath(file)}.tmp`), false);
});

test('a writer faster than the copy cannot grow .1 past the cap', async (t) => {
  const file = path.join(tempDir(t), 'output.log');
  writeFileSync(file, lines(0, 100_000));
  // `yes` appends as fast as the kernel takes it, like a hostile worker; before the copy was
  // bounded it kept the rotation reading (and .1 growing) while it wrote.
  const writer = spawn('sh', ['-c', `exec yes 0123456789abcdef >> '${file}'`], { stdio: 'ignore' });
  // Stopped after 2 s whatever happens, so a regression fails the test without filling the disk.
  const stop = setTimeout(() => writer.kill('SIGKILL'), 2_000);
  t.after(() => {
    clearTimeout(stop);
    writer.kill('SIGKILL');
  });
  await new Promise((r) => setTimeout(r, 50));
  const r = await capLogFile(file, 64 * 1024);
  writer.kill('SIGKILL');
  assert.equal(r.rotated, true);
  assert.equal(statSync(rotatedLogPath(file)).size, 64 * 1024, '.1 holds exactly the cap');
});

test('an O_APPEND writer (like the shim) writes at the start of the truncated file', async (t) => {
  const file = path.join(tempDir(t), 'output.log');
  const fd = openSync(file, 'a');
  t.after(() => {
    closeSync(fd);
  });
  writeSync(fd, lines(0, 50));
  assert.equal((await capLogFile(file, 100)).rotated, true);
  writeSync(fd, lines(50, 2));
  // Without O_APPEND the write would land at offset 500 and leave a 500-byte hole.
  assert.equal(readFileSync(file, 'utf8'), lines(50, 2));
});

test('a missing log, or a cap of 0, is not an error and rotates nothing', async (t) => {
  const dir = tempDir(t);
  assert.deepEqual(await capLogFile(path.join(dir, 'gone.log'), 10), { sizeBytes: 0, rotated: false });
  const file = path.join(dir, 'output.log');
  writeFileSync(file, lines(0, 10));
  assert.equal((await capLogFile(file, 0)).rotated, false);
});

test('sweep rotates exactly the workers over the cap and counts each rotation', async (t) => {
  const stateDir = tempDir(t);
  const big = workerFiles(stateDir, 'esb-t-big-00000001');
  const small = workerFiles(stateDir, 'esb-t-small-00000002');
  const noLog = workerFiles(stateDir, 'esb-t-nolog-00000003');
  for (const f of [big, small, noLog]) mkdirSync(f.dir, { recursive: true });
  writeFileSync(big.log, lines(0, 300));
  writeFileSync(small.log, lines(0, 5));
  let rotations = 0;
  const cap = new WorkerLogCap({ stateDir, maxBytes: 1000, log: silentLogger(), onRotate: () => rotations++ });
  assert.equal(await cap.sweep(), 1);
  assert.equal(rotations, 1);
  assert.equal(statSync(big.log).size, 0);
  assert.equal(readFileSync(rotatedLogPath(big.log), 'utf8'), lines(200, 100));
  assert.equal(readFileSync(small.log, 'utf8'), lines(0, 5));
  assert.equal(existsSync(rotatedLogPath(small.log)), false);
  // Nothing over the cap any more.
  assert.equal(await cap.sweep(), 0);
});

test('sweep of a state dir without workers/ does nothing', async (t) => {
  const cap = new WorkerLogCap({
    stateDir: tempDir(t),
    maxBytes: 10,
    log: silentLogger(),
    onRotate: () => assert.fail('no rotation expected'),
  });
  assert.equal(await cap.sweep(), 0);
});

test('the timer sweeps until stop(); a cap of 0 never starts it', async (t) => {
  // The sweeper's timer is unref'd (it must not keep the agent alive): hold the loop open here.
  const keepAlive = setInterval(() => undefined, 1000);
  t.after(() => {
    clearInterval(keepAlive);
  });
  const stateDir = tempDir(t);
  const f = workerFiles(stateDir, 'esb-t-timer-00000001');
  mkdirSync(f.dir, { recursive: true });
  writeFileSync(f.log, lines(0, 100));
  let rotated!: () => void;
  const done = new Promise<void>((resolve) => (rotated = resolve));
  const cap = new WorkerLogCap({
    stateDir,
    maxBytes: 100,
    intervalMs: 10,
    log: silentLogger(),
    onRotate: () => {
      rotated();
    },
  });
  t.after(() => cap.stop());
  cap.start();
  await done;
  await cap.stop();
  assert.equal(statSync(f.log).size, 0);
  // After stop() no further sweep runs.
  writeFileSync(f.log, lines(0, 100));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(statSync(f.log).size, 1000);

  const off = new WorkerLogCap({ stateDir, maxBytes: 0, intervalMs: 1, log: silentLogger(), onRotate: () => assert.fail('cap 0 is off') });
  off.start();
  await new Promise((r) => setTimeout(r, 30));
  await off.stop();
  assert.equal(statSync(f.log).size, 1000);
});

test('a symlink or FIFO in place of a log is never followed, opened or cut', async (t) => {
  const dir = tempDir(t);
  const target = path.join(dir, 'elsewhere');
  writeFileSync(target, lines(0, 100));
  const link = path.join(dir, 'output.log');
  symlinkSync(target, link);
  assert.deepEqual(await capLogFile(link, 100), { sizeBytes: 0, rotated: false });
  assert.equal(readFileSync(target, 'utf8'), lines(0, 100), 'the link target is untouched');
  assert.equal(existsSync(rotatedLogPath(link)), false);
  const fifo = path.join(dir, 'fifo.log');
  execFileSync('mkfifo', [fifo]);
  assert.deepEqual(await capLogFile(fifo, 0), { sizeBytes: 0, rotated: false });
  assert.deepEqual(await capLogFile(fifo, 1), { sizeBytes: 0, rotated: false });
});
