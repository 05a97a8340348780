/**
 * Issue 6 §6, bad input: property-based fuzz (fast-check) of all seven RPCs through the real
 * gRPC server of an in-process agent on a real stack (containerd, runc, CNI, registry).
 *
 * Every field gets hostile values: empty, blank, huge, unicode, lone surrogates, control
 * characters, NUL, path traversal, `=` and NUL in env keys, huge env maps, negative / huge /
 * non-integer timeouts, unknown ids, other owners' ids, and raw protobuf bytes (garbage,
 * truncated and mutated encodings). An oracle written from the contract (docs/contract.md#rules, docs/contract.md#rpcs) says which
 * gRPC codes each input may get; a small model tracks the workers that exist, their owner and
 * whether they are paused, so the oracle knows NOT_FOUND from PERMISSION_DENIED from OK.
 *
 * Most cases are invalid and cheap; at most MAX_REAL_ENSURES valid Ensures really start
 * workers, which the later properties then pause, resume, measure, invoke and destroy with
 * fuzzed arguments. Afterwards: health is SERVING, List answers, and nothing leaked.
 *
 * Seed and size: FUZZ_SEED (default below, always printed) and FUZZ_RUNS (total cases,
 * default 2400). A failure prints the seed and the failing input; rerun with FUZZ_SEED=<seed>.
 * Network: 127.0.0.1 (agent, registry, and port 1 for a refused registry) and the test's own
 * workers; no generated image reference can leave the host (see `safeImage`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { loadAgentPackage } from '../../src/api/proto.js';
import { safeName } from '../../src/worker/safe-name.js';
import { parseReference } from '../../src/registry/reference.js';
import { checkHealth, healthClient, unaryCall, type AgentMethod } from '../helpers/grpc.js';
import { leakCount, startStack, type TestStack } from '../harness/stack.js';

const DEFAULT_SEED = 20_260_606;
const SEED = process.env['FUZZ_SEED'] ? Number(process.env['FUZZ_SEED']) : DEFAULT_SEED;
const TOTAL_RUNS = process.env['FUZZ_RUNS'] ? Number(process.env['FUZZ_RUNS']) : 2400;
/** Valid Ensures that really create a worker; later valid-looking ones get a missing image. */
const MAX_REAL_ENSURES = 16;
/** Per-call deadline: a hang shows up as DEADLINE_EXCEEDED, which no oracle allows. */
const CALL_DEADLINE_MS = 60_000;
const MIB = 1024 * 1024;
const INVOKE_PATH = '/2015-03-31/functions/function/invocations';
const VICTIM_OWNER = 'fuzz-victim';
const OWNERS = ['fuzz-a', 'fuzz-b', 'gw.example.internal'];
/** AGENT_MAX_TOTAL_MEMORY_MB of the fuzz stack: large memory requests cross it (RESOURCE_EXHAUSTED). */
const MEMORY_CAP_MB = 100_000;

/** Share of TOTAL_RUNS per property. */
const SHARE = { ensure: 0.14, list: 0.1, pause: 0.1, resume: 0.1, metrics: 0.1, invoke: 0.26, raw: 0.1, destroy: 0.1 } as const;
const runsOf = (k: keyof typeof SHARE): number => Math.max(10, Math.round(TOTAL_RUNS * SHARE[k]));

// ------------------------------------------------------------------ the oracle (docs/contract.md#rules, docs/contract.md#rpcs)

type Code =
  | 'OK'
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'PERMISSION_DENIED'
  | 'FAILED_PRECONDITION'
  | 'DEADLINE_EXCEEDED'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  | 'RESOURCE_EXHAUSTED';

/** C0, DEL and C1 control characters. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Length in Unicode code points (what the contract's limits count). */
function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) i++;
    n++;
  }
  return n;
}
const utf8 = (s: string): number => Buffer.byteLength(s);

/** owner_id / container_id: trimmed, required, ≤ 256 code points, no control characters. */
function badRef(raw: string): boolean {
  const t = raw.trim();
  return t === '' || codePoints(t) > 256 || CONTROL.test(t);
}
function badFunctionName(raw: string): boolean {
  return raw.trim() === '' || codePoints(raw) > 128 || CONTROL.test(raw);
}
function badImageField(raw: string): boolean {
  const t = raw.trim();
  return t !== '' && (codePoints(t) > 512 || /\s/.test(t) || CONTROL.test(t));
}
function badEnv(env: Record<string, string>): boolean {
  const entries = Object.entries(env);
  if (entries.length > 512) return true;
  let total = 0;
  for (const [k, v] of entries) {
    if (k === '' || codePoints(k) > 256 || k.includes('=') || CONTROL.test(k) || v.includes('\0')) return true;
    total += utf8(k) + utf8(v) + 2;
  }
  return total > 256 * 1024;
}
/** The memory variable, when present, must be a whole number of MiB from 16 to 262144. */
function memoryMb(env: Record<string, string>): number | 'bad' {
  const raw = env['AWS_LAMBDA_FUNCTION_MEMORY_SIZE'];
  if (raw === undefined) return 128;
  const v = raw.trim();
  if (!/^[0-9]+$/.test(v) || Number(v) < 16 || Number(v) > 262_144) return 'bad';
  return Number(v);
}
/** Invoke path: blank = default; otherwise an ASCII origin-form path without `..`, `#`, `\`. */
function badPath(raw: string): boolean {
  const p = raw.trim();
  if (p === '') return false;
  if (codePoints(p) > 2048 || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(p) || p.startsWith('//') || /[^\x21-\x7e]|[\\#]/.test(p)) return true;
  const pathPart = (p.startsWith('/') ? p : `/${p}`).split('?', 1)[0] ?? '';
  for (const segment of pathPart.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return true;
    }
    if (decoded.split(/[/\\]/).includes('..')) return true;
  }
  return false;
}
function badHeaders(h: Record<string, string>): boolean {
  const entries = Object.entries(h);
  if (entries.length > 128) return true;
  let total = 0;
  for (const [k, v] of entries) {
    if (!TOKEN.test(k) || /[^\t\x20-\x7e\x80-\xff]/.test(v)) return true;
    total += utf8(k) + utf8(v);
  }
  return total > 64 * 1024;
}

interface ModelWorker {
  readonly owner: string;
  readonly memoryMb: number;
  paused: boolean;
}

/** What the agent should answer, and checks on a successful reply. */
interface Expectation {
  readonly codes: readonly Code[];
  readonly onOk?: (res: Record<string, unknown>) => void | Promise<void>;
}

const only = (...codes: Code[]): Expectation => ({ codes });

// ------------------------------------------------------------------ arbitraries

const controlChar = fc.constantFrom('\0', '\u0001', '\t', '\n', '\r', '\u001b', '\u007f', '\u0085', '\u009f');
const traversal = fc.constantFrom(
  '../',
  '/',
  '..',
  '.',
  '../../etc/passwd',
  '/etc/shadow',
  'a/../../b',
  '..\\..\\x',
  '%2e%2e%2f',
  '/proc/self/environ',
  '/run/netns/x',
  'C:\\Windows',
);
const boundary = fc.constantFrom(
  'o'.repeat(256),
  'o'.repeat(257),
  'f'.repeat(128),
  'f'.repeat(129),
  '\u{1F600}'.repeat(128),
  '\u{1F600}'.repeat(129),
  '\u{1F600}'.repeat(256),
  `  ${'o'.repeat(256)}  `,
  'i'.repeat(512),
  'i'.repeat(513),
);
/** Any string an attacker or a broken client could send. */
const anyString = fc.oneof(
  fc.constant(''),
  fc.constantFrom(' ', '   ', '\t', '\u00a0', '\u2028', '\ufeff'),
  fc.string({ maxLength: 24 }),
  fc.string({ unit: 'grapheme', maxLength: 24 }),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.tuple(fc.string({ maxLength: 8 }), controlChar, fc.string({ maxLength: 8 })).map(([a, c, b]) => a + c + b),
  traversal,
  boundary,
  fc
    .integer({ min: 200, max: 3000 })
    .chain((n) => fc.constantFrom('a'.repeat(n), '\u00e9'.repeat(n), '\u{1F600}'.repeat(n), `${'x'.repeat(n)}\0`)),
);
/** Dictionary keys: never `__proto__`, which a plain object cannot hold as a key. */
const dictKey = (arb: fc.Arbitrary<string>): fc.Arbitrary<string> => arb.filter((k) => k !== '__proto__');

const envKey = fc.oneof(
  fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,15}$/),
  anyString,
  fc.constantFrom('A=B', '=', 'A\0B', '', 'K'.repeat(257), '\u00dcMLAUT', '\u{1F600}KEY'),
);
const envValue = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 32 }) },
  { weight: 3, arbitrary: anyString },
  { weight: 1, arbitrary: fc.constantFrom('a\0b', '', 'v'.repeat(300_000)) },
);
const hugeEnv = fc
  .integer({ min: 500, max: 530 })
  .map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`FUZZ_K${i}`, 'v'.repeat(16)])));
const memoryValue = fc.oneof(
  fc.constantFrom('16', '15', '64', '262144', '262145', '0', '-1', ' 128 ', 'abc', '1e3', '\u0663\u0662', '128MB', ''),
  fc.integer().map(String),
);
const envArb = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(fc.stringMatching(/^FUZZ_[A-Z0-9_]{1,12}$/), fc.string({ maxLength: 32 }), { maxKeys: 5 }) },
  { weight: 3, arbitrary: fc.dictionary(dictKey(envKey), envValue, { maxKeys: 6 }) },
  { weight: 1, arbitrary: hugeEnv },
  { weight: 2, arbitrary: memoryValue.map((v) => ({ AWS_LAMBDA_FUNCTION_MEMORY_SIZE: v, FUZZ_MEM: '1' })) },
);
const ownerArb = (known: readonly string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...known) },
    { weight: 1, arbitrary: fc.constantFrom(...known).map((o) => ` ${o}\t`) },
    { weight: 1, arbitrary: fc.constant('fuzz-nobody') },
    { weight: 3, arbitrary: anyString },
  );
const timeoutArb = fc.oneof(
  fc.constantFrom(0, -1, -2_147_483_648, 2_147_483_647, 1, 5, 1.5, -0.5, 2 ** 40, 900_001, 30_000),
  fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }),
  fc.constantFrom('100', 'abc', '-5', '1e3'),
);
const OVER_PAYLOAD = Buffer.alloc(16 * MIB + 1, 0x61);
const payloadArb = fc.oneof(
  { weight: 20, arbitrary: fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a)) },
  { weight: 5, arbitrary: fc.string({ unit: 'grapheme', maxLength: 64 }).map((s) => Buffer.from(s)) },
  { weight: 2, arbitrary: fc.constant(Buffer.alloc(64 * 1024, 0x70)) },
  { weight: 1, arbitrary: fc.constant(OVER_PAYLOAD) },
);
const headerValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 2, arbitrary: anyString },
  { weight: 1, arbitrary: fc.constantFrom('caf\u00e9', 'a\tb', '\u00ff', 'x'.repeat(70_000)) },
);
const headerName = fc.oneof(
  fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/),
  anyString,
  fc.constantFrom('Host', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Expect', 'X-Forwarded-For', 'Keep-Alive', 'TE'),
);
const headersArb = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(dictKey(headerName), headerValue, { maxKeys: 5 }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 126, max: 132 }).map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`X-H${i}`, 'v']))),
  },
);

// ------------------------------------------------------------------ calls

interface Reply {
  /** A gRPC status name, or a description of a non-gRPC failure. */
  readonly code: string;
  readonly details: string;
  readonly res: Record<string, unknown> | undefined;
}

function toReply(err: unknown, res: unknown): Reply {
  if (err) {
    const e = err as grpc.ServiceError;
    return { code: typeof e.code === 'number' ? grpc.status[e.code] : `non-gRPC error: ${e.message}`, details: e.details, res: undefined };
  }
  return { code: 'OK', details: '', res: res as Record<string, unknown> };
}

const packageDef = loadAgentPackage();
const serviceDef = packageDef['esb.agent.v1.AgentService'] as unknown as Record<AgentMethod, grpc.MethodDefinition<object, object>>;

describe('bad input fuzz: all seven RPCs through the real gRPC server', () => {
  let stack: TestStack;
  /** Every worker the agent should have, by id. */
  const model = new Map<string, ModelWorker>();
  let realEnsures = 0;
  /** Cases per RPC and code, printed at the end. */
  const tally = new Map<string, number>();

  before(async () => {
    console.log(`fuzz: seed=${SEED} runs=${TOTAL_RUNS} (override with FUZZ_SEED / FUZZ_RUNS)`);
    stack = await startStack({ env: { AGENT_MAX_TOTAL_MEMORY_MB: String(MEMORY_CAP_MB) } });
    for (let i = 0; i < 2; i++) {
      const w = await stack.call<{ id: string }>('EnsureContainer', {
        function_name: `victim-${i}`,
        image: stack.images.worker,
        env: {},
        owner_id: VICTIM_OWNER,
      });
      model.set(w.id, { owner: VICTIM_OWNER, memoryMb: 128, paused: false });
    }
  });
  after(async () => {
    console.log(
      `fuzz: seed=${SEED}; real Ensures ${realEnsures}; cases by RPC and code: ${JSON.stringify(Object.fromEntries([...tally].sort()))}`,
    );
    await stack.stop();
  });

  const call = (method: AgentMethod, req: object): Promise<Reply> =>
    unaryCall(stack.client!, method, req, { deadlineMs: CALL_DEADLINE_MS }).then(
      (res) => toReply(undefined, res),
      (err: unknown) => toReply(err, undefined),
    );

  /** Sends raw bytes as the request of `method` (no client-side encoding). */
  const callRaw = (method: AgentMethod, bytes: Buffer): Promise<Reply> =>
    new Promise((resolve) => {
      const def = serviceDef[method];
      stack.client!.makeUnaryRequest(
        def.path,
        (b: Buffer) => b,
        (b: Buffer) => def.responseDeserialize(b) as Record<string, unknown>,
        bytes,
        new grpc.Metadata(),
        { deadline: Date.now() + CALL_DEADLINE_MS },
        (err, res) => {
          resolve(toReply(err, res));
        },
      );
    });

  /** Which workers in the model `idRaw`/`ownerRaw` designate. */
  function target(idRaw: string, ownerRaw: string): { kind: 'unknown' | 'other' | 'own'; id: string; w?: ModelWorker } {
    const id = idRaw.trim();
    const w = model.get(id);
    if (!w) return { kind: 'unknown', id };
    return { kind: w.owner === ownerRaw.trim() ? 'own' : 'other', id, w };
  }

  async function listIds(owner: string): Promise<string[]> {
    const r = await stack.call<{ containers: { container_id: string }[] }>('ListContainers', { owner_id: owner });
    return r.containers.map((c) => c.container_id).sort();
  }

  /** The oracle for every RPC but Ensure, on the request as the server decodes it. */
  function expectFor(method: AgentMethod, req: Record<string, unknown>): Expectation {
    const str = (k: string): string => (typeof req[k] === 'string' ? req[k] : '');
    const owner = str('owner_id');
    if (method === 'ListContainers') {
      if (badRef(owner)) return only('INVALID_ARGUMENT');
      const o = owner.trim();
      return {
        codes: ['OK'],
        onOk: (res) => {
          const cs = res['containers'] as { container_id: string; owner_id: string }[];
          assert.ok(
            cs.every((c) => c.owner_id === o),
            "List shows only the caller's workers",
          );
          const want = [...model]
            .filter(([, w]) => w.owner === o)
            .map(([id]) => id)
            .sort();
          assert.deepEqual(cs.map((c) => c.container_id).sort(), want);
        },
      };
    }
    const idRaw = str('container_id');
    if (badRef(owner) || badRef(idRaw)) return only('INVALID_ARGUMENT');
    if (method === 'InvokeWorker') {
      const payload = req['payload'] as Buffer;
      const pathRaw = str('path');
      if (badPath(pathRaw) || badHeaders(req['headers'] as Record<string, string>) || payload.length > 16 * MIB)
        return only('INVALID_ARGUMENT');
    }
    const t = target(idRaw, owner);
    if (t.kind === 'other') return only('PERMISSION_DENIED');
    switch (method) {
      case 'DestroyContainer':
        return {
          codes: ['OK'],
          onOk: (res) => {
            assert.equal(res['success'], true);
            model.delete(t.id);
          },
        };
      case 'PauseContainer':
      case 'ResumeContainer':
        if (t.kind === 'unknown') return only('NOT_FOUND');
        return {
          codes: ['OK'],
          onOk: (res) => {
            assert.equal(res['success'], true);
            t.w!.paused = method === 'PauseContainer';
          },
        };
      case 'GetContainerMetrics':
        if (t.kind === 'unknown') return only('NOT_FOUND');
        return {
          codes: ['OK'],
          onOk: (res) => {
            const m = res['metrics'] as Record<string, unknown>;
            assert.equal(m['container_id'], t.id);
            assert.equal(m['state'], t.w!.paused ? 'PAUSED' : 'RUNNING');
            assert.equal(m['memory_max'], String(t.w!.memoryMb * MIB), 'the memory limit is the requested one');
          },
        };
      case 'InvokeWorker': {
        if (t.kind === 'unknown') return only('NOT_FOUND');
        if (t.w!.paused) return only('FAILED_PRECONDITION');
        const timeout = req['timeout_ms'] as number;
        // A short timeout may pass while the worker starts listening.
        const codes: Code[] = timeout > 0 && timeout < 5000 ? ['OK', 'DEADLINE_EXCEEDED'] : ['OK'];
        const pathRaw = str('path').trim();
        return {
          codes,
          onOk: (res) => {
            if (pathRaw === '' || pathRaw === INVOKE_PATH) {
              assert.equal(res['status_code'], 200);
              assert.ok((res['body'] as Buffer).equals(req['payload'] as Buffer), 'the worker echoes the payload');
            } else {
              assert.ok([200, 404, 405].includes(res['status_code'] as number), `status ${String(res['status_code'])}`);
            }
          },
        };
      }
      default:
        throw new Error(`no oracle for ${method}`);
    }
  }

  async function check(method: AgentMethod, req: Record<string, unknown>, exp: Expectation, reply: Reply): Promise<void> {
    const key = `${method}:${reply.code}`;
    tally.set(key, (tally.get(key) ?? 0) + 1);
    assert.ok(
      (exp.codes as readonly string[]).includes(reply.code),
      `${method} answered ${reply.code} (${reply.details.slice(0, 300)}), expected one of ${exp.codes.join(', ')}`,
    );
    if (reply.code === 'OK' && exp.onOk) await exp.onOk(reply.res!);
  }

  async function stillHealthy(): Promise<void> {
    const health = healthClient(`127.0.0.1:${stack.agent!.grpcPort}`, grpc.credentials.createInsecure());
    try {
      assert.equal(await checkHealth(health, 'esb.agent.v1.AgentService'), 'SERVING');
    } finally {
      health.close();
    }
    assert.deepEqual(
      await listIds(VICTIM_OWNER),
      [...model]
        .filter(([, w]) => w.owner === VICTIM_OWNER)
        .map(([id]) => id)
        .sort(),
    );
  }

  const fcParams = (k: keyof typeof SHARE, offset: number): fc.Parameters<unknown> => ({
    seed: SEED + offset,
    numRuns: runsOf(k),
    endOnFailure: true,
  });

  // -------------------------------------------------------------- EnsureContainer

  /**
   * An image reference that cannot leave the host: anything the reference grammar accepts
   * whose registry is not the test registry becomes a missing image in the test registry.
   */
  function safeImage(image: string): string {
    const t = image.trim();
    if (t === '' || badImageField(t)) return image;
    try {
      const ref = parseReference(t);
      if (ref.registry === stack.registry.host || ref.registry === '127.0.0.1:1') return image;
    } catch {
      return image; // refused before any network access
    }
    return `${stack.registry.host}/esb-test/fuzz-missing:v1`;
  }

  /** Sum of the memory limits of the model's workers that are not STOPPED, as the agent lists them. */
  async function liveMemoryMb(): Promise<number> {
    let sum = 0;
    for (const owner of new Set([...model.values()].map((w) => w.owner))) {
      const listed = await stack.call<{ containers: { container_id: string; status: string }[] }>('ListContainers', { owner_id: owner });
      for (const c of listed.containers) if (c.status !== 'STOPPED') sum += model.get(c.container_id)?.memoryMb ?? 0;
    }
    return sum;
  }

  test('EnsureContainer', async () => {
    const registry = (): string => stack.registry.host;
    const imageArb = fc.oneof(
      { weight: 3, arbitrary: anyString },
      { weight: 3, arbitrary: fc.constantFrom('', '  ') },
      { weight: 3, arbitrary: fc.constantFrom(stack.images.worker, ` ${stack.images.worker} `) },
      { weight: 2, arbitrary: fc.constantFrom(`${registry()}/esb-test/fuzz-missing:v1`, `${registry()}/esb-test/nope/deeper:v9`) },
      {
        weight: 2,
        arbitrary: fc.constantFrom(
          'a::b',
          ':v1',
          '@sha256:xyz',
          `x@sha256:${'g'.repeat(64)}`,
          'f'.repeat(64),
          'Bad_Host!/x:v1',
          `${registry()}/UPPER:v1`,
          'x:',
          '/x',
          'x//y',
        ),
      },
      { weight: 1, arbitrary: fc.constant('127.0.0.1:1/fuzz/unreachable:v1') },
    );
    const fnArb = fc.oneof(
      { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.-]{0,20}$/) },
      { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }) },
      { weight: 3, arbitrary: anyString },
    );
    await fc.assert(
      fc.asyncProperty(ownerArb(OWNERS), fnArb, imageArb, envArb, async (owner, fn, imageIn, env) => {
        let image = safeImage(imageIn);
        const mem = memoryMb(env);
        let exp: Code;
        if (badRef(owner) || badFunctionName(fn) || badImageField(image) || badEnv(env) || mem === 'bad') {
          exp = 'INVALID_ARGUMENT';
        } else {
          let ref = image.trim();
          if (ref === '') {
            const name = safeName(fn);
            ref = name === '' ? '' : `${registry()}/esb-test/${name}:v1`;
            // The pushed busybox images exit at once: start the worker image explicitly instead.
            if (['worker', 'busybox', 'multiarch'].includes(name)) ref = image = stack.images.worker;
            if (name === '') exp = 'INVALID_ARGUMENT';
          }
          let parsed = true;
          try {
            if (ref !== '') parseReference(ref);
          } catch {
            parsed = false;
          }
          if (ref === '' || !parsed) exp = 'INVALID_ARGUMENT';
          // Host-wide admission comes before any image work: the memory limits of the workers
          // that are not stopped plus this one may not cross AGENT_MAX_TOTAL_MEMORY_MB.
          else if ((await liveMemoryMb()) + mem > MEMORY_CAP_MB) exp = 'RESOURCE_EXHAUSTED';
          else if (ref === stack.images.worker) {
            if (realEnsures >= MAX_REAL_ENSURES) {
              image = `${registry()}/esb-test/fuzz-missing:v1`;
              exp = 'NOT_FOUND';
            } else exp = 'OK';
          } else if (ref.startsWith('127.0.0.1:1/'))
            exp = 'INVALID_ARGUMENT'; // not in AGENT_ALLOWED_REGISTRIES
          else exp = 'NOT_FOUND';
        }
        const req = { function_name: fn, image, env, owner_id: owner };
        const reply = await call('EnsureContainer', req);
        await check('EnsureContainer', req, only(exp), reply);
        if (reply.code !== 'OK') return;
        realEnsures++;
        const w = reply.res as { id: string; name: string; ip_address: string; port: number };
        assert.match(w.id, /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/, 'a containerd id: no path separators');
        assert.ok(w.id.startsWith(stack.idPrefix) && w.id.length <= 76, w.id);
        assert.equal(w.port, 8080);
        assert.ok(w.ip_address.startsWith(stack.subnet.replace(/0\/24$/, '')), w.ip_address);
        assert.ok(existsSync(path.join(stack.stateDir, 'workers', w.id)), 'worker files are under the state dir');
        const o = owner.trim();
        const listed = await stack.call<{ containers: { container_id: string; function_name: string }[] }>('ListContainers', {
          owner_id: o,
        });
        assert.equal(listed.containers.find((c) => c.container_id === w.id)?.function_name, fn, 'function_name comes back exactly as sent');
        // Only workers that run the test worker undisturbed take part in the later properties.
        const keep = (mem as number) >= 64 && Object.keys(env).every((k) => /^(FUZZ_[A-Z0-9_]*|AWS_LAMBDA_FUNCTION_MEMORY_SIZE)$/.test(k));
        if (keep) model.set(w.id, { owner: o, memoryMb: mem as number, paused: false });
        else assert.equal((await stack.call<{ success: boolean }>('DestroyContainer', { container_id: w.id, owner_id: o })).success, true);
      }),
      fcParams('ensure', 1),
    );
    await stillHealthy();
  });

  // -------------------------------------------------------------- container RPCs

  const idArb = (): fc.Arbitrary<string> => {
    const ids = [...model.keys()];
    const unknown = `${stack.idPrefix}fuzz-${randomBytes(4).toString('hex')}`;
    return fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(...ids) },
      { weight: 1, arbitrary: fc.constantFrom(...ids).map((id) => ` ${id}\n`) },
      { weight: 1, arbitrary: fc.constantFrom(...ids).map((id) => id.toUpperCase()) },
      { weight: 1, arbitrary: fc.constantFrom(...ids).map((id) => `${id}/../${id}`) },
      { weight: 1, arbitrary: fc.constant(unknown) },
      { weight: 3, arbitrary: anyString },
    );
  };
  /** A worker and its real owner: the cases that get past the ownership check. */
  const ownPair = (): fc.Arbitrary<{ container_id: string; owner_id: string }> =>
    fc.constantFrom(...[...model].map(([id, w]) => ({ container_id: id, owner_id: w.owner })));
  const ownersNow = (): string[] => [...new Set([...model.values()].map((w) => w.owner).concat(OWNERS))];

  for (const [method, share, offset] of [
    ['ListContainers', 'list', 2],
    ['PauseContainer', 'pause', 3],
    ['ResumeContainer', 'resume', 4],
    ['GetContainerMetrics', 'metrics', 5],
  ] as const) {
    test(method, async () => {
      const arb =
        method === 'ListContainers'
          ? fc.record({ owner_id: ownerArb(ownersNow()) })
          : fc.oneof(
              { weight: 4, arbitrary: fc.record({ container_id: idArb(), owner_id: ownerArb(ownersNow()) }) },
              { weight: 1, arbitrary: ownPair() },
            );
      await fc.assert(
        fc.asyncProperty(arb, async (req) => {
          const exp = expectFor(method, req);
          await check(method, req, exp, await call(method, req));
        }),
        fcParams(share, offset),
      );
      await stillHealthy();
    });
  }

  test('InvokeWorker', async () => {
    const fuzzed = fc.record({
      container_id: idArb(),
      owner_id: ownerArb(ownersNow()),
      path: fc.oneof(
        {
          weight: 2,
          arbitrary: fc.constantFrom(
            '',
            INVOKE_PATH,
            `${INVOKE_PATH}?q=1`,
            'relative/path',
            '/%2e%2e/x',
            '/caf%C3%A9',
            '/a/..',
            'http://169.254.169.254/',
            '//evil/x',
            '/a#b',
          ),
        },
        { weight: 3, arbitrary: anyString },
      ),
      payload: payloadArb,
      headers: headersArb,
      timeout_ms: timeoutArb,
    });
    // Reaches the worker: its owner, a usable path, fuzzed payload, headers and timeout.
    const owned = fc
      .tuple(
        ownPair(),
        fc.constantFrom('', INVOKE_PATH, '/other', `${INVOKE_PATH}?a=%00`),
        payloadArb,
        fc.dictionary(dictKey(headerName), headerValue, { maxKeys: 4 }),
        timeoutArb,
      )
      .map(([pair, p, payload, headers, timeout_ms]) => ({ ...pair, path: p, payload, headers, timeout_ms }));
    const arb = fc.oneof({ weight: 3, arbitrary: fuzzed }, { weight: 1, arbitrary: owned });
    await fc.assert(
      fc.asyncProperty(arb, async (sent) => {
        // The server sees what protobuf makes of the field: timeout_ms is an int32.
        const decoded = serviceDef.InvokeWorker.requestDeserialize(serviceDef.InvokeWorker.requestSerialize(sent)) as Record<
          string,
          unknown
        >;
        const exp = expectFor('InvokeWorker', decoded);
        await check('InvokeWorker', decoded, exp, await call('InvokeWorker', sent));
      }),
      fcParams('invoke', 6),
    );
    await stillHealthy();
  });

  test('raw protobuf bytes: garbage, truncated and mutated encodings', async () => {
    const methods = ['ListContainers', 'PauseContainer', 'GetContainerMetrics', 'InvokeWorker', 'DestroyContainer'] as const;
    const validish = (m: (typeof methods)[number]): fc.Arbitrary<Buffer> =>
      fc
        .record({ container_id: idArb(), owner_id: ownerArb(ownersNow()), path: anyString, timeout_ms: fc.integer() })
        .map((r) => serviceDef[m].requestSerialize(r));
    const arb = fc.constantFrom(...methods).chain((m) =>
      fc.tuple(
        fc.constant(m),
        fc.oneof(
          fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
          fc.tuple(validish(m), fc.nat()).map(([b, n]) => b.subarray(0, b.length === 0 ? 0 : n % b.length)),
          fc.tuple(validish(m), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([b, n, v]) => {
            const c = Buffer.from(b);
            if (c.length > 0) c[n % c.length] = v;
            return c;
          }),
          // Reserved InvokeWorker fields 1 and 2 (ip_address, port): an old client's target must be ignored.
          validish(m).map((b) => Buffer.concat([Buffer.from([0x0a, 9]), Buffer.from('127.0.0.1'), Buffer.from([0x10, 22]), b])),
        ),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([method, bytes]) => {
        let decoded: Record<string, unknown> | undefined;
        try {
          decoded = serviceDef[method].requestDeserialize(bytes) as Record<string, unknown>;
        } catch {
          decoded = undefined;
        }
        const reply = await callRaw(method, bytes);
        if (decoded === undefined) {
          // grpc-js answers an undecodable message itself, before any handler (as grpc-go does).
          assert.equal(reply.code, 'INTERNAL', `undecodable ${method} request answered ${reply.code}`);
          assert.match(reply.details, /deserializ/i);
          tally.set(`raw:${method}:undecodable`, (tally.get(`raw:${method}:undecodable`) ?? 0) + 1);
          return;
        }
        await check(method, decoded, expectFor(method, decoded), reply);
      }),
      fcParams('raw', 7),
    );
    await stillHealthy();
  });

  test('DestroyContainer', async () => {
    const arb = fc.record({ function_name: anyString, container_id: idArb(), owner_id: ownerArb(ownersNow()) });
    await fc.assert(
      fc.asyncProperty(arb, async (req) => {
        const exp = expectFor('DestroyContainer', req);
        await check('DestroyContainer', req, exp, await call('DestroyContainer', req));
      }),
      fcParams('destroy', 8),
    );
    await stillHealthy();
  });

  test('afterwards: the agent still serves, every worker is destroyed, nothing leaked', async () => {
    await stillHealthy();
    assert.ok(realEnsures >= 1, 'at least one fuzzed Ensure created a real worker');
    for (const [id, w] of [...model]) {
      assert.equal((await stack.call<{ success: boolean }>('DestroyContainer', { container_id: id, owner_id: w.owner })).success, true);
      model.delete(id);
    }
    for (const o of ownersNow()) assert.deepEqual(await listIds(o), []);
    const leaks = await stack.leaks();
    console.log(`fuzz: leaks after the run: ${leakCount(leaks)}`);
    assert.equal(leakCount(leaks), 0, `leaked: ${JSON.stringify(leaks)}`);
  });
});
