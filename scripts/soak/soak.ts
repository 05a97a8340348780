/**
 * Soak: N EnsureContainer → InvokeWorker → DestroyContainer cycles against an agent running as
 * its own process, watching whether its resources come back (issue 6).
 *
 *   node --import tsx scripts/soak/soak.ts [--cycles 1000] [--concurrency 4] [--warmup 20]
 *       [--rss-growth-mb 40] [--fd-slack 8] [--handle-slack 8]
 *
 * - Starts a private test stack (test/harness/stack.ts: containerd, registry, CNI test network)
 *   and the agent as a child process (scripts/soak/agent-with-gc.ts: the agent plus a SIGUSR2 →
 *   full GC hook; plaintext, ephemeral ports), so the figures are the agent's alone.
 * - Samples the agent's RSS and open fds from /proc/<pid>/status and /proc/<pid>/fd, and its V8
 *   heap and active handles from its own /metrics (`nodejs_heap_size_used_bytes`,
 *   `nodejs_active_handles_total`): at start, after the warm-up, every 100 cycles and at the end
 *   (after a few idle seconds), each right after a full GC.
 * - Verdict: RSS, fds and handles at the end are back near the warm-up level (thresholds as
 *   flags), every cycle succeeded, and the harness finds zero leaked objects (containers, tasks,
 *   snapshots, leases, netns, veths, IPs, CNI cache entries, worker dirs). Exit 0 on PASS, 1 on
 *   FAIL.
 *
 * Network: 127.0.0.1 (agent, registry) and the workers this script creates on its test bridge.
 * Not part of `npm test`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { agentClient, unaryCall, type AgentServiceClient } from '../../test/helpers/grpc.js';
import { leakCount, startStack, type TestStack } from '../../test/harness/stack.js';
import { intFlag, mapLimit, printTable, summarize, type Cell } from '../bench/lib.js';

const argv = process.argv.slice(2);
const CYCLES = intFlag(argv, 'cycles', 1000);
const CONCURRENCY = intFlag(argv, 'concurrency', 4);
const WARMUP = Math.min(intFlag(argv, 'warmup', 20), CYCLES);
const RSS_GROWTH_MB = intFlag(argv, 'rss-growth-mb', 40);
const FD_SLACK = intFlag(argv, 'fd-slack', 8);
const HANDLE_SLACK = intFlag(argv, 'handle-slack', 8);
const SAMPLE_EVERY = 100;
const OWNER = 'soak';
const CALL_DEADLINE_MS = 120_000;
/** Idle time before the final sample: keep-alive sockets and timers of the last cycles settle. */
const SETTLE_MS = 5_000;
const MIB = 1024 * 1024;

interface Sample {
  readonly label: string;
  readonly cycles: number;
  readonly rssBytes: number;
  readonly fds: number;
  readonly heapUsedBytes: number;
  readonly handles: number;
}

/** Starts the agent as a child; resolves with it and its ports once it logs that it listens. */
async function startChildAgent(stack: TestStack): Promise<{ child: ChildProcess; grpcPort: number; metricsPort: number }> {
  const child = spawn(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', path.join(PROJECT_ROOT, 'scripts', 'soak', 'agent-with-gc.ts')],
    {
      cwd: PROJECT_ROOT,
      env: { ...stack.env, AGENT_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const lines = createInterface({ input: child.stdout });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error('the agent did not start within 30 s'));
    }, 30_000);
    child.once('exit', (code) => {
      reject(new Error(`the agent exited with ${String(code)} during start-up`));
    });
    // Keep reading: a full stdout pipe would block the agent.
    lines.on('line', (line) => {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (rec['level'] === 'error' || rec['level'] === 'fatal') console.error(`agent: ${line}`);
      if (typeof rec['grpcPort'] === 'number' && typeof rec['metricsPort'] === 'number') {
        clearTimeout(timer);
        resolve({ child, grpcPort: rec['grpcPort'], metricsPort: rec['metricsPort'] });
      }
    });
  });
}

/** One Prometheus sample value by name (first series). */
function promValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

async function sample(label: string, cycles: number, pid: number, metricsPort: number): Promise<Sample> {
  // A full GC first (agent-with-gc.ts), so heap and RSS are live memory, not garbage.
  process.kill(pid, 'SIGUSR2');
  await new Promise((r) => setTimeout(r, 500));
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN);
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return {
    label,
    cycles,
    rssBytes: rssKb * 1024,
    fds,
    heapUsedBytes: promValue(text, 'nodejs_heap_size_used_bytes'),
    handles: promValue(text, 'nodejs_active_handles_total'),
  };
}

async function cycle(client: AgentServiceClient, stack: TestStack, i: number): Promise<number> {
  const t0 = performance.now();
  const w = await unaryCall<{ id: string }>(
    client,
    'EnsureContainer',
    { function_name: `soak-${i % 8}`, image: stack.images.worker, env: {}, owner_id: OWNER },
    { deadlineMs: CALL_DEADLINE_MS },
  );
  try {
    const payload = Buffer.from(JSON.stringify({ action: 'echo', cycle: i }));
    const r = await unaryCall<{ status_code: number; body: Buffer }>(
      client,
      'InvokeWorker',
      { container_id: w.id, owner_id: OWNER, path: '', payload, headers: {}, timeout_ms: 30_000 },
      { deadlineMs: CALL_DEADLINE_MS },
    );
    if (r.status_code !== 200 || !r.body.equals(payload))
      throw new Error(`cycle ${i}: unexpected reply ${r.status_code} ${r.body.toString().slice(0, 100)}`);
  } finally {
    await unaryCall(client, 'DestroyContainer', { container_id: w.id, owner_id: OWNER }, { deadlineMs: CALL_DEADLINE_MS });
  }
  return performance.now() - t0;
}

async function main(): Promise<number> {
  console.log(`soak: ${CYCLES} cycles (Ensure → Invoke → Destroy), concurrency ${CONCURRENCY}, warm-up ${WARMUP}`);
  const stack = await startStack({ startAgent: false });
  let child: ChildProcess | undefined;
  let client: AgentServiceClient | undefined;
  const stopAll = async (): Promise<void> => {
    client?.close();
    if (child?.exitCode === null) {
      const c = child;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 40_000))]);
      if (c.exitCode === null) c.kill('SIGKILL');
    }
    await stack.stop();
  };
  const onSignal = (): void => {
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  try {
    const agent = await startChildAgent(stack);
    child = agent.child;
    const pid = child.pid!;
    client = agentClient(`127.0.0.1:${agent.grpcPort}`, grpc.credentials.createInsecure());
    const samples: Sample[] = [await sample('start', 0, pid, agent.metricsPort)];
    const latencies: number[] = [];
    let done = 0;
    let failures = 0;
    const run = async (from: number, to: number): Promise<void> => {
      await mapLimit(to - from, CONCURRENCY, async (k) => {
        try {
          latencies.push(await cycle(client!, stack, from + k));
        } catch (err) {
          failures++;
          console.error(`cycle ${from + k} failed: ${(err as Error).message}`);
        }
        done++;
      });
    };
    await run(0, WARMUP);
    samples.push(await sample('warm-up', done, pid, agent.metricsPort));
    for (let from = WARMUP; from < CYCLES;) {
      const to = Math.min(CYCLES, (Math.floor(from / SAMPLE_EVERY) + 1) * SAMPLE_EVERY);
      await run(from, to);
      from = to;
      if (to % SAMPLE_EVERY === 0 && to < CYCLES) samples.push(await sample(`cycle ${to}`, done, pid, agent.metricsPort));
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    samples.push(await sample('end', done, pid, agent.metricsPort));

    const rows: Cell[][] = [['sample', 'cycles', 'RSS MiB', 'heap used MiB', 'open fds', 'active handles']];
    for (const s of samples)
      rows.push([
        s.label,
        String(s.cycles),
        (s.rssBytes / MIB).toFixed(1),
        (s.heapUsedBytes / MIB).toFixed(1),
        String(s.fds),
        String(s.handles),
      ]);
    printTable(rows);
    const lat = summarize(latencies);
    console.log(
      `cycle latency ms: p50 ${lat.p50.toFixed(0)}, p95 ${lat.p95.toFixed(0)}, max ${lat.max.toFixed(0)} over ${lat.n} cycles; ${failures} failed`,
    );

    const leaks = await stack.leaks();
    const leaked = leakCount(leaks);
    console.log(`harness leak count: ${leaked}${leaked > 0 ? ` ${JSON.stringify(leaks)}` : ''}`);

    const warm = samples[1]!;
    const end = samples[samples.length - 1]!;
    const checks: [string, boolean][] = [
      [
        `RSS ${(end.rssBytes / MIB).toFixed(1)} MiB ≤ warm-up ${(warm.rssBytes / MIB).toFixed(1)} + ${RSS_GROWTH_MB} MiB`,
        end.rssBytes <= warm.rssBytes + RSS_GROWTH_MB * MIB,
      ],
      [`open fds ${end.fds} ≤ warm-up ${warm.fds} + ${FD_SLACK}`, end.fds <= warm.fds + FD_SLACK],
      [`active handles ${end.handles} ≤ warm-up ${warm.handles} + ${HANDLE_SLACK}`, end.handles <= warm.handles + HANDLE_SLACK],
      [`all ${CYCLES} cycles succeeded (${failures} failed)`, failures === 0],
      [`zero leaked objects (${leaked})`, leaked === 0],
    ];
    for (const [what, ok] of checks) console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
    const pass = checks.every(([, ok]) => ok);
    console.log(`soak verdict: ${pass ? 'PASS' : 'FAIL'}`);
    return pass ? 0 : 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('soak failed:', err);
    process.exit(1);
  },
);
