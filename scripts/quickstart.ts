/**
 * Quickstart: the agent's main job end to end, on this host, with nothing installed or left
 * behind. It starts a private containerd, a private registry and a test CNI network (all under
 * temp dirs, via the test harness), builds and pushes the sample function image, starts the
 * agent in-process (TLS off, ephemeral ports on 127.0.0.1 clients), and then drives the agent
 * through its gRPC API the way the gateway does:
 *
 *   EnsureContainer → InvokeWorker → PauseContainer → InvokeWorker (paused: FAILED_PRECONDITION)
 *   → ResumeContainer → InvokeWorker → GetContainerMetrics → ListContainers → DestroyContainer
 *
 * Each step prints one header line (`==> [n/N] <RPC> ... <outcome> (<ms>)`), the request and
 * the reply as JSON (bytes shown as text). Everything is stopped at the end, also on failure
 * and on SIGINT/SIGTERM. Exit 0 with a final "quickstart OK" line; 1 on any failure; 130/143
 * when interrupted. Network: only 127.0.0.1 (containerd socket, registry, agent) and the IP of
 * the worker it creates.
 *
 *   bash scripts/quickstart.sh          (as root; installs packages first)
 *   node --import tsx scripts/quickstart.ts
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { AgentMethod } from '../test/helpers/grpc.js';
import { leakCount, startStack, type TestStack } from '../test/harness/stack.js';

const OWNER = 'quickstart';
const FUNCTION_NAME = 'hello-quickstart';
const MEMORY_MB = 128;
const INVOKE_TIMEOUT_MS = 15_000;
/** Client-side bound per RPC, so the quickstart can never hang (the agent bounds calls itself). */
const CALL_DEADLINE_MS = 120_000;
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

/** One RPC as a step: header with the outcome and time, the request, then the reply. */
async function rpc<Res>(stack: TestStack, title: string, method: AgentMethod, req: object): Promise<Res> {
  const t0 = performance.now();
  let res: Res;
  try {
    res = await untilInterrupted(stack.call<Res>(method, req, { deadlineMs: CALL_DEADLINE_MS }));
  } catch (err) {
    const e = err as Partial<grpc.ServiceError>;
    if (typeof e.code === 'number') {
      header(title, `FAILED: ${grpc.status[e.code]}`, t0);
      say(`request: ${json(req, 0)}`);
      say(json({ code: grpc.status[e.code], details: e.details }));
      throw new QuickstartError(`${method} failed with ${grpc.status[e.code]}: ${e.details ?? ''}`);
    }
    throw err;
  }
  header(title, 'OK', t0);
  say(`request: ${json(req, 0)}`);
  say(json(res));
  return res;
}

/** An RPC that must fail with `expected`: prints the code and message. */
async function rpcExpectingError(stack: TestStack, title: string, method: AgentMethod, req: object, expected: grpc.status): Promise<RpcFailure> {
  const t0 = performance.now();
  try {
    const res = await untilInterrupted(stack.call(method, req, { deadlineMs: CALL_DEADLINE_MS }));
    header(title, 'unexpectedly OK', t0);
    say(json(res));
    throw new QuickstartError(`${method} succeeded, expected ${grpc.status[expected]}`);
  } catch (err) {
    const e = err as Partial<grpc.ServiceError>;
    if (typeof e.code !== 'number') throw err;
    const failure = { code: grpc.status[e.code], details: e.details ?? '' };
    const as = e.code === expected ? `${failure.code} (as expected)` : `${failure.code}, expected ${grpc.status[expected]}`;
    header(title, as, t0);
    say(`request: ${json(req, 0)}`);
    say(json(failure));
    if (e.code !== expected) throw new QuickstartError(`${method} failed with ${failure.code}, expected ${grpc.status[expected]}`);
    return failure;
  }
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
  body: Buffer;
}
interface MetricsReply {
  metrics: { state: string; memory_max: string; memory_current: string; cpu_usage_ns: string } | null;
}
interface ListReply {
  containers: { container_id: string; status: string; function_name: string; owner_id: string }[];
}

function invokeRequest(id: string, payload: object): object {
  return {
    container_id: id,
    owner_id: OWNER,
    // Blank → the RIE path /2015-03-31/functions/function/invocations, as the agent defaults it.
    path: '',
    payload: Buffer.from(JSON.stringify(payload)),
    headers: { 'Content-Type': 'application/json' },
    timeout_ms: INVOKE_TIMEOUT_MS,
  };
}

async function invokeEcho(stack: TestStack, title: string, id: string, message: string): Promise<void> {
  const payload = { action: 'echo', message };
  const res = await rpc<InvokeReply>(stack, title, 'InvokeWorker', invokeRequest(id, payload));
  check(res.status_code === 200, `InvokeWorker status_code 200, got ${res.status_code}`);
  check(res.body.toString('utf8') === JSON.stringify(payload), 'the worker echoed the payload back');
}

/** The part of /metrics about RPCs and cold starts, from the agent's own Prometheus endpoint. */
async function metricsExcerpt(port: number): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  check(res.ok, `GET /metrics answered ${res.status}`);
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => /^esb_agent_(rpc_total|image_pulls_total|cold_start_phase_duration_seconds_(sum|count))\b/.test(l));
}

async function demo(stack: TestStack): Promise<void> {
  const agent = stack.agent;
  if (!agent) throw new QuickstartError('the agent did not start');

  // Step 2. EnsureContainer: what the gateway sends on a cold start.
  const ensureReq = {
    function_name: FUNCTION_NAME,
    image: stack.images.worker,
    env: {
      AWS_LAMBDA_FUNCTION_NAME: FUNCTION_NAME,
      AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(MEMORY_MB),
      AWS_LAMBDA_FUNCTION_TIMEOUT: '30',
      AWS_REGION: 'ap-northeast-1',
    },
    owner_id: OWNER,
  };
  const worker = await rpc<WorkerInfo>(stack, 'EnsureContainer: pull, unpack, netns + CNI ADD, create, start', 'EnsureContainer', ensureReq);
  check(worker.id.startsWith(stack.idPrefix), `worker id starts with ${stack.idPrefix}`);
  check(worker.ip_address !== '' && worker.port === 8080, 'WorkerInfo has an IP and port 8080');
  const id = worker.id;

  // Steps 3–7. Invoke, pause, invoke while paused (refused), resume, invoke.
  await invokeEcho(stack, 'InvokeWorker (echo payload; waits for the worker to listen)', id, 'hello from the quickstart');
  const paused = await rpc<{ success: boolean }>(stack, 'PauseContainer (cgroup freezer)', 'PauseContainer', { container_id: id, owner_id: OWNER });
  check(paused.success, 'PauseContainer success');
  await rpcExpectingError(stack, 'InvokeWorker while paused', 'InvokeWorker', invokeRequest(id, { action: 'echo', message: 'refused' }), grpc.status.FAILED_PRECONDITION);
  const resumed = await rpc<{ success: boolean }>(stack, 'ResumeContainer', 'ResumeContainer', { container_id: id, owner_id: OWNER });
  check(resumed.success, 'ResumeContainer success');
  await invokeEcho(stack, 'InvokeWorker (after resume)', id, 'hello again');

  // Step 8. Metrics from the worker's cgroup.
  const m = await rpc<MetricsReply>(stack, 'GetContainerMetrics (from the cgroup)', 'GetContainerMetrics', { container_id: id, owner_id: OWNER });
  const limit = String(MEMORY_MB * 1024 * 1024);
  const metrics = m.metrics;
  if (!metrics) throw new QuickstartError('GetContainerMetrics returned no metrics');
  check(metrics.state === 'RUNNING', 'metrics state RUNNING');
  check(metrics.memory_max === limit, `memory_max = ${MEMORY_MB} MiB (${limit}), got ${metrics.memory_max}`);
  say(`memory_max ${metrics.memory_max} bytes = ${MEMORY_MB} MiB (AWS_LAMBDA_FUNCTION_MEMORY_SIZE); working set ${(Number(metrics.memory_current) / 1048576).toFixed(1)} MiB`);

  // Step 9. The caller's containers.
  const list = await rpc<ListReply>(stack, 'ListContainers (this owner only)', 'ListContainers', { owner_id: OWNER });
  check(list.containers.length === 1 && list.containers[0]?.container_id === id, 'ListContainers lists exactly the new worker');

  // Steps 10–11. Destroy, then prove that nothing is left: containerd objects, netns, veth, IP, CNI cache, files.
  const destroyed = await rpc<{ success: boolean }>(stack, 'DestroyContainer', 'DestroyContainer', { function_name: FUNCTION_NAME, container_id: id, owner_id: OWNER });
  check(destroyed.success, 'DestroyContainer success');

  const t0 = performance.now();
  const leaks = await untilInterrupted(stack.leaks());
  const n = leakCount(leaks);
  const lines = await untilInterrupted(metricsExcerpt(agent.metricsPort));
  header('Leftovers after DestroyContainer, and the agent\'s /metrics', n === 0 ? 'none left' : `${n} LEFT`, t0);
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
  say('esb-agent quickstart: private containerd + registry + CNI test network + agent, then the gateway\'s RPCs');

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
