/**
 * Quickstart: the agent's main job end to end, on this host, with nothing installed or left
 * behind. It starts a private containerd, a private registry and a test CNI network (all under
 * temp dirs, via the test harness), builds and pushes the sample function image, starts the
 * agent in-process (TLS off, ephemeral ports on 127.0.0.1 clients), and then drives the agent
 * through its gRPC API with `esb-agent ctl` (a child process per call, `-o json`), making the
 * calls the gateway makes:
 *
 *   EnsureContainer → InvokeWorker → PauseContainer → InvokeWorker (paused: FAILED_PRECONDITION)
 *   → ResumeContainer → InvokeWorker → GetContainerMetrics → ListContainers → DestroyContainer
 *
 * Each step prints one header line (`==> [n/N] <RPC> ... <outcome> (<ms>)`), the `esb-agent
 * ctl` command line and its JSON output (bytes shown as text). Everything is stopped at the end, also on failure
 * and on SIGINT/SIGTERM. Exit 0 with a final "quickstart OK" line; 1 on any failure; 130/143
 * when interrupted. Network: only 127.0.0.1 (containerd socket, registry, agent) and the IP of
 * the worker it creates.
 *
 *   bash scripts/quickstart.sh          (as root; installs packages first)
 *   node --import tsx scripts/quickstart.ts
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PROJECT_ROOT } from '../src/paths.js';
import { leakCount, startStack, type TestStack } from '../test/harness/stack.js';

const OWNER = 'quickstart';
const FUNCTION_NAME = 'hello-quickstart';
const MEMORY_MB = 128;
const INVOKE_TIMEOUT_MS = 15_000;
/** Client-side bound per RPC, so the quickstart can never hang (the agent bounds calls itself). */
// ESB_TEST_SLOWDOWN (set in the emulated cgroup v2 guest of scripts/vm, 5-20x slower) stretches
// the per-call deadline there; on a real host it is unset and the deadline is 120 s.
const CALL_DEADLINE_MS = Math.round(120_000 * Math.max(1, Number(process.env['ESB_TEST_SLOWDOWN'] ?? '1') || 1));
const TOTAL_STEPS = 12;

class QuickstartError extends Error {
  override readonly name = 'QuickstartError';
}

// ------------------------------------------------------------------------------------ output

/** Copies `v` with every Buffer/Uint8Array turned into its UTF-8 text, for JSON printing. */
function readable(v: unknown): unknown {
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (Array.isArray(v)) return v.map(readable);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, readable(x)]));
  }
  return v;
}

function json(v: unknown, indent = 2): string {
  return JSON.stringify(readable(v), null, indent);
}

function ms(t0: number): string {
  const d = performance.now() - t0;
  return d < 1000 ? `${Math.round(d)} ms` : `${(d / 1000).toFixed(2)} s`;
}

function say(line = ''): void {
  process.stdout.write(`${line}\n`);
}

let stepNo = 0;
function header(title: string, outcome: string, t0: number): void {
  stepNo++;
  say();
  say(`==> [${stepNo}/${TOTAL_STEPS}] ${title} ... ${outcome} (${ms(t0)})`);
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new QuickstartError(`check failed: ${what}`);
}

// ------------------------------------------------------------------------- interruption

const interrupted = new AbortController();
const interruption = new Promise<never>((_resolve, reject) => {
  interrupted.signal.addEventListener('abort', () => {
    reject(interrupted.signal.reason as Error);
  });
});
// Only ever rejects on a signal; the steps race against it.
interruption.catch(() => undefined);
let exitSignal: NodeJS.Signals | undefined;

function onSignal(sig: NodeJS.Signals): void {
  if (exitSignal !== undefined) {
    process.stderr.write(`\nquickstart: second ${sig} during cleanup: exiting now; temp dirs, netns or daemons may be left behind\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  }
  exitSignal = sig;
  ctlChild?.kill('SIGTERM');
  process.stderr.write(`\nquickstart: ${sig} received: stopping everything (send it again to exit at once)\n`);
  interrupted.abort(new QuickstartError(`interrupted by ${sig}`));
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

/** `p`, unless a signal arrives first. */
function untilInterrupted<T>(p: Promise<T>): Promise<T> {
  return Promise.race([p, interruption]);
}

// --------------------------------------------------------------------------------- steps

interface RpcFailure {
  readonly code: string;
  readonly details: string;
}

/** The `esb-agent` command from source (quickstart.sh runs before any build). */
const CLI_ENTRY = path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts');
/** The ctl call running now, killed on SIGINT/SIGTERM. */
let ctlChild: ChildProcess | undefined;

interface CtlRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The command as an operator would type it. */
  readonly shown: string;
}

/** Runs `esb-agent ctl --addr … --insecure --owner quickstart -o json <args>` as a child process. */
function ctl(stack: TestStack, args: readonly string[]): Promise<CtlRun> {
  const agent = stack.agent;
  if (!agent) throw new QuickstartError('the agent is not running');
  const common = [
    'ctl',
    '--addr',
    `127.0.0.1:${agent.grpcPort}`,
    '--insecure',
    '--owner',
    OWNER,
    '--deadline',
    `${CALL_DEADLINE_MS}ms`,
    '-o',
    'json',
  ];
  const shown = ['esb-agent', ...common, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
  const env = { ...process.env };
  delete env['NODE_TEST_CONTEXT'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI_ENTRY, ...common, ...args], {
      cwd: PROJECT_ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    ctlChild = child;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      ctlChild = undefined;
      resolve({ code, stdout, stderr, shown });
    });
  });
}

/** One ctl call as a step: header with the outcome and time, the command, then its JSON output. */
async function rpc<Res>(stack: TestStack, title: string, args: readonly string[]): Promise<Res> {
  const t0 = performance.now();
  const run = await untilInterrupted(ctl(stack, args));
  if (run.code !== 0) {
    const failure = parseFailure(run);
    header(title, `FAILED: ${failure.code} (exit ${run.code})`, t0);
    say(`$ ${run.shown}`);
    say(run.stdout.trimEnd());
    throw new QuickstartError(`${args[0] ?? 'ctl'} failed with ${failure.code}: ${failure.details}`);
  }
  header(title, 'OK', t0);
  say(`$ ${run.shown}`);
  say(run.stdout.trimEnd());
  return JSON.parse(run.stdout) as Res;
}

/** The `{"error": …}` ctl prints with -o json, or its stderr when there is none. */
function parseFailure(run: CtlRun): RpcFailure {
  try {
    const e = (JSON.parse(run.stdout) as { error?: RpcFailure }).error;
    if (e) return e;
  } catch {
    // not JSON: a usage or local error, described on stderr
  }
  return { code: `exit ${run.code ?? 'signal'}`, details: run.stderr.trim() };
}

/** A ctl call that must fail with `expected` (a gRPC code name): prints the code and message. */
async function rpcExpectingError(stack: TestStack, title: string, args: readonly string[], expected: string): Promise<RpcFailure> {
  const t0 = performance.now();
  const run = await untilInterrupted(ctl(stack, args));
  if (run.code === 0) {
    header(title, 'unexpectedly OK', t0);
    say(run.stdout.trimEnd());
    throw new QuickstartError(`${args[0] ?? 'ctl'} succeeded, expected ${expected}`);
  }
  const failure = parseFailure(run);
  const as = failure.code === expected ? `${failure.code} (as expected, exit ${run.code})` : `${failure.code}, expected ${expected}`;
  header(title, as, t0);
  say(`$ ${run.shown}`);
  say(run.stdout.trimEnd());
  if (failure.code !== expected) throw new QuickstartError(`${args[0] ?? 'ctl'} failed with ${failure.code}, expected ${expected}`);
  return failure;
}

interface WorkerInfo {
  id: string;
  name: string;
  ip_address: string;
  port: number;
}
interface InvokeReply {
  status_code: number;
  headers: Record<string, string>;
  /** ctl -o json prints a UTF-8 body as text. */
  body: string;
}
interface MetricsReply {
  metrics: { state: string; memory_max: string; memory_current: string; cpu_usage_ns: string } | null;
}
interface ListReply {
  containers: { container_id: string; status: string; function_name: string; owner_id: string }[];
}

/** `ctl invoke` arguments (blank path → the RIE path /2015-03-31/functions/function/invocations). */
function invokeArgs(id: string, payload: object): string[] {
  return ['invoke', id, '--data', JSON.stringify(payload), '--timeout-ms', String(INVOKE_TIMEOUT_MS)];
}

async function invokeEcho(stack: TestStack, title: string, id: string, message: string): Promise<void> {
  const payload = { action: 'echo', message };
  const res = await rpc<InvokeReply>(stack, title, invokeArgs(id, payload));
  check(res.status_code === 200, `InvokeWorker status_code 200, got ${res.status_code}`);
  check(res.body === JSON.stringify(payload), 'the worker echoed the payload back');
}

/** The part of /metrics about RPCs and cold starts, from the agent's own Prometheus endpoint. */
async function metricsExcerpt(port: number): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  check(res.ok, `GET /metrics answered ${res.status}`);
  const text = await res.text();
  return text.split('\n').filter((l) => /^esb_agent_(rpc_total|image_pulls_total|cold_start_phase_duration_seconds_(sum|count))\b/.test(l));
}

async function demo(stack: TestStack): Promise<void> {
  const agent = stack.agent;
  if (!agent) throw new QuickstartError('the agent did not start');

  // Step 2. EnsureContainer: what the gateway sends on a cold start.
  const ensureArgs = [
    'ensure',
    FUNCTION_NAME,
    '--image',
    stack.images.worker,
    '--memory',
    String(MEMORY_MB),
    '--env',
    `AWS_LAMBDA_FUNCTION_NAME=${FUNCTION_NAME}`,
    '--env',
    'AWS_LAMBDA_FUNCTION_VERSION=$LATEST',
    '--env',
    'AWS_LAMBDA_FUNCTION_TIMEOUT=30',
    '--env',
    'AWS_REGION=ap-northeast-1',
  ];
  const worker = await rpc<WorkerInfo>(stack, 'EnsureContainer: pull, unpack, netns + CNI ADD, create, start', ensureArgs);
  check(worker.id.startsWith(stack.idPrefix), `worker id starts with ${stack.idPrefix}`);
  check(worker.ip_address !== '' && worker.port === 8080, 'WorkerInfo has an IP and port 8080');
  const id = worker.id;

  // Steps 3–7. Invoke, pause, invoke while paused (refused), resume, invoke.
  await invokeEcho(stack, 'InvokeWorker (echo payload; waits for the worker to listen)', id, 'hello from the quickstart');
  const paused = await rpc<{ success: boolean }>(stack, 'PauseContainer (cgroup freezer)', ['pause', id]);
  check(paused.success, 'PauseContainer success');
  await rpcExpectingError(
    stack,
    'InvokeWorker while paused',
    invokeArgs(id, { action: 'echo', message: 'refused' }),
    'FAILED_PRECONDITION',
  );
  const resumed = await rpc<{ success: boolean }>(stack, 'ResumeContainer', ['resume', id]);
  check(resumed.success, 'ResumeContainer success');
  await invokeEcho(stack, 'InvokeWorker (after resume)', id, 'hello again');

  // Step 8. Metrics from the worker's cgroup.
  const m = await rpc<MetricsReply>(stack, 'GetContainerMetrics (from the cgroup)', ['metrics', id]);
  const limit = String(MEMORY_MB * 1024 * 1024);
  const metrics = m.metrics;
  if (!metrics) throw new QuickstartError('GetContainerMetrics returned no metrics');
  check(metrics.state === 'RUNNING', 'metrics state RUNNING');
  check(metrics.memory_max === limit, `memory_max = ${MEMORY_MB} MiB (${limit}), got ${metrics.memory_max}`);
  say(
    `memory_max ${metrics.memory_max} bytes = ${MEMORY_MB} MiB (AWS_LAMBDA_FUNCTION_MEMORY_SIZE); working set ${(Number(metrics.memory_current) / 1048576).toFixed(1)} MiB`,
  );

  // Step 9. The caller's containers.
  const list = await rpc<ListReply>(stack, 'ListContainers (this owner only)', ['list']);
  check(list.containers.length === 1 && list.containers[0]?.container_id === id, 'ListContainers lists exactly the new worker');

  // Steps 10–11. Destroy, then prove that nothing is left: containerd objects, netns, veth, IP, CNI cache, files.
  const destroyed = await rpc<{ success: boolean }>(stack, 'DestroyContainer', ['destroy', id, '--function', FUNCTION_NAME]);
  check(destroyed.success, 'DestroyContainer success');

  const t0 = performance.now();
  const leaks = await untilInterrupted(stack.leaks());
  const n = leakCount(leaks);
  const lines = await untilInterrupted(metricsExcerpt(agent.metricsPort));
  header("Leftovers after DestroyContainer, and the agent's /metrics", n === 0 ? 'none left' : `${n} LEFT`, t0);
  say(json(leaks));
  say(`GET http://127.0.0.1:${agent.metricsPort}/metrics (excerpt):`);
  for (const l of lines) say(`  ${l}`);
  check(n === 0, `nothing left after DestroyContainer (found ${n})`);
}

// ---------------------------------------------------------------------------------- main

function text(err: unknown, withStack = false): string {
  if (err instanceof Error) return withStack ? (err.stack ?? err.message) : err.message;
  return typeof err === 'string' ? err : JSON.stringify(err);
}

function leakCountSafe(stack: TestStack): Promise<string> {
  return stack.leaks().then(
    (l) => String(leakCount(l)),
    () => 'unknown',
  );
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('quickstart: run as root (it starts containerd and creates network namespaces)\n');
    return 1;
  }
  say("esb-agent quickstart: private containerd + registry + CNI test network + agent, then the gateway's RPCs");

  const t0 = performance.now();
  // Kept so that a stack still starting when a signal arrives is stopped once it is up.
  const starting = startStack();
  let stack: TestStack | undefined;
  let failed: unknown;
  try {
    stack = await untilInterrupted(starting);
    header('Start: containerd, registry, sample image pushed, CNI network, agent', 'OK', t0);
    const agent = stack.agent;
    say(
      json({
        containerd_socket: stack.ctd.socket,
        containerd_namespace: stack.namespace,
        registry: stack.registry.url,
        image: stack.images.worker,
        image_digest: stack.images.digests.worker,
        cni_network: stack.networkName,
        cni_conflist: stack.confFile,
        bridge: stack.bridge,
        subnet: stack.subnet,
        agent_state_dir: stack.stateDir,
        agent_grpc: agent ? `127.0.0.1:${agent.grpcPort} (plaintext: AGENT_GRPC_TLS_DISABLED=1)` : 'not started',
        agent_metrics: agent ? `http://127.0.0.1:${agent.metricsPort}/metrics` : 'not started',
      }),
    );
    await demo(stack);
  } catch (err) {
    failed = err;
  }

  // Always stop everything, whatever happened above.
  const tStop = performance.now();
  stack ??= await starting.catch(() => undefined);
  if (exitSignal !== undefined) {
    process.stderr.write(`quickstart interrupted by ${exitSignal}\n`);
  } else if (failed !== undefined && stack) {
    process.stderr.write(`\nquickstart FAILED: ${text(failed)}\n`);
    const tail = stack.logs.lines.slice(-25);
    if (tail.length > 0) process.stderr.write(`last agent log lines:\n${tail.map((l) => `  ${JSON.stringify(l)}`).join('\n')}\n`);
    process.stderr.write(`objects left before cleanup: ${await leakCountSafe(stack)}\n`);
  } else if (failed !== undefined) {
    process.stderr.write(`\nquickstart FAILED while starting the stack: ${text(failed, true)}\n`);
  }
  let stopFailed: unknown;
  try {
    await stack?.stop();
  } catch (err) {
    stopFailed = err;
    process.stderr.write(`quickstart: stopping the stack failed: ${text(err)}\n`);
  }
  header('Stop: agent, containerd, registry, bridge, temp dirs', stopFailed === undefined ? 'OK' : 'FAILED', tStop);

  if (exitSignal !== undefined) return exitSignal === 'SIGINT' ? 130 : 143;
  if (failed !== undefined || stopFailed !== undefined) return 1;
  say();
  say(`quickstart OK (${ms(t0)})`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`quickstart: ${text(err, true)}\n`);
    process.exit(1);
  },
);
