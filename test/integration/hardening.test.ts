/**
 * Issue 6 §5, worker hardening, on real containerd + runc + CNI: what a worker can see and do
 * from the inside (processes, files, capabilities, no_new_privs, seccomp, masked and read-only
 * /proc paths, namespaces), a fork bomb held by the pids limit and a memory hog killed by the
 * memory limit while the agent and another worker keep answering, and the per-worker log cap
 * (AGENT_WORKER_LOG_MAX_BYTES) rotating a log under a worker that keeps writing.
 *
 * The test worker's `exec` action runs commands inside the worker (busybox is in the image).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { DEFAULT_CAPABILITIES, WORKER_PIDS_LIMIT } from '../../src/worker/limits.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';
import type { WorkerReply as Worker } from '../helpers/replies.js';
import { eventually } from '../harness/process.js';

const OWNER = 'hardening';
const MIB = 1024 * 1024;
const LOG_CAP_BYTES = 256 * 1024;

/** Linux capability numbers (linux/capability.h) of the capabilities containerd grants. */
const CAP_NUMBERS: Readonly<Record<string, number>> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_RAW: 13,
  CAP_SYS_CHROOT: 18,
  CAP_MKNOD: 27,
  CAP_AUDIT_WRITE: 29,
  CAP_SETFCAP: 31,
};

interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  pid?: number;
  spawnError?: string;
}
interface Metrics {
  state: string;
  memory_max: string;
  oom_events: string;
  exit_code: number;
}

/** A cgroup file of a worker: v1 (`/sys/fs/cgroup/<controller>/<ns>/<id>/…`) or v2. */
function cgroupFile(stack: TestStack, controller: string, id: string, file: string): string {
  const v1 = path.join('/sys/fs/cgroup', controller, stack.namespace, id, file);
  return existsSync(path.join('/sys/fs/cgroup', controller)) ? v1 : path.join('/sys/fs/cgroup', stack.namespace, id, file);
}

describe('worker hardening on real containerd and runc', () => {
  let stack: TestStack;

  before(async () => {
    stack = await startStack({ env: { AGENT_WORKER_LOG_MAX_BYTES: String(LOG_CAP_BYTES) } });
  });
  after(async () => {
    await stack.stop();
  });

  /** Ensures a worker and destroys it after the test (also when it fails). */
  async function worker(t: TestContext, fn: string, env: Record<string, string> = {}): Promise<Worker> {
    const w = await stack.call<Worker>('EnsureContainer', { function_name: fn, image: stack.images.worker, env, owner_id: OWNER });
    t.after(() => stack.call('DestroyContainer', { container_id: w.id, owner_id: OWNER }));
    return w;
  }

  async function invoke<T>(id: string, payload: object, timeoutMs = 30_000): Promise<T> {
    const r = await stack.call<{ status_code: number; body: Buffer }>(
      'InvokeWorker',
      { container_id: id, owner_id: OWNER, path: '', payload: Buffer.from(JSON.stringify(payload)), headers: {}, timeout_ms: timeoutMs },
      { deadlineMs: timeoutMs + 5000 },
    );
    assert.equal(r.status_code, 200, r.body.toString());
    return JSON.parse(r.body.toString('utf8')) as T;
  }

  const exec = (id: string, argv: string[]): Promise<ExecResult> => invoke<ExecResult>(id, { action: 'exec', argv });
  const sh = (id: string, script: string): Promise<ExecResult> => exec(id, ['/bin/sh', '-c', script]);
  const metrics = async (id: string): Promise<Metrics> =>
    (await stack.call<{ metrics: Metrics }>('GetContainerMetrics', { container_id: id, owner_id: OWNER })).metrics;

  /** The agent answers List, the witness worker answers an invocation, and the host can fork. */
  async function responsive(witness: Worker): Promise<void> {
    const list = await stack.call<{ containers: unknown[] }>('ListContainers', { owner_id: OWNER }, { deadlineMs: 10_000 });
    assert.ok(list.containers.length >= 1);
    const echo = await invoke<{ action: string }>(witness.id, { action: 'echo' }, 20_000);
    assert.equal(echo.action, 'echo');
    assert.equal(execFileSync('/bin/echo', ['host ok'], { encoding: 'utf8', timeout: 10_000 }).trim(), 'host ok');
  }

  test("a worker sees only its own processes, none of the host's files, and runs with minimal privileges", async (t) => {
    const w = await worker(t, 'isolation');

    // Processes: its own pid namespace, where pid 1 is the worker itself.
    const procs = await sh(w.id, 'for p in /proc/[0-9]*; do printf "%s %s\\n" "${p#/proc/}" "$(tr "\\0" " " < "$p/cmdline")"; done');
    assert.equal(procs.code, 0, procs.stderr);
    const lines = procs.stdout.trim().split('\n');
    t.diagnostic(`processes inside the worker: ${JSON.stringify(lines)}`);
    assert.match(
      lines.find((l) => l.startsWith('1 ')) ?? '',
      /^1 \/usr\/bin\/node \/worker\/worker\.mjs/,
      "pid 1 is the worker, not the host's init",
    );
    assert.ok(lines.length <= 6, `only the worker's own few processes are visible: ${lines.length}`);
    assert.ok(!lines.some((l) => /systemd|containerd|esb-agent|tsx|--test/.test(l)), 'no host or agent process is visible');

    // Files: the agent's state dir, the stack and the repository are not in the worker's root.
    for (const hostPath of [stack.stateDir, stack.tmp, path.resolve('package.json'), stack.ctd.socket]) {
      assert.ok(existsSync(hostPath), `${hostPath} exists on the host`);
      const r = await exec(w.id, ['/bin/ls', '-d', hostPath]);
      assert.notEqual(r.code, 0, `${hostPath} is visible inside the worker`);
    }

    // Namespaces: none shared with the host.
    for (const ns of ['pid', 'mnt', 'net', 'uts', 'ipc']) {
      const inside = (await exec(w.id, ['/bin/readlink', `/proc/self/ns/${ns}`])).stdout.trim();
      assert.match(inside, new RegExp(`^${ns}:\\[\\d+\\]$`));
      assert.notEqual(inside, readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace is the host's`);
    }

    // Capabilities, no_new_privs and seccomp of the worker process (pid 1) and of a child.
    const expectedCaps = DEFAULT_CAPABILITIES.reduce((mask, c) => mask | (1n << BigInt(CAP_NUMBERS[c] ?? 63)), 0n);
    // containerd's 14 defaults (0xa80425fb) less CAP_NET_RAW (bit 13).
    assert.equal(expectedCaps, 0xa80405fbn, 'the 13 worker capabilities');
    assert.equal(expectedCaps & (1n << 13n), 0n, 'no CAP_NET_RAW');
    for (const file of ['/proc/1/status', '/proc/self/status']) {
      const status = (await exec(w.id, ['/bin/cat', file])).stdout;
      const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)$`, 'm').exec(status)?.[1] ?? `(no ${name})`;
      for (const set of ['CapEff', 'CapPrm', 'CapBnd']) assert.equal(BigInt(`0x${field(set)}`), expectedCaps, `${file} ${set}`);
      assert.equal(BigInt(`0x${field('CapAmb')}`), 0n, `${file} CapAmb`);
      assert.equal(field('NoNewPrivs'), '1', `${file} NoNewPrivs`);
      assert.equal(field('Seccomp'), '2', `${file} Seccomp (2 = filter)`);
    }
    // Without CAP_SYS_ADMIN (and with seccomp) mounting fails.
    const mount = await exec(w.id, ['/bin/mount', '-t', 'tmpfs', 'none', '/mnt']);
    assert.notEqual(mount.code, 0, 'mount must fail inside a worker');

    // Masked paths read as empty (bind-mounted /dev/null or an empty read-only tmpfs).
    // (Only files this kernel has; a host file that is readable and non-empty proves the mask.)
    const maskedFiles = ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug'].filter((f) => existsSync(f));
    assert.ok(maskedFiles.includes('/proc/timer_list'), 'the host has a masked file to check');
    assert.ok(readFileSync('/proc/timer_list', 'utf8').length > 0, 'on the host /proc/timer_list has content');
    for (const file of maskedFiles) {
      const r = await sh(w.id, `wc -c < ${file}`);
      assert.equal(r.code, 0, `${file}: ${r.stderr}`);
      assert.ok(r.stdout.trim() === '' || r.stdout.trim() === '0', `${file} is readable inside the worker (${r.stdout.trim()} bytes)`);
    }
    for (const dir of ['/proc/acpi', '/proc/scsi', '/sys/firmware'].filter((d) => existsSync(d))) {
      const r = await sh(w.id, `ls -A ${dir}`);
      assert.equal(r.stdout.trim(), '', `${dir} is not masked: ${r.stdout.trim()}`);
    }
    // Read-only paths refuse writes, even as root with the default capabilities.
    // (Only files this kernel has: a VM kernel may lack /proc/sysrq-trigger.)
    for (const file of ['/proc/sys/vm/drop_caches', '/proc/sysrq-trigger', '/proc/sys/kernel/hostname'].filter((f) => existsSync(f))) {
      const r = await sh(w.id, `echo 1 > ${file}`);
      assert.notEqual(r.code, 0, `writing ${file} succeeded inside the worker`);
      assert.match(r.stderr, /read-only|permission denied/i, `${file}: ${r.stderr}`);
    }
    const sysWrite = await sh(w.id, 'echo x > /sys/kernel/uevent_helper');
    assert.notEqual(sysWrite.code, 0, '/sys is read-only');
  });

  test('a fork bomb is held by the pids limit; the agent, another worker and the host keep working', async (t) => {
    const witness = await worker(t, 'witness');
    const bomb = await worker(t, 'forkbomb');
    const pidsMax = cgroupFile(stack, 'pids', bomb.id, 'pids.max');
    assert.equal(readFileSync(pidsMax, 'utf8').trim(), String(WORKER_PIDS_LIMIT));
    const started = await invoke<ExecResult>(bomb.id, { action: 'exec', argv: ['/bin/sh', '-c', 'b() { b | b & }; b'], background: true });
    assert.ok((started.pid ?? 0) > 0, JSON.stringify(started));

    const events = cgroupFile(stack, 'pids', bomb.id, 'pids.events');
    let peak = 0;
    await eventually(
      'the fork bomb to hit the pids limit',
      () => {
        const current = Number(readFileSync(cgroupFile(stack, 'pids', bomb.id, 'pids.current'), 'utf8'));
        peak = Math.max(peak, current);
        const refused = Number(/^max (\d+)/m.exec(readFileSync(events, 'utf8'))?.[1] ?? 0);
        return Promise.resolve(refused > 0 ? refused : undefined);
      },
      60_000,
    );
    assert.ok(peak <= WORKER_PIDS_LIMIT, `pids.current reached ${peak}, over the limit`);
    t.diagnostic(`fork bomb: peak pids.current ${peak} of ${WORKER_PIDS_LIMIT}`);
    await responsive(witness);
    assert.equal((await stack.call<{ success: boolean }>('DestroyContainer', { container_id: bomb.id, owner_id: OWNER })).success, true);
    assert.ok(!existsSync(path.dirname(pidsMax)), "the bomb's cgroup is gone");
    await responsive(witness);
  });

  test('a memory hog is OOM-killed at the requested limit; the agent and another worker keep working', async (t) => {
    const witness = await worker(t, 'witness');
    const hog = await worker(t, 'memhog', { AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '96' });
    assert.equal((await metrics(hog.id)).memory_max, String(96 * MIB), 'memory limit == request');
    const hogging = stack
      .call('InvokeWorker', {
        container_id: hog.id,
        owner_id: OWNER,
        path: '',
        payload: Buffer.from(JSON.stringify({ action: 'oom', limitMb: 4096 })),
        headers: {},
        timeout_ms: 60_000,
      })
      .then(
        (r) => `answered ${JSON.stringify(r).slice(0, 200)}`,
        (err: unknown) => `failed: ${(err as Error).message}`,
      );
    // While it allocates, and after the kill, the rest keeps answering.
    await responsive(witness);
    const m = await eventually(
      'the hog to be OOM-killed',
      async () => {
        const x = await metrics(hog.id);
        return x.state === 'STOPPED' && BigInt(x.oom_events) >= 1n ? x : undefined;
      },
      60_000,
    );
    const outcome = await hogging;
    t.diagnostic(`hog invoke ${outcome}`);
    assert.ok(!outcome.includes('"killed":false'), 'the hog allocated 4 GiB: the limit did not hold');
    assert.equal(m.exit_code, 137);
    await responsive(witness);
  });

  test('a worker log over AGENT_WORKER_LOG_MAX_BYTES is rotated while the worker keeps writing', async (t) => {
    const w = await worker(t, 'chatty');
    const log = path.join(stack.stateDir, 'workers', w.id, 'output.log');
    const rotated = `${log}.1`;
    const rotations = async (): Promise<number> => (await stack.agent!.metrics.workerLogRotations.get()).values[0]?.value ?? 0;
    const before = await rotations();
    await invoke(w.id, { action: 'log', n: 4 * LOG_CAP_BYTES });
    await eventually('a rotation', async () => ((await rotations()) > before && existsSync(rotated) ? true : undefined), 30_000);
    const kept = statSync(rotated).size;
    assert.ok(kept >= LOG_CAP_BYTES && kept <= LOG_CAP_BYTES + 64 * 1024, `.1 keeps about the cap: ${kept}`);
    assert.ok(readFileSync(rotated, 'utf8').includes('x'.repeat(99)), "the worker's output is in the rotated copy");
    // The shim appends: after the truncation the live file grows from 0 (no sparse hole).
    await invoke(w.id, { action: 'log', n: 10_000 });
    // The shim copies the worker's stdout to the file on its own schedule: the invoke's answer
    // can come before the last lines are written.
    await eventually(
      'new output in the live log',
      () => Promise.resolve(readFileSync(log, 'utf8').includes('x'.repeat(99)) ? true : undefined),
      10_000,
    );
    const live = statSync(log);
    assert.ok(live.size < LOG_CAP_BYTES, `live log ${live.size} bytes after the rotation`);
    assert.ok(live.blocks * 512 <= live.size + 64 * 1024, 'the live log is not a sparse file');
    assert.ok(live.size + statSync(rotated).size <= 2 * LOG_CAP_BYTES + 64 * 1024, 'disk use stays near 2× the cap');
    assert.ok(
      stack.logs.lines.some((l) => l['msg'] === 'worker log over its size cap; rotated' && l['id'] === w.id),
      'each rotation is logged',
    );
  });

  test('afterwards nothing is left', async () => {
    const leaks = await stack.leaks();
    assert.equal(leakCount(leaks), 0, JSON.stringify(leaks));
  });
});
