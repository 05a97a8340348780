/**
 * Running one CNI plugin (CNI spec 1.0 §2 "Execution Protocol"): find the binary named by
 * `type` in the bin dirs, build its stdin from the list (§3 "Deriving execution configuration"),
 * run it with the CNI_* environment, and turn its output into a value or an AgentError. This is
 * the edge where CNI errors `{code, msg, details}` become AgentErrors (docs/errors.md#conventions).
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import { AgentError, abortError, errnoCode, type ErrorCode } from '../errors.js';
import { redactHost } from '../redact.js';
import type { CniNetworkList, CniPluginConf } from './conflist.js';
import { isObject } from './result.js';

/** `CNI_COMMAND` values of spec 1.0 (1.1's GC and STATUS are not used). */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

/** One process to run: the seam between this module and the operating system. */
export interface PluginProcessRequest {
  /** Absolute path of the plugin binary. */
  readonly file: string;
  /** The complete environment of the child. */
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
  /** Fires on the caller's abort or the exec timeout: the child (and its children) must be killed. */
  readonly signal: AbortSignal;
}

/** How a plugin process ended and what it printed. */
export interface PluginProcessResult {
  /** null when the process died from a signal. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a plugin process and resolves once it has exited (also after `signal` fired and the
 * process was killed). Rejects only when the process could not be started. Unit tests inject
 * a fake, as libcni's `invoke.Exec` lets them.
 */
export type PluginExec = (req: PluginProcessRequest) => Promise<PluginProcessResult>;

/** Plugins print small JSON documents; more than this is a broken plugin, not a result. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** libcni retries a plugin that is still being written by someone else (ETXTBSY) 5 times. */
const TEXT_BUSY_RETRIES = 5;
const TEXT_BUSY_DELAY_MS = 100;

/**
 * The real PluginExec: `child_process.spawn` in a new process group, so that an abort or a
 * timeout SIGKILLs the plugin together with the IPAM plugin it delegated to (host-local runs
 * as bridge's child). Retries the start on ETXTBSY like libcni's `RawExec`.
 */
export const spawnPlugin: PluginExec = async (req) => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnOnce(req);
    } catch (err) {
      if (errnoCode(err) !== 'ETXTBSY' || attempt >= TEXT_BUSY_RETRIES) throw err;
      await new Promise((r) => setTimeout(r, TEXT_BUSY_DELAY_MS * attempt));
    }
  }
};

function spawnOnce(req: PluginProcessRequest): Promise<PluginProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(req.file, [], { env: req.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    const killGroup = (): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // ESRCH: the group is gone already.
      }
    };
    const onAbort = (): void => {
      killGroup();
    };
    if (req.signal.aborted) queueMicrotask(onAbort);
    else req.signal.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (b: Buffer) => {
      outBytes += b.length;
      if (outBytes > MAX_OUTPUT_BYTES) killGroup();
      else out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => {
      errBytes += b.length;
      if (errBytes <= MAX_OUTPUT_BYTES) err.push(b);
    });
    // A plugin may exit without reading stdin (EPIPE); its exit status tells what happened.
    child.stdin.on('error', () => undefined);
    child.once('error', (e) => {
      req.signal.removeEventListener('abort', onAbort);
      reject(e);
    });
    child.once('close', (exitCode, signal) => {
      req.signal.removeEventListener('abort', onAbort);
      resolve({ exitCode, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.end(req.stdin);
  });
}

/**
 * Finds plugin `type` in `binDirs`, in order (the CNI_PATH search). Throws FAILED_PRECONDITION
 * naming the type and the directories when no executable file of that name exists.
 */
export async function findPlugin(type: string, binDirs: readonly string[]): Promise<string> {
  for (const dir of binDirs) {
    const file = path.join(dir, type);
    try {
      const st = await fs.stat(file);
      if (!st.isFile()) continue;
      await fs.access(file, fsConstants.X_OK);
      return file;
    } catch {
      // not here (or not executable): try the next directory
    }
  }
  throw new AgentError('FAILED_PRECONDITION', `CNI plugin ${type} not found in CNI_BIN_DIR (install the CNI plugins or fix CNI_BIN_DIR)`);
}

/** What pluginStdin adds to a plugin's config besides name and cniVersion. */
export interface PluginStdinOptions {
  /** ADD: the previous plugin's result; DEL/CHECK: the cached result of the ADD. */
  readonly prevResult?: unknown;
  /** Capability arguments of the attachment (e.g. `portMappings`). */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
}

/**
 * The execution configuration for one plugin (spec 1.0 §3): the plugin's own config with
 * `cniVersion` and `name` from the list, `runtimeConfig` holding only the capability args the
 * plugin declares with `capabilities: {x: true}`, `prevResult` when given, and `capabilities`
 * removed. `cniVersion` comes first in the JSON (the fake plugins in tests rely on it).
 */
export function pluginStdin(
  list: Pick<CniNetworkList, 'name' | 'cniVersion'>,
  plugin: CniPluginConf,
  opts: PluginStdinOptions = {},
): string {
  const { capabilities, cniVersion: _v, name: _n, ...rest } = plugin;
  const conf: Record<string, unknown> = { cniVersion: list.cniVersion, name: list.name, ...rest };
  const runtimeConfig: Record<string, unknown> = {};
  if (isObject(capabilities) && opts.capabilityArgs !== undefined) {
    for (const [cap, supported] of Object.entries(capabilities)) {
      const arg = opts.capabilityArgs[cap];
      if (supported === true && arg !== undefined) runtimeConfig[cap] = arg;
    }
  }
  // As libcni: an empty set leaves any runtimeConfig of the file alone instead of blanking it.
  if (Object.keys(runtimeConfig).length > 0) conf['runtimeConfig'] = runtimeConfig;
  if (opts.prevResult !== undefined) conf['prevResult'] = opts.prevResult;
  return JSON.stringify(conf);
}

/** `CNI_ARGS`: `K=V;K2=V2` (spec 1.0 §2). */
export function formatCniArgs(args: readonly (readonly [string, string])[]): string {
  for (const [k, v] of args) {
    if (k === '' || /[=;]/.test(k) || v.includes(';'))
      throw new AgentError('INVALID_ARGUMENT', `CNI_ARGS entry ${JSON.stringify(`${k}=${v}`)} cannot contain ';' (or '=' in the key)`);
  }
  return args.map(([k, v]) => `${k}=${v}`).join(';');
}

/** How plugins are run: shared by every call of one network. */
export interface PluginRunner {
  readonly binDirs: readonly string[];
  readonly exec: PluginExec;
  readonly timeoutMs: number;
  /** PATH of the plugin (iptables, ip... are found through it). */
  readonly envPath: string;
}

/** One plugin call. */
export interface PluginCall {
  readonly type: string;
  readonly command: CniCommand;
  readonly stdin: string;
  readonly containerId: string;
  /** '' when there is no netns (VERSION, or DEL after the netns is gone). */
  readonly netns: string;
  readonly ifName: string;
  readonly cniArgs: string;
}

/**
 * Runs one plugin and returns its decoded stdout (ADD, VERSION) or undefined (DEL, CHECK:
 * output ignored). Throws:
 * - FAILED_PRECONDITION: the binary is not in the bin dirs;
 * - UNAVAILABLE: the plugin answered CNI error 11 "try again later";
 * - RESOURCE_EXHAUSTED: IPAM is out of addresses (host-local's message);
 * - INTERNAL: the exec timeout passed (the plugin's process group was killed); DEADLINE_EXCEEDED
 *   is kept for the client's own deadline (docs/errors.md#codes);
 * - CANCELLED / DEADLINE_EXCEEDED: `signal` fired (from its reason), process group killed;
 * - INTERNAL: any other failure, "CNI plugin <type> <CMD> failed: <msg> (code N)".
 */
export async function runPlugin(runner: PluginRunner, call: PluginCall, signal?: AbortSignal): Promise<unknown> {
  const what = `CNI plugin ${call.type} ${call.command}`;
  if (signal?.aborted) throw abortError(signal, what);
  const file = await findPlugin(call.type, runner.binDirs);
  const env: Record<string, string> = {
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifName,
    CNI_ARGS: call.cniArgs,
    CNI_PATH: runner.binDirs.join(':'),
    PATH: runner.envPath,
  };

  const timeout = new AbortController();
  const timer = setTimeout(() => {
    timeout.abort();
  }, runner.timeoutMs);
  const combined = signal === undefined ? timeout.signal : AbortSignal.any([signal, timeout.signal]);
  let out: PluginProcessResult;
  try {
    out = await runner.exec({ file, env, stdin: call.stdin, signal: combined });
  } catch (err) {
    throw new AgentError('INTERNAL', `${what}: cannot run the plugin binary (${errnoCode(err) ?? 'spawn failed'})`, {
      cause: new PluginOutput(String(err)),
    });
  } finally {
    clearTimeout(timer);
  }
  if (signal?.aborted) throw abortError(signal, what);
  if (timeout.signal.aborted) throw new AgentError('INTERNAL', `${what} timed out after ${runner.timeoutMs} ms (process killed)`); // not the client's deadline (docs/errors.md#codes)

  if (out.exitCode !== 0) throw pluginError(what, out);
  if (call.command === 'DEL' || call.command === 'CHECK') return undefined;
  try {
    return JSON.parse(out.stdout) as unknown;
  } catch {
    throw new AgentError('INTERNAL', `${what} printed no JSON result (its output is in the agent log at debug level)`, {
      cause: new PluginOutput(out.stdout || '(empty output)'),
    });
  }
}

/** CNI error code 11 (spec 1.0 §5 "Error"): a transient condition, the caller may retry later. */
const CNI_ERR_TRY_AGAIN_LATER = 11;

/**
 * host-local's "out of addresses" error. CNI has no error code for it (host-local answers the
 * generic 999), yet the contract (docs/errors.md#codes) wants RESOURCE_EXHAUSTED when the host is
 * out of IPs; so this one text match lives here, at the edge (docs/errors.md#conventions).
 */
const NO_IP_LEFT = /no IP addresses available/i;

function errorCodeFor(cniCode: number, text: string): ErrorCode {
  if (cniCode === CNI_ERR_TRY_AGAIN_LATER) return 'UNAVAILABLE';
  if (NO_IP_LEFT.test(text)) return 'RESOURCE_EXHAUSTED';
  return 'INTERNAL';
}

/**
 * What a plugin printed, kept out of gRPC messages: the caller sees the CNI error code, the
 * agent's log (debug level, redacted) sees this. `cause` of the AgentError runPlugin throws.
 */
export class PluginOutput extends Error {
  constructor(text: string) {
    super(redactHost(text));
    this.name = 'PluginOutput';
  }
}

/** The plugin's own words for a failure, for the log only; undefined when there are none. */
export function pluginOutputOf(err: unknown): string | undefined {
  const cause = err instanceof Error ? err.cause : undefined;
  return cause instanceof PluginOutput ? cause.message : undefined;
}

function pluginError(what: string, out: PluginProcessResult): AgentError {
  const output = new PluginOutput(`${out.stderr} ${out.stdout}`);
  if (out.exitCode === null) {
    return new AgentError('INTERNAL', `${what} failed: killed by ${out.signal ?? 'a signal'}`, { cause: output });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(out.stdout);
  } catch {
    doc = undefined;
  }
  if (isObject(doc) && typeof doc['code'] === 'number') {
    const code = doc['code'];
    const msg = typeof doc['msg'] === 'string' && doc['msg'] !== '' ? doc['msg'] : 'no message';
    const details = typeof doc['details'] === 'string' && doc['details'] !== '' ? `: ${doc['details']}` : '';
    const agentCode = errorCodeFor(code, `${msg}${details}`);
    // The plugin's msg/details may name host paths, interfaces or users: the log gets them.
    const summary =
      agentCode === 'RESOURCE_EXHAUSTED'
        ? "no IP address left in the network's range"
        : agentCode === 'UNAVAILABLE'
          ? 'try again later'
          : 'plugin error';
    return new AgentError(
      agentCode,
      `${what} failed: ${summary} (CNI error code ${code}; the plugin's message is in the agent log at debug level)`,
      { cause: new PluginOutput(`${msg}${details}`) },
    );
  }
  // Not a CNI error document: a crash or a plugin that only wrote to stderr.
  return new AgentError('INTERNAL', `${what} failed: exit status ${out.exitCode} (its output is in the agent log at debug level)`, {
    cause: output,
  });
}

/**
 * Asks a plugin which spec versions it speaks (CNI_COMMAND=VERSION). Returns
 * `supportedVersions`; errors as for runPlugin.
 */
export async function pluginVersions(runner: PluginRunner, type: string, cniVersion: string, signal?: AbortSignal): Promise<string[]> {
  const out = await runPlugin(
    runner,
    { type, command: 'VERSION', stdin: JSON.stringify({ cniVersion }), containerId: '', netns: '', ifName: '', cniArgs: '' },
    signal,
  );
  const versions = isObject(out) ? out['supportedVersions'] : undefined;
  if (!Array.isArray(versions) || versions.some((v) => typeof v !== 'string')) {
    throw new AgentError('INTERNAL', `CNI plugin ${type} VERSION returned no supportedVersions list`);
  }
  return versions as string[];
}
