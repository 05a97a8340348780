/**
 * Benchmark: EnsureContainer with the image cached vs. `ctr run -d` plus a hand CNI ADD, on the
 * same containerd in the same run.
 *
 *   node --import tsx scripts/bench/ensure.ts [--n 30] [--concurrency 8]
 *
 * - Starts a private test stack (test/harness/stack.ts: containerd, registry, CNI test network,
 *   in-process agent) and pulls the worker image with one Ensure+Destroy warm-up.
 * - Sequential: N rounds of [agent EnsureContainer] and [ip netns add + CNI ADD (the agent's own
 *   CniNetwork class, same conflist) + `ctr run -d --with-ns network:…`], interleaved so that
 *   drift hits both sides alike. Only the start is timed; every teardown runs outside it.
 * - Concurrent: the same at concurrency C (default 8), max(1, round(N/C)) rounds each.
 * - Prints p50/p95 of both and the ratio agent/ctr, and the agent's phase breakdown: the
 *   cold-start histogram (`esb_agent_cold_start_phase_duration_seconds{phase}`) read as exact
 *   per-call values (delta of its _sum around each sequential call, so bucket width does not
 *   matter), the containerd RPCs of each call (timed by wrapping ContainerdClient.unary in this
 *   process), and the CNI timings from the agent's debug log.
 * - Stops the stack and checks that no netns, veth, bridge or shim is left.
 *
 * Network: only 127.0.0.1 (registry, agent) and nothing else; the workers are never called.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { silentLogger } from '../../src/log.js';
import { CniNetwork } from '../../src/cni/network.js';
import { ContainerdClient, type RequestOptions, type UnaryInvoker } from '../../src/runtime/containerd/client.js';
import { deleteContainer, removeSnapshot } from '../../src/runtime/containerd/containers.js';
import { deleteTask, killAndWait } from '../../src/runtime/containerd/tasks.js';
import { CNI_BIN_DIR, leakCount, startStack, type TestStack } from '../../test/harness/stack.js';
import { fmtMs, intFlag, mapLimit, median, percentile, printTable, timeIt, type Cell } from './lib.js';

const N = intFlag(process.argv.slice(2), 'n', 30);
const CONCURRENCY = intFlag(process.argv.slice(2), 'concurrency', 8);
const ROUNDS = Math.max(1, Math.round(N / CONCURRENCY));
const OWNER = 'bench';
const FUNCTION = 'bench';
const PHASE_METRIC = 'esb_agent_cold_start_phase_duration_seconds';
const CMD_TIMEOUT_MS = 30_000;

interface WorkerInfo {
  id: string;
  ip_address: string;
}

// ------------------------------------------------------------------ containerd RPC timing

interface RpcSpan {
  readonly what: string;
  readonly start: number;
  end: number;
}

/** RPC spans of the agent's containerd client, while `rpcRecording` is on. */
const rpcSpans: RpcSpan[] = [];
let rpcRecording = false;

type UnaryFn = <T>(this: ContainerdClient, what: string, invoke: UnaryInvoker<T>, opts?: RequestOptions) => Promise<T>;

/**
 * Wraps ContainerdClient.prototype.unary (every unary containerd call of the in-process agent
 * goes through it) to record when each call starts and ends. Measurement only: the call itself
 * is unchanged. Returns the undo.
 */
function instrumentContainerdClient(): () => void {
  const proto = ContainerdClient.prototype as unknown as { unary: UnaryFn };
  const original = Object.getOwnPropertyDescriptor(ContainerdClient.prototype, 'unary')?.value as UnaryFn;
  proto.unary = function <T>(this: ContainerdClient, what: string, invoke: UnaryInvoker<T>, opts?: RequestOptions): Promise<T> {
    const p = original.call<ContainerdClient, [string, UnaryInvoker<T>, RequestOptions | undefined], Promise<T>>(this, what, invoke, opts);
    if (!rpcRecording) return p;
    const span: RpcSpan = { what, start: performance.now(), end: Number.NaN };
    rpcSpans.push(span);
    const done = (): void => {
      span.end = performance.now();
    };
    // Registered before the caller's own await, so `end` is taken first.
    p.then(done, done);
    return p;
  };
  return () => {
    proto.unary = original;
  };
}

// ------------------------------------------------------------------ helpers

function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: CMD_TIMEOUT_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

function tryRun(file: string, args: readonly string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** Sum of the phase histogram per phase label (seconds). */
async function phaseSums(stack: TestStack): Promise<Map<string, number>> {
  const all = await stack.agent!.metrics.registry.getMetricsAsJSON();
  const m = all.find((x) => x.name === PHASE_METRIC) as
    { values?: { metricName?: string; labels: Record<string, string | number>; value: number }[] } | undefined;
  const out = new Map<string, number>();
  for (const v of m?.values ?? []) {
    if (v.metricName === `${PHASE_METRIC}_sum`) out.set(String(v.labels['phase']), v.value);
  }
  return out;
}

function delta(after: Map<string, number>, before: Map<string, number>, phase: string): number {
  return ((after.get(phase) ?? 0) - (before.get(phase) ?? 0)) * 1000;
}

/** Collects named samples (ms) and summarises them. */
class Samples {
  readonly #m = new Map<string, number[]>();
  add(name: string, ms: number): void {
    if (!Number.isFinite(ms)) return;
    let a = this.#m.get(name);
    if (!a) this.#m.set(name, (a = []));
    a.push(ms);
  }
  get(name: string): number[] {
    return this.#m.get(name) ?? [];
  }
}

// ------------------------------------------------------------------ the agent side

async function agentEnsure(stack: TestStack, image: string): Promise<{ ms: number; id: string; t0: number; t1: number }> {
  const t0 = performance.now();
  const w = await stack.call<WorkerInfo>(
    'EnsureContainer',
    { function_name: FUNCTION, image, env: {}, owner_id: OWNER },
    { deadlineMs: 60_000 },
  );
  const t1 = performance.now();
  return { ms: t1 - t0, id: w.id, t0, t1 };
}

async function agentDestroy(stack: TestStack, id: string): Promise<void> {
  await stack.call('DestroyContainer', { function_name: FUNCTION, container_id: id, owner_id: OWNER }, { deadlineMs: 60_000 });
}

/**
 * Phases of one Ensure that ran alongside others: only the calls named by the worker id can be
 * told apart (the histogram cannot be split per call), plus the CNI ADD time from the log.
 */
function breakDownConcurrent(
  s: Samples,
  stack: TestStack,
  call: { ms: number; id: string; t0: number; t1: number },
  spans: readonly RpcSpan[],
  logFrom: number,
): void {
  const find = (prefix: string): RpcSpan | undefined => spans.find((x) => x.what === prefix);
  const prepare = find(`prepare snapshot ${call.id}`);
  const container = find(`create container ${call.id}`);
  const taskCreate = find(`create task ${call.id}`);
  const taskStart = find(`start task ${call.id}`);
  if (!prepare || !container || !taskCreate || !taskStart) throw new Error(`missing containerd calls for ${call.id}`);
  const dur = (x: RpcSpan): number => x.end - x.start;
  s.add('total', call.ms);
  s.add('request → snapshot prepared (gRPC, image check, lease, snapshot)', prepare.end - call.t0);
  s.add('netns + files + spec (CNI ADD runs on)', container.start - prepare.end);
  const add = stack.logs.lines.slice(logFrom).find((l) => l['containerId'] === call.id && l['msg'] === 'CNI ADD');
  if (typeof add?.['ms'] === 'number') s.add('  CNI ADD (log)', add['ms']);
  s.add('container create', dur(container));
  s.add('task create', dur(taskCreate));
  s.add('task start', dur(taskStart));
  s.add('task started → reply', call.t1 - taskStart.end);
}

/** Sorts the spans of one sequential Ensure into phases (ms) and adds them to `s`. */
function breakDown(
  s: Samples,
  stack: TestStack,
  call: { ms: number; id: string; t0: number; t1: number },
  spans: readonly RpcSpan[],
  hist: Record<'snapshot' | 'netns' | 'network' | 'create' | 'task_create' | 'start', number>,
  logFrom: number,
): void {
  const find = (prefix: string): RpcSpan | undefined =>
    spans.find((x) => x.what.startsWith(prefix) && x.start >= call.t0 && x.start <= call.t1);
  const getImage = find('get image ');
  const lease = find('create lease ');
  const prepare = find(`prepare snapshot ${call.id}`);
  const container = find(`create container ${call.id}`);
  const taskCreate = find(`create task ${call.id}`);
  const taskStart = find(`start task ${call.id}`);
  const leaseDel = find('delete lease ');
  if (!getImage || !lease || !prepare || !container || !taskCreate || !taskStart || !leaseDel) {
    throw new Error(`missing containerd calls for ${call.id}: ${spans.map((x) => x.what).join(', ')}`);
  }
  const dur = (x: RpcSpan): number => x.end - x.start;
  s.add('total', call.ms);
  s.add('gRPC in + validate', getImage.start - call.t0);
  s.add('image check (cached)', lease.start - getImage.start);
  s.add('lease create', dur(lease));
  s.add('snapshot prepare', dur(prepare));
  s.add('netns create (+ user lookup)', hist.netns);
  // files → container create → task create, with CNI ADD starting once task create is sent; the block ends when both did.
  const blockStart = prepare.end + hist.netns;
  s.add('files + container create → [task create ∥ CNI ADD] + hosts entry', taskStart.start - blockStart);
  s.add('  CNI ADD (hist network)', hist.network);
  s.add('  files + spec', container.start - blockStart);
  s.add('  container create', dur(container));
  s.add('  task create', dur(taskCreate));
  s.add('task start (∥ IP label)', dur(taskStart));
  s.add('lease delete', dur(leaseDel));
  s.add('reply (gRPC out)', call.t1 - leaseDel.end);
  s.add('gaps between steps', leaseDel.start - taskStart.end + (prepare.start - lease.end));
  for (const [k, v] of Object.entries(hist)) s.add(`hist: ${k}`, v);
  // CNI timings from the agent's debug log.
  const lines = stack.logs.lines.slice(logFrom).filter((l) => l['containerId'] === call.id);
  const add = lines.find((l) => l['msg'] === 'CNI ADD');
  if (typeof add?.['ms'] === 'number') s.add('    CNI ADD (log)', add['ms']);
  for (const l of lines) {
    if (l['msg'] === 'CNI plugin ran' && l['command'] === 'ADD' && typeof l['ms'] === 'number')
      s.add(`      plugin ${String(l['plugin'])} ADD`, l['ms']);
  }
  // Image-check RPCs.
  const stat = find('stat snapshot ');
  s.add('  images.Get', dur(getImage));
  if (stat) s.add('  snapshots.Stat', dur(stat));
}

// ------------------------------------------------------------------ the ctr side

interface CtrEnv {
  readonly stack: TestStack;
  readonly cni: CniNetwork;
  readonly image: string;
  readonly logDir: string;
}

interface CtrRun {
  readonly id: string;
  readonly netns: string;
  readonly log: string;
  created: { netns: boolean; cni: boolean; container: boolean };
}

/** Created ctr-side objects not yet cleaned up (for an abort). */
const liveCtr = new Set<CtrRun>();
let ctrSeq = 0;

/**
 * ip netns add + CNI ADD + `ctr run -d --with-ns network:…`, timed together. `seccomp` adds
 * ctr's `--seccomp` (containerd's default profile, the one the agent applies to every worker).
 */
async function ctrStart(env: CtrEnv, s: Samples | undefined, seccomp = false): Promise<{ ms: number; run: CtrRun }> {
  const id = `${env.stack.idPrefix}ctr${(ctrSeq++).toString().padStart(4, '0')}`;
  const r: CtrRun = {
    id,
    netns: `/run/netns/${id}`,
    log: path.join(env.logDir, `${id}.log`),
    created: { netns: false, cni: false, container: false },
  };
  liveCtr.add(r);
  const sock = env.stack.ctd.socket;
  const { ms } = await timeIt(async () => {
    const a = await timeIt(() => run('ip', ['netns', 'add', id]));
    r.created.netns = true;
    const b = await timeIt(() => env.cni.add({ containerId: id, netns: r.netns }));
    r.created.cni = true;
    r.created.container = true; // a failed `ctr run` may still leave a record: clean up either way
    const c = await timeIt(() =>
      run('ctr', [
        '--address',
        sock,
        '--namespace',
        env.stack.namespace,
        'run',
        '-d',
        '--snapshotter',
        'overlayfs',
        ...(seccomp ? ['--seccomp'] : []),
        '--log-uri',
        `file://${r.log}`,
        '--with-ns',
        `network:${r.netns}`,
        env.image,
        id,
      ]),
    );
    s?.add('ip netns add', a.ms);
    s?.add('CNI ADD (CniNetwork.add)', b.ms);
    s?.add('ctr run -d', c.ms);
  });
  return { ms, run: r };
}

async function ctrCleanup(env: CtrEnv, r: CtrRun): Promise<void> {
  const c = env.stack.containerd;
  const errs: unknown[] = [];
  const step = async (fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      errs.push(err);
    }
  };
  if (r.created.container) {
    await step(async () => {
      if (!(await killAndWait(c, r.id, 10_000, {}))) throw new Error(`ctr task ${r.id} did not stop`);
    });
    await step(() => deleteTask(c, r.id, {}));
    await step(() => deleteContainer(c, r.id, {}));
    await step(() => removeSnapshot(c, 'overlayfs', r.id, {}));
  }
  if (r.created.cni) await step(() => env.cni.del({ containerId: r.id, netns: r.netns }));
  if (r.created.netns) await step(() => run('ip', ['netns', 'del', r.id]));
  rmSync(r.log, { force: true });
  if (errs.length > 0) throw new AggregateError(errs, `cleanup of ${r.id} failed`);
  liveCtr.delete(r);
}

// ------------------------------------------------------------------ main

function summaryRow(name: string, values: readonly number[]): Cell[] {
  return [name, String(values.length), median(values), percentile(values, 95), Math.min(...values), Math.max(...values)];
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

async function main(): Promise<void> {
  const tStart = performance.now();
  const log = (msg: string): void => {
    process.stderr.write(`[${((performance.now() - tStart) / 1000).toFixed(1)}s] ${msg}\n`);
  };
  const undoInstrument = instrumentContainerdClient();
  log('starting stack (containerd, registry, CNI network, agent)');
  const stack = await startStack();
  let ctrEnv: CtrEnv | undefined;
  let stopping = false;
  const stopAll = async (interrupted = false): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (ctrEnv) {
      for (const r of [...liveCtr])
        await ctrCleanup(ctrEnv, r).catch((err: unknown) => {
          console.error(`cleanup of ${r.id} failed:`, err);
        });
    }
    if (!interrupted) {
      // Every worker was destroyed: anything the agent still holds is an agent leak (the stack removes it anyway).
      const leaks = await stack.leaks().catch(() => undefined);
      if (leaks && leakCount(leaks) > 0) console.error(`AGENT LEAK after DestroyContainer: ${JSON.stringify(leaks)}`);
    }
    await stack.stop();
    undoInstrument();
  };
  const onSignal = (): void => {
    log('interrupted; cleaning up');
    void stopAll(true).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const image = stack.images.worker;
    // Warm-up: pulls and unpacks the worker image into the agent's namespace.
    const before0 = await phaseSums(stack);
    const warm = await agentEnsure(stack, image);
    const after0 = await phaseSums(stack);
    await agentDestroy(stack, warm.id);
    const warmLine = `warm-up Ensure (image not cached): ${fmtMs(warm.ms)} ms, of which pull ${fmtMs(delta(after0, before0, 'pull'))} ms, unpack ${fmtMs(delta(after0, before0, 'unpack'))} ms (histogram phases pull/unpack)`;
    log(warmLine);

    // ctr uses the image record the agent made, in the agent's namespace.
    const images = await stack.containerd.call('images', 'List', { filters: [] });
    const ctrImage = images.images.map((i) => i.name).find((n) => n.includes('esb-test/worker'));
    if (ctrImage === undefined)
      throw new Error(`worker image not found in namespace ${stack.namespace}: ${images.images.map((i) => i.name).join(', ')}`);
    const logDir = path.join(stack.tmp, 'bench-ctr-logs');
    mkdirSync(logDir, { recursive: true });
    const cni = new CniNetwork({
      confFile: stack.confFile,
      binDirs: [CNI_BIN_DIR],
      cacheDir: path.join(stack.tmp, 'bench-cni-cache'),
      log: silentLogger(),
    });
    await cni.load();
    ctrEnv = { stack, cni, image: ctrImage, logDir };
    const env = ctrEnv;
    {
      const w = await ctrStart(env, undefined);
      await ctrCleanup(env, w.run);
      log(`warm-up ctr run ${fmtMs(w.ms)} ms`);
    }

    // Sequential, interleaved.
    const agentSeq: number[] = [];
    const ctrSeq1: number[] = [];
    const phases = new Samples();
    const ctrPhases = new Samples();
    const ctrSeccomp: number[] = [];
    const ctrSeccompPhases = new Samples();
    log(`sequential: ${N} × (agent Ensure, ctr run + CNI ADD, ctr run --seccomp + CNI ADD)`);
    for (let i = 0; i < N; i++) {
      const h0 = await phaseSums(stack);
      const logFrom = stack.logs.lines.length;
      rpcSpans.length = 0;
      rpcRecording = true;
      let call: Awaited<ReturnType<typeof agentEnsure>>;
      try {
        call = await agentEnsure(stack, image);
      } finally {
        rpcRecording = false;
      }
      const h1 = await phaseSums(stack);
      agentSeq.push(call.ms);
      breakDown(
        phases,
        stack,
        call,
        rpcSpans,
        {
          snapshot: delta(h1, h0, 'snapshot'),
          netns: delta(h1, h0, 'netns'),
          network: delta(h1, h0, 'network'),
          create: delta(h1, h0, 'create'),
          task_create: delta(h1, h0, 'task_create'),
          start: delta(h1, h0, 'start'),
        },
        logFrom,
      );
      await agentDestroy(stack, call.id);

      const c = await ctrStart(env, ctrPhases);
      ctrSeq1.push(c.ms);
      await ctrCleanup(env, c.run);

      const cs = await ctrStart(env, ctrSeccompPhases, true);
      ctrSeccomp.push(cs.ms);
      await ctrCleanup(env, cs.run);
    }

    // Concurrent.
    const agentConc: number[] = [];
    const ctrConc: number[] = [];
    const agentWall: number[] = [];
    const ctrWall: number[] = [];
    const concPhases = new Samples();
    const ctrConcPhases = new Samples();
    log(`concurrency ${CONCURRENCY}: ${ROUNDS} round(s) each`);
    for (let r = 0; r < ROUNDS; r++) {
      const logFrom = stack.logs.lines.length;
      rpcSpans.length = 0;
      rpcRecording = true;
      let a: Awaited<ReturnType<typeof timeIt<Awaited<ReturnType<typeof agentEnsure>>[]>>>;
      try {
        a = await timeIt(() => mapLimit(CONCURRENCY, CONCURRENCY, () => agentEnsure(stack, image)));
      } finally {
        rpcRecording = false;
      }
      agentWall.push(a.ms);
      for (const x of a.value) {
        agentConc.push(x.ms);
        breakDownConcurrent(concPhases, stack, x, rpcSpans, logFrom);
      }
      await Promise.all(a.value.map((x) => agentDestroy(stack, x.id)));

      const c = await timeIt(() => mapLimit(CONCURRENCY, CONCURRENCY, () => ctrStart(env, ctrConcPhases)));
      ctrWall.push(c.ms);
      for (const x of c.value) ctrConc.push(x.ms);
      await Promise.all(c.value.map((x) => ctrCleanup(env, x.run)));
    }

    // ------------------------------------------------------------ report
    const ctd = tryRun('containerd', ['--version']).trim().split(' ').slice(2).join(' ');
    const runc = tryRun('runc', ['--version']).split('\n')[0] ?? '';
    console.log('');
    console.log(`# EnsureContainer vs ctr run -d + hand CNI ADD (image cached)`);
    console.log(`host: ${os.cpus().length} CPU, kernel ${os.release()}, containerd ${ctd}, ${runc}, node ${process.version}`);
    console.log(`image: ${ctrImage}; N=${N} sequential (interleaved), concurrency ${CONCURRENCY} × ${ROUNDS} round(s); times in ms`);
    console.log(warmLine);
    console.log('');
    const aP50 = median(agentSeq);
    const aP95 = percentile(agentSeq, 95);
    const cP50 = median(ctrSeq1);
    const cP95 = percentile(ctrSeq1, 95);
    const acP50 = median(agentConc);
    const acP95 = percentile(agentConc, 95);
    const ccP50 = median(ctrConc);
    const ccP95 = percentile(ctrConc, 95);
    printTable([
      ['', 'agent p50', 'agent p95', 'ctr+CNI p50', 'ctr+CNI p95', 'ratio p50', 'ratio p95'],
      ['sequential (c=1)', aP50, aP95, cP50, cP95, ratio(aP50, cP50), ratio(aP95, cP95)],
      [`concurrency ${CONCURRENCY}`, acP50, acP95, ccP50, ccP95, ratio(acP50, ccP50), ratio(acP95, ccP95)],
    ]);
    console.log(`target: ratio p50 ≤ 0.80× — ${aP50 / cP50 <= 0.8 ? 'MET' : 'NOT MET'} (sequential)`);
    const sP50 = median(ctrSeccomp);
    const sP95 = percentile(ctrSeccomp, 95);
    console.log(
      `like for like (ctr run --seccomp: containerd's default profile, as the agent applies): ctr+CNI p50 ${fmtMs(sP50)} p95 ${fmtMs(sP95)} → ratio p50 ${ratio(aP50, sP50)}, p95 ${ratio(aP95, sP95)}`,
    );
    console.log(
      `concurrency ${CONCURRENCY} round wall time p50: agent ${fmtMs(median(agentWall))} ms (${((CONCURRENCY * 1000) / median(agentWall)).toFixed(1)} starts/s), ctr ${fmtMs(median(ctrWall))} ms (${((CONCURRENCY * 1000) / median(ctrWall)).toFixed(1)} starts/s)`,
    );

    console.log('');
    console.log('## agent phases, sequential (per call; containerd RPCs timed in-process, histogram as exact per-call _sum deltas)');
    const order = [
      'gRPC in + validate',
      'image check (cached)',
      '  images.Get',
      '  snapshots.Stat',
      'lease create',
      'snapshot prepare',
      'netns create (+ user lookup)',
      'files + container create → [task create ∥ CNI ADD] + hosts entry',
      '  CNI ADD (hist network)',
      '    CNI ADD (log)',
      '      plugin loopback ADD',
      '      plugin bridge ADD',
      '      plugin portmap ADD',
      '  files + spec',
      '  container create',
      '  task create',
      'task start (∥ IP label)',
      'lease delete',
      'reply (gRPC out)',
      'gaps between steps',
      'total',
    ];
    const rows: Cell[][] = [['phase', 'n', 'p50', 'p95', 'min', 'max', '% of p50 total']];
    for (const name of order) {
      const v = phases.get(name);
      if (v.length === 0) continue;
      rows.push([...summaryRow(name, v), name.startsWith(' ') || name === 'total' ? '' : `${((median(v) / aP50) * 100).toFixed(0)}%`]);
    }
    printTable(rows);
    console.log('top-level rows add up to the total (medians need not); indented rows are parts of the row above.');
    console.log('');
    console.log('## cold-start histogram phases (esb_agent_cold_start_phase_duration_seconds), sequential');
    printTable([
      ['phase', 'n', 'p50', 'p95', 'min', 'max'],
      summaryRow('snapshot (lease + id + snapshot prepare)', phases.get('hist: snapshot')),
      summaryRow('netns (netns create ∥ user lookup)', phases.get('hist: netns')),
      summaryRow('network (CNI ADD, alongside task_create)', phases.get('hist: network')),
      summaryRow('create (worker files + spec + container record)', phases.get('hist: create')),
      summaryRow('task_create (shim + runc create)', phases.get('hist: task_create')),
      summaryRow('start (hosts entry + IP label ∥ task start)', phases.get('hist: start')),
    ]);
    console.log('');
    console.log(`## agent phases at concurrency ${CONCURRENCY} (per call)`);
    const crows: Cell[][] = [['phase', 'n', 'p50', 'p95', 'min', 'max']];
    for (const name of [
      'request → snapshot prepared (gRPC, image check, lease, snapshot)',
      'netns + files + spec (CNI ADD runs on)',
      '  CNI ADD (log)',
      'container create',
      'task create',
      'task start',
      'task started → reply',
      'total',
    ]) {
      const v = concPhases.get(name);
      if (v.length > 0) crows.push(summaryRow(name, v));
    }
    printTable(crows);
    console.log('');
    console.log('## ctr + CNI side, sequential');
    printTable([
      ['step', 'n', 'p50', 'p95', 'min', 'max'],
      summaryRow('ip netns add', ctrPhases.get('ip netns add')),
      summaryRow('CNI ADD (CniNetwork.add)', ctrPhases.get('CNI ADD (CniNetwork.add)')),
      summaryRow('ctr run -d', ctrPhases.get('ctr run -d')),
      summaryRow('total', ctrSeq1),
      summaryRow('ctr run -d --seccomp', ctrSeccompPhases.get('ctr run -d')),
      summaryRow('total with --seccomp', ctrSeccomp),
    ]);
    console.log('');
    console.log(`## ctr + CNI side, concurrency ${CONCURRENCY}`);
    printTable([
      ['step', 'n', 'p50', 'p95', 'min', 'max'],
      summaryRow('ip netns add', ctrConcPhases.get('ip netns add')),
      summaryRow('CNI ADD (CniNetwork.add)', ctrConcPhases.get('CNI ADD (CniNetwork.add)')),
      summaryRow('ctr run -d', ctrConcPhases.get('ctr run -d')),
      summaryRow('total', ctrConc),
    ]);
    console.log('');
    log('stopping stack');
  } finally {
    await stopAll();
  }

  // Nothing may be left behind.
  const left: string[] = [];
  const netns = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(stack.idPrefix)) : [];
  if (netns.length > 0) left.push(`netns: ${netns.join(', ')}`);
  if (tryRun('ip', ['link', 'show', stack.bridge]) !== '') left.push(`bridge ${stack.bridge}`);
  const shims = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(stack.ctd.socket);
      } catch {
        return false;
      }
    });
  if (shims.length > 0) left.push(`processes: ${shims.join(', ')}`);
  if (existsSync(stack.tmp) || existsSync(stack.ctd.dir)) left.push('temp dirs');
  console.log(left.length === 0 ? 'leftovers: none (netns, bridge, veths, shims, temp dirs checked)' : `LEFTOVERS: ${left.join('; ')}`);
  console.log(`bench wall time: ${((performance.now() - tStart) / 1000).toFixed(1)} s`);
  if (left.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
