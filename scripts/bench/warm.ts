/**
 * Warm-path benchmark (issue 5). Starts its own private stack (test/harness/stack.ts: real
 * containerd, registry, CNI test network, in-process agent) and tears it down at the end.
 *
 *   node --import tsx scripts/bench/warm.ts [--pairs 50] [--invokes 1000] [--workers 16] [--per-worker 200]
 *
 * 1. Pause+Resume: the agent's PauseContainer+ResumeContainer RPC pair vs `ctr task pause` +
 *    `ctr task resume` on the same worker (ctr is only a yardstick here, never in the product;
 *    its figure includes starting the ctr process), median/p95 and the ratio.
 * 2. InvokeWorker with a 1 KiB echo payload, sequential, vs direct HTTP (undici, one
 *    keep-alive connection) to the worker's IP:8080 from this process: p50/p99, req/s and the
 *    agent's overhead in ms.
 * 3. `--workers` workers in parallel, each driven sequentially: total req/s through the agent
 *    and directly.
 *
 * Traffic goes only to 127.0.0.1 (agent, registry) and to the workers this stack created.
 */
import { execFile } from 'node:child_process';
import { Client } from 'undici';
import { leakCount, startStack, type TestStack } from '../../test/harness/stack.js';
import { intFlag, mapLimit, nowMs, printTable, summarize, type Cell, type Summary } from './lib.js';

const OWNER = 'bench';
const INVOKE_PATH = '/2015-03-31/functions/function/invocations';
const PAYLOAD_BYTES = 1024;
const WARMUP = 30;

interface WorkerInfo {
  id: string;
  ip_address: string;
  port: number;
}

interface InvokeReply {
  status_code: number;
  body: Buffer;
}

const argv = process.argv.slice(2);
const PAIRS = intFlag(argv, 'pairs', 50);
const INVOKES = intFlag(argv, 'invokes', 1000);
const WORKERS = intFlag(argv, 'workers', 16);
const PER_WORKER = intFlag(argv, 'per-worker', 200);

/** A 1 KiB JSON payload the worker echoes back (unknown action → raw echo). */
function payload(i: number): Buffer {
  const head = `{"action":"echo","seq":${i},"pad":"`;
  const tail = '"}';
  return Buffer.from(head + 'x'.repeat(PAYLOAD_BYTES - head.length - tail.length) + tail);
}

function ctr(stack: TestStack, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('ctr', ['-a', stack.ctd.socket, '-n', stack.namespace, ...args], { timeout: 10_000 }, (err, _out, stderr) => {
      if (err) reject(new Error(`ctr ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

function invokeAgent(stack: TestStack, id: string, body: Buffer): Promise<InvokeReply> {
  return stack.call<InvokeReply>('InvokeWorker', {
    container_id: id,
    owner_id: OWNER,
    path: '',
    payload: body,
    headers: {},
    timeout_ms: 10_000,
  });
}

async function echoAgent(stack: TestStack, id: string, body: Buffer, what: string): Promise<void> {
  const r = await invokeAgent(stack, id, body);
  check(what, r.status_code, r.body, body);
}

async function invokeDirect(client: Client, body: Buffer): Promise<{ status: number; body: Buffer }> {
  const res = await client.request({ method: 'POST', path: INVOKE_PATH, body, headers: { 'content-type': 'application/json' } });
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  return { status: res.statusCode, body: Buffer.concat(chunks) };
}

function check(what: string, status: number, got: Buffer, sent: Buffer): void {
  if (status !== 200 || !got.equals(sent))
    throw new Error(`${what}: status ${status}, body of ${got.length} bytes does not echo the ${sent.length}-byte payload`);
}

/** Runs `n` sequential calls of `fn`, returning per-call latencies and the wall time. */
async function sequential(n: number, fn: (i: number) => Promise<void>): Promise<{ lat: number[]; wallMs: number }> {
  const lat: number[] = [];
  const t0 = nowMs();
  for (let i = 0; i < n; i++) {
    const t = nowMs();
    await fn(i);
    lat.push(nowMs() - t);
  }
  return { lat, wallMs: nowMs() - t0 };
}

function rps(n: number, wallMs: number): string {
  return (n / (wallMs / 1000)).toFixed(0);
}

async function main(): Promise<void> {
  const started = nowMs();
  let stack: TestStack | undefined;
  const clients: Client[] = [];
  const ids: string[] = [];
  let stopping = false;
  const teardown = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    if (stack) {
      const st = stack;
      await mapLimit(ids.length, 8, async (i) => {
        await st.call('DestroyContainer', { container_id: ids[i], owner_id: OWNER }).catch((err: unknown) => {
          console.error(`destroy ${ids[i]}:`, err);
        });
      });
      const leaks = await st.leaks().catch(() => undefined);
      if (leaks && leakCount(leaks) > 0) console.error('LEAKS after destroy:', JSON.stringify(leaks));
      await st.stop();
    }
  };
  const onSignal = (): void => {
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const t0 = nowMs();
    stack = await startStack({ env: { AGENT_LOG_LEVEL: 'warn' } });
    const st = stack;
    const ensure = async (name: string): Promise<WorkerInfo> => {
      const w = await st.call<WorkerInfo>('EnsureContainer', { function_name: name, image: st.images.worker, env: {}, owner_id: OWNER });
      ids.push(w.id);
      return w;
    };
    console.log(`stack up in ${(nowMs() - t0).toFixed(0)} ms (containerd ${st.ctd.socket}, namespace ${st.namespace})`);

    // ---------------------------------------------------------------- 1. pause + resume
    const w = await ensure('bench-warm');
    await echoAgent(st, w.id, payload(0), 'warm-up');
    const ref = { container_id: w.id, owner_id: OWNER };
    for (let i = 0; i < 5; i++) {
      await st.call('PauseContainer', ref);
      await st.call('ResumeContainer', ref);
      await ctr(st, ['task', 'pause', w.id]);
      await ctr(st, ['task', 'resume', w.id]);
    }
    const rpcPause: number[] = [];
    const rpcResume: number[] = [];
    const rpcPairs = await sequential(PAIRS, async () => {
      let t = nowMs();
      await st.call('PauseContainer', ref);
      rpcPause.push(nowMs() - t);
      t = nowMs();
      await st.call('ResumeContainer', ref);
      rpcResume.push(nowMs() - t);
    });
    const ctrPause: number[] = [];
    const ctrResume: number[] = [];
    const ctrPairs = await sequential(PAIRS, async () => {
      let t = nowMs();
      await ctr(st, ['task', 'pause', w.id]);
      ctrPause.push(nowMs() - t);
      t = nowMs();
      await ctr(st, ['task', 'resume', w.id]);
      ctrResume.push(nowMs() - t);
    });
    // Still serving after all that.
    await echoAgent(st, w.id, payload(1), 'after pause/resume');

    // ---------------------------------------------------------------- 2. one worker, sequential
    const direct = new Client(`http://${w.ip_address}:${w.port}`, { pipelining: 1 });
    clients.push(direct);
    const bodies = Array.from({ length: INVOKES }, (_, i) => payload(i));
    for (let i = 0; i < WARMUP; i++) {
      await invokeAgent(st, w.id, bodies[i]!);
      await invokeDirect(direct, bodies[i]!);
    }
    const viaAgent = await sequential(INVOKES, (i) => echoAgent(st, w.id, bodies[i]!, 'InvokeWorker'));
    const viaHttp = await sequential(INVOKES, async (i) => {
      const r = await invokeDirect(direct, bodies[i]!);
      check('direct HTTP', r.status, r.body, bodies[i]!);
    });

    // ---------------------------------------------------------------- 3. N workers in parallel
    const tEnsure = nowMs();
    const many = [w, ...(await mapLimit(WORKERS - 1, 8, (i) => ensure(`bench-par-${i}`)))];
    const ensureMs = nowMs() - tEnsure;
    const directs = many.map((x) => {
      const c = new Client(`http://${x.ip_address}:${x.port}`, { pipelining: 1 });
      clients.push(c);
      return c;
    });
    // Warm every worker on both paths (the first invoke after Ensure waits for readiness).
    await Promise.all(
      many.map(async (x, k) => {
        for (let i = 0; i < 5; i++) {
          await invokeAgent(st, x.id, bodies[i]!);
          await invokeDirect(directs[k]!, bodies[i]!);
        }
      }),
    );
    const parallel = async (fn: (k: number, i: number) => Promise<void>): Promise<{ lat: number[]; wallMs: number }> => {
      const t = nowMs();
      const runs = await Promise.all(many.map((_, k) => sequential(PER_WORKER, (i) => fn(k, i))));
      return { lat: runs.flatMap((r) => r.lat), wallMs: nowMs() - t };
    };
    const parAgent = await parallel((k, i) => echoAgent(st, many[k]!.id, bodies[i % bodies.length]!, 'InvokeWorker (parallel)'));
    const parHttp = await parallel(async (k, i) => {
      const b = bodies[i % bodies.length]!;
      const r = await invokeDirect(directs[k]!, b);
      check('direct HTTP (parallel)', r.status, r.body, b);
    });

    // ---------------------------------------------------------------- report
    const row = (name: string, s: Summary, extra: Cell[] = []): Cell[] => [name, String(s.n), s.p50, s.p95, s.p99, s.max, ...extra];
    const pairRpc = summarize(rpcPairs.lat);
    const pairCtr = summarize(ctrPairs.lat);
    console.log(`\n1. Pause+Resume on one worker, ${PAIRS} pairs (ms; ctr figures include starting the ctr process)\n`);
    printTable([
      ['operation', 'n', 'p50', 'p95', 'p99', 'max'],
      row('agent PauseContainer', summarize(rpcPause)),
      row('agent ResumeContainer', summarize(rpcResume)),
      row('agent Pause+Resume pair', pairRpc),
      row('ctr task pause', summarize(ctrPause)),
      row('ctr task resume', summarize(ctrResume)),
      row('ctr pause+resume pair', pairCtr),
    ]);
    console.log(
      `\n   pair median ratio agent/ctr = ${(pairRpc.p50 / pairCtr.p50).toFixed(3)}   p95 ratio = ${(pairRpc.p95 / pairCtr.p95).toFixed(3)}`,
    );

    const sa = summarize(viaAgent.lat);
    const sh = summarize(viaHttp.lat);
    console.log(`\n2. ${PAYLOAD_BYTES}-byte echo, one worker, sequential, ${INVOKES} calls each (ms)\n`);
    printTable([
      ['path', 'n', 'p50', 'p95', 'p99', 'max', 'req/s'],
      row('InvokeWorker (gRPC → agent → worker)', sa, [rps(INVOKES, viaAgent.wallMs)]),
      row('direct HTTP (undici → worker)', sh, [rps(INVOKES, viaHttp.wallMs)]),
      ['agent overhead', '', sa.p50 - sh.p50, sa.p95 - sh.p95, sa.p99 - sh.p99, '', ''],
    ]);

    const pa = summarize(parAgent.lat);
    const ph = summarize(parHttp.lat);
    const total = WORKERS * PER_WORKER;
    console.log(`\n3. ${WORKERS} workers in parallel, each sequential, ${PER_WORKER} calls per worker (${total} total; ms)\n`);
    printTable([
      ['path', 'n', 'p50', 'p95', 'p99', 'max', 'total req/s'],
      row('InvokeWorker', pa, [rps(total, parAgent.wallMs)]),
      row('direct HTTP', ph, [rps(total, parHttp.wallMs)]),
      ['agent overhead', '', pa.p50 - ph.p50, pa.p95 - ph.p95, pa.p99 - ph.p99, '', ''],
    ]);
    console.log(`\n   (${WORKERS - 1} extra workers ensured in ${ensureMs.toFixed(0)} ms, 8 at a time)`);
  } finally {
    await teardown();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    console.log(`\ntotal bench time ${((nowMs() - started) / 1000).toFixed(1)} s`);
  }
}

await main();
