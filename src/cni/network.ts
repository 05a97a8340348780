/**
 * CniNetwork: one CNI network (a conflist) attached to and detached from worker netns, the way
 * libcni's `AddNetworkList` / `CheckNetworkList` / `DelNetworkList` and go-cni do it (CNI spec
 * 1.0 §3 "Execution of Network Configurations"):
 *
 * - Every attachment first joins go-cni's loopback network (`cni-loopback`, ifname `lo`), then
 *   the conflist's plugins in order, each getting the previous result as `prevResult`.
 * - The final result of each network is cached (cache.ts) under the cache dir; DEL and CHECK
 *   pass it back as `prevResult`. The cache dir must be the agent's own (not a shared
 *   /var/lib/cni): every entry in it is taken to be ours by listCachedAttachments.
 * - DEL runs the plugins in reverse, for the main network then loopback. It always runs, even
 *   with no cache entry or a netns that is gone (empty CNI_NETNS, as containerd's CRI does), so
 *   IPAM is released in every case.
 * - A failed or aborted ADD is undone at once (DEL of every plugin, in reverse, as the spec asks
 *   after a failed ADD) on its own deadline, not the caller's signal (docs/contract.md#rules).
 * - Calls for the same container id run one at a time (the spec forbids parallel operations on
 *   one container); different ids run in parallel, with at most `maxConcurrentExecs` plugin
 *   processes at once (no global lock: the reference agent's `cniMu` serialised everything).
 */
import { promises as fs } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { AgentError, abortError, errorText } from '../errors.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { listCache, readCache, removeCache, removeCacheTempFiles, writeCache, resultsDir, type CachedAttachment } from './cache.js';
import { cniVersionAtLeast, loadNetworkList, parseNetworkList, type CniNetworkList, type CniPluginConf } from './conflist.js';
import {
  findPlugin,
  formatCniArgs,
  pluginOutputOf,
  pluginStdin,
  pluginVersions,
  runPlugin,
  spawnPlugin,
  type CniCommand,
  type PluginExec,
  type PluginRunner,
} from './exec.js';
import { isNetnsHandle } from './netns.js';
import { Semaphore } from '../concurrency/semaphore.js';
import { KeyedLock } from '../concurrency/keyed-lock.js';
import { isObject, parseResult, type CniResult } from './result.js';
import { checkAttachment, elapsed, ipOrUndefined, type CniAttachment, type RuntimeArgs, type RuntimeConf } from './runtime-conf.js';

export type { CniAttachment, RuntimeConf } from './runtime-conf.js';

/** Constructor options: only the CNI slice of the config, plus the seams (docs/design.md#options-and-seams). */
export interface CniNetworkOptions {
  /** The conflist (or .conf) to load. */
  readonly confFile: string;
  /** Plugin directories, searched in order (CNI_PATH). */
  readonly binDirs: readonly string[];
  /** The agent's own CNI cache dir (results/ lives below it). */
  readonly cacheDir: string;
  /** Interface name inside the netns. Default `eth0`. */
  readonly ifName?: string;
  readonly log: Logger;
  readonly metrics?: Pick<AgentMetrics, 'cniErrors'>;
  /** Per plugin process. Default 30 s. */
  readonly execTimeoutMs?: number;
  /** Plugin processes running at once across all attachments. Default 8. */
  readonly maxConcurrentExecs?: number;
  /** PATH given to plugins (they run iptables, ip...). Default: the standard system dirs. */
  readonly envPath?: string;
  /** Test seam; default spawns the plugin. */
  readonly exec?: PluginExec;
}

/** Per-call options; the signal plays the part of Go's ctx. */
export interface CniCallOptions {
  readonly signal?: AbortSignal;
}

/** Per-ADD options: the attachment's runtime arguments. */
export interface CniAddOptions extends CniCallOptions {
  /** CNI_ARGS pairs (go-cni's labels). Kept in the cache and reused by DEL/CHECK. */
  readonly cniArgs?: readonly (readonly [string, string])[];
  /** Capability arguments (e.g. `portMappings`), given only to plugins that declare them. */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
}

/** libcni's default per-exec bound is the caller's context; 30 s is what go-cni users pick. */
export const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
/** Plugin processes at once. Bridge/host-local contend on a lock anyway; more only queues in the kernel. */
export const DEFAULT_MAX_CONCURRENT_EXECS = 8;
/** PATH for plugins when the caller gives none (no process.env outside main.ts). */
export const DEFAULT_PLUGIN_ENV_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** go-cni's loopback network (`WithLoNetwork`). */
export const LOOPBACK_NETWORK_NAME = 'cni-loopback';
/** The loopback network's interface name. */
export const LOOPBACK_IFNAME = 'lo';

/**
 * One CNI network (a conflist plus go-cni's loopback network) and the attachments of worker
 * netns to it. Create it with the CNI slice of the config, call load() once, then add/check/del
 * per worker. See the module comment for the rules it follows.
 */
export class CniNetwork {
  /** Interface name inside the netns (`CNI_IFNAME` of the main network). */
  readonly ifName: string;
  readonly #confFile: string;
  readonly #cacheDir: string;
  readonly #runner: PluginRunner;
  readonly #log: Logger;
  readonly #metrics: Pick<AgentMetrics, 'cniErrors'> | undefined;
  readonly #slots: Semaphore;
  readonly #locks = new KeyedLock('CNI');
  #list: CniNetworkList | undefined;
  #loopback: CniNetworkList | undefined;

  constructor(opts: CniNetworkOptions) {
    const { ifName = 'eth0', execTimeoutMs = DEFAULT_EXEC_TIMEOUT_MS, maxConcurrentExecs = DEFAULT_MAX_CONCURRENT_EXECS } = opts;
    // Linux interface names (spec 1.0 §2 CNI_IFNAME): < 16 chars, no '/', ':' or whitespace.
    if (!/^[^/:\s]{1,15}$/.test(ifName) || ifName === '.' || ifName === '..')
      throw new AgentError('INVALID_ARGUMENT', `invalid CNI interface name ${JSON.stringify(ifName)}`);
    if (opts.binDirs.length === 0) throw new AgentError('INVALID_ARGUMENT', 'CNI needs at least one plugin directory');
    if (!Number.isInteger(execTimeoutMs) || execTimeoutMs <= 0)
      throw new AgentError('INVALID_ARGUMENT', `invalid CNI exec timeout ${execTimeoutMs} ms`);
    if (!Number.isInteger(maxConcurrentExecs) || maxConcurrentExecs <= 0)
      throw new AgentError('INVALID_ARGUMENT', `invalid CNI exec concurrency ${maxConcurrentExecs}`);
    this.ifName = ifName;
    this.#confFile = opts.confFile;
    this.#cacheDir = opts.cacheDir;
    this.#runner = {
      binDirs: [...opts.binDirs],
      exec: opts.exec ?? spawnPlugin,
      timeoutMs: execTimeoutMs,
      envPath: opts.envPath ?? DEFAULT_PLUGIN_ENV_PATH,
    };
    this.#log = opts.log.child({ module: 'cni' });
    this.#metrics = opts.metrics;
    this.#slots = new Semaphore(maxConcurrentExecs);
  }

  /** The loaded network list. Throws FAILED_PRECONDITION before load(). */
  get list(): CniNetworkList {
    if (this.#list === undefined) throw new AgentError('FAILED_PRECONDITION', 'CNI network not loaded (call load() first)');
    return this.#list;
  }

  /** The network's name (from the conflist). */
  get name(): string {
    return this.list.name;
  }

  /**
   * Reads and checks the conflist, checks that every plugin (and IPAM plugin) binary exists
   * and speaks the list's cniVersion (VERSION, as libcni's ValidateNetworkList), prepares the
   * loopback network and the cache dir. Throws FAILED_PRECONDITION (missing file or plugin,
   * version mismatch) or INVALID_ARGUMENT (bad conflist), naming the file or plugin.
   */
  async load(opts: CniCallOptions = {}): Promise<void> {
    const list = await loadNetworkList(this.#confFile);
    if (list.name === LOOPBACK_NETWORK_NAME) {
      throw new AgentError(
        'INVALID_ARGUMENT',
        `CNI network config ${this.#confFile}: the name ${LOOPBACK_NETWORK_NAME} is reserved for the loopback network`,
      );
    }
    const loopback = parseNetworkList(
      JSON.stringify({ cniVersion: list.cniVersion, name: LOOPBACK_NETWORK_NAME, plugins: [{ type: 'loopback' }] }),
      '(loopback network)',
    );
    const types = new Set<string>(['loopback']);
    for (const p of list.plugins) {
      types.add(p.type);
      const ipam = p['ipam'];
      if (isObject(ipam) && typeof ipam['type'] === 'string') types.add(ipam['type']);
    }
    for (const type of types) await findPlugin(type, this.#runner.binDirs);
    await Promise.all(
      [...types].map(async (type) => {
        const release = await this.#slots.acquire(opts.signal, `CNI plugin ${type} VERSION`);
        const versions = await pluginVersions(this.#runner, type, list.cniVersion, opts.signal).finally(release);
        if (!versions.includes(list.cniVersion)) {
          throw new AgentError(
            'FAILED_PRECONDITION',
            `CNI plugin ${type} does not support cniVersion ${list.cniVersion} of ${this.#confFile} (it supports ${versions.join(', ')})`,
          );
        }
      }),
    );
    try {
      await fs.mkdir(resultsDir(this.#cacheDir), { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new AgentError('FAILED_PRECONDITION', `cannot create CNI cache dir ${this.#cacheDir}: ${errorText(err)}`, { cause: err });
    }
    this.#list = list;
    this.#loopback = loopback;
    this.#log.info(
      { network: list.name, cniVersion: list.cniVersion, plugins: list.plugins.map((p) => p.type), confFile: this.#confFile },
      'CNI network loaded',
    );
  }

  /**
   * ADD: attaches the netns to the loopback network, then to this network, and returns this
   * network's result (the worker's IP: `containerIpv4(result, network.ifName)`). Both results
   * are cached. On any failure or abort everything done is undone (DEL) before it throws, so
   * nothing is left: no veth, no IP reservation, no cache entry. Throws INVALID_ARGUMENT (bad
   * id), FAILED_PRECONDITION (netns missing, plugin missing, not loaded), ALREADY_EXISTS (this id
   * is attached already: DEL first), RESOURCE_EXHAUSTED (IPAM out of addresses), UNAVAILABLE
   * (plugin said "try again later"), CANCELLED/DEADLINE_EXCEEDED (signal, exec timeout) or
   * INTERNAL (plugin failure). If even the undo fails, result-less cache entries remain so
   * that listCachedAttachments offers the attachment for a later DEL.
   */
  async add(att: CniAttachment, opts: CniAddOptions = {}): Promise<CniResult> {
    const list = this.list;
    const loopback = this.#loopback!;
    checkAttachment(att);
    const rt: RuntimeArgs = { args: opts.cniArgs ?? [], capabilityArgs: opts.capabilityArgs ?? {} };
    formatCniArgs(rt.args); // validate before anything runs
    const { signal } = opts;
    const t0 = performance.now();
    return this.#locks.run(att.containerId, signal, async () => {
      // The spec forbids a second ADD without DEL; running it would fail and its undo would then
      // tear down the first attachment. A corrupt entry counts as present: DEL clears it.
      const existing = await readCache(this.#cacheDir, list.name, att.containerId, this.ifName).catch(() => 'corrupt' as const);
      if (existing !== undefined) {
        throw new AgentError('ALREADY_EXISTS', `CNI attachment ${att.containerId} is already on network ${list.name} (DEL it first)`);
      }
      if (!(await isNetnsHandle(att.netns))) throw new AgentError('FAILED_PRECONDITION', `the netns of ${att.containerId} does not exist`);
      try {
        // Loopback and the main network touch different interfaces: attach both at once, as
        // go-cni does, but let both settle before any undo (an undo racing an ADD leaks).
        const [loR, rawR] = await Promise.allSettled([
          this.#addList(loopback, att, LOOPBACK_IFNAME, rt, signal).then(async (lo) => {
            await writeCache(this.#cacheDir, this.#entry(loopback, att, LOOPBACK_IFNAME, rt, lo));
          }),
          this.#addList(list, att, this.ifName, rt, signal).then(async (raw) => {
            await writeCache(this.#cacheDir, this.#entry(list, att, this.ifName, rt, raw));
            return raw;
          }),
        ]);
        if (loR.status === 'rejected') throw loR.reason;
        if (rawR.status === 'rejected') throw rawR.reason;
        const result = parseResult(rawR.value, `CNI network ${list.name} ADD`);
        this.#log.info(
          {
            containerId: att.containerId,
            netns: att.netns,
            network: list.name,
            ifName: this.ifName,
            ip: ipOrUndefined(result, this.ifName),
            ms: elapsed(t0),
          },
          'CNI ADD',
        );
        return result;
      } catch (err) {
        const error = signal?.aborted ? abortError(signal, `CNI ADD ${att.containerId}`) : err;
        this.#log.warn(
          { containerId: att.containerId, netns: att.netns, network: list.name, err: errorText(error), ms: elapsed(t0) },
          'CNI ADD failed; undoing',
        );
        await this.#undoAdd(att, rt);
        throw error;
      }
    });
  }

  /**
   * DEL: detaches the attachment from this network, then from loopback, each in reverse
   * plugin order with its cached result as prevResult; removes the cache entries. Idempotent:
   * an attachment never added, DEL'ed before, or whose netns is gone still succeeds and still
   * releases its IP (plugins run with an empty CNI_NETNS then). Uses the conflist the ADD used
   * (from the cache) when it can. On failure the cache entry stays so that DEL can be retried.
   * Throws like add() (no ALREADY_EXISTS).
   */
  async del(att: CniAttachment, opts: CniCallOptions = {}): Promise<void> {
    const list = this.list;
    checkAttachment(att, true);
    const { signal } = opts;
    const t0 = performance.now();
    await this.#locks.run(att.containerId, signal, async () => {
      const main = await this.#readCacheOrWarn(list.name, att.containerId, this.ifName);
      const lo = await this.#readCacheOrWarn(LOOPBACK_NETWORK_NAME, att.containerId, LOOPBACK_IFNAME);
      const path = att.netns !== '' ? att.netns : (main?.netns ?? lo?.netns ?? '');
      const netns = (await isNetnsHandle(path)) ? path : '';
      let firstErr: unknown;
      try {
        await this.#delList(this.#cachedList(main) ?? list, { containerId: att.containerId, netns, ifName: this.ifName }, main, signal);
        await removeCache(this.#cacheDir, list.name, att.containerId, this.ifName);
      } catch (err) {
        firstErr = err;
      }
      if (!signal?.aborted) {
        try {
          await this.#delList(this.#loopback!, { containerId: att.containerId, netns, ifName: LOOPBACK_IFNAME }, lo, signal);
          await removeCache(this.#cacheDir, LOOPBACK_NETWORK_NAME, att.containerId, LOOPBACK_IFNAME);
        } catch (err) {
          firstErr ??= err;
        }
      }
      if (firstErr !== undefined) {
        const error = signal?.aborted ? abortError(signal, `CNI DEL ${att.containerId}`) : firstErr;
        this.#log.warn(
          { containerId: att.containerId, netns: path, network: list.name, err: errorText(error), ms: elapsed(t0) },
          'CNI DEL failed',
        );
        throw error instanceof Error ? error : new AgentError('INTERNAL', `CNI DEL ${att.containerId}: ${errorText(error)}`);
      }
      this.#log.info(
        {
          containerId: att.containerId,
          netns: path,
          netnsGone: netns === '',
          cached: main !== undefined,
          network: list.name,
          ms: elapsed(t0),
        },
        'CNI DEL',
      );
    });
  }

  /**
   * CHECK: asks every plugin (loopback, then this network, in order) whether the attachment is
   * still as its cached result says. Returns quietly when the list sets `disableCheck`. Throws
   * FAILED_PRECONDITION when the attachment was never added (no cached result; the spec forbids
   * CHECK then), UNIMPLEMENTED for cniVersion < 0.4.0, else like add().
   */
  async check(att: CniAttachment, opts: CniCallOptions = {}): Promise<void> {
    const list = this.list;
    checkAttachment(att);
    const { signal } = opts;
    const t0 = performance.now();
    await this.#locks.run(att.containerId, signal, async () => {
      const main = await readCache(this.#cacheDir, list.name, att.containerId, this.ifName);
      if (main?.result === undefined)
        throw new AgentError('FAILED_PRECONDITION', `CNI CHECK ${att.containerId}: no cached ADD result on network ${list.name}`);
      if (list.disableCheck) return;
      if (!cniVersionAtLeast(list.cniVersion, '0.4.0'))
        throw new AgentError('UNIMPLEMENTED', `CNI CHECK needs cniVersion 0.4.0 or later; network ${list.name} uses ${list.cniVersion}`);
      const lo = await readCache(this.#cacheDir, LOOPBACK_NETWORK_NAME, att.containerId, LOOPBACK_IFNAME);
      const rt: RuntimeConf = {
        containerId: att.containerId,
        netns: att.netns,
        ifName: this.ifName,
        args: main.cniArgs,
        capabilityArgs: main.capabilityArgs,
      };
      if (lo?.result !== undefined) {
        for (const p of this.#loopback!.plugins)
          await this.#exec(this.#loopback!, p, 'CHECK', { ...rt, ifName: LOOPBACK_IFNAME }, lo.result, signal);
      }
      for (const p of list.plugins) await this.#exec(list, p, 'CHECK', rt, main.result, signal);
      this.#log.debug({ containerId: att.containerId, network: list.name, ms: elapsed(t0) }, 'CNI CHECK');
    });
  }

  /**
   * The attachments the cache remembers (this network or its loopback), one per container id,
   * sorted: what start-up reconciliation compares with the live workers, DEL'ing the rest.
   * Undecodable files are logged and skipped.
   */
  /** Removes temp files of cache writes a killed agent left (start-up only). Returns their names. */
  removeStaleTempFiles(): Promise<string[]> {
    return removeCacheTempFiles(this.#cacheDir);
  }

  async listCachedAttachments(): Promise<CniAttachment[]> {
    const list = this.list;
    const entries = await listCache(this.#cacheDir, (file) => {
      this.#log.warn({ file }, 'skipping undecodable CNI cache file');
    });
    const byId = new Map<string, string>();
    for (const e of entries) {
      const ours =
        (e.networkName === list.name && e.ifName === this.ifName) ||
        (e.networkName === LOOPBACK_NETWORK_NAME && e.ifName === LOOPBACK_IFNAME);
      if (!ours) continue;
      // The main network's netns wins; a loopback-only entry (crash between the two ADDs) still counts.
      if (e.networkName === list.name || !byId.has(e.containerId)) byId.set(e.containerId, e.netns);
    }
    return [...byId].sort(([a], [b]) => a.localeCompare(b)).map(([containerId, netns]) => ({ containerId, netns }));
  }

  async #addList(
    list: CniNetworkList,
    att: CniAttachment,
    ifName: string,
    rt: RuntimeArgs,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const conf: RuntimeConf = { ...rt, containerId: att.containerId, netns: att.netns, ifName };
    let prev: unknown;
    for (const p of list.plugins) {
      const out = await this.#exec(list, p, 'ADD', conf, prev, signal);
      parseResult(out, `CNI plugin ${p.type} ADD`); // a bad result must stop the chain, not travel on
      prev = out;
    }
    return prev;
  }

  /** DEL of every plugin in reverse, with the args the ADD used (from its cache entry). */
  async #delList(
    list: CniNetworkList,
    at: Omit<RuntimeConf, keyof RuntimeArgs>,
    cached: CachedAttachment | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    // prevResult on DEL exists since spec 0.4.0.
    const prev = cached !== undefined && cniVersionAtLeast(list.cniVersion, '0.4.0') ? cached.result : undefined;
    const conf: RuntimeConf = { ...at, args: cached?.cniArgs ?? [], capabilityArgs: cached?.capabilityArgs ?? {} };
    for (const p of [...list.plugins].reverse()) await this.#exec(list, p, 'DEL', conf, prev, signal);
  }

  /**
   * Undoes a failed ADD: DEL of every plugin of both networks, in reverse, without prevResult
   * (there is no final result), on the exec timeout only. If that fails too, cache entries
   * without a result are left so that listCachedAttachments offers the attachment for a later DEL.
   */
  async #undoAdd(att: CniAttachment, rt: RuntimeArgs): Promise<void> {
    const netns = (await isNetnsHandle(att.netns)) ? att.netns : '';
    for (const [list, ifName] of [
      [this.list, this.ifName],
      [this.#loopback!, LOOPBACK_IFNAME],
    ] as const) {
      try {
        const conf: RuntimeConf = { ...rt, containerId: att.containerId, netns, ifName };
        for (const p of [...list.plugins].reverse()) await this.#exec(list, p, 'DEL', conf, undefined, undefined);
        await removeCache(this.#cacheDir, list.name, att.containerId, ifName);
      } catch (err) {
        this.#log.error(
          { containerId: att.containerId, network: list.name, err: errorText(err) },
          'CNI DEL after a failed ADD failed; left for reconciliation',
        );
        await writeCache(this.#cacheDir, this.#entry(list, att, ifName, rt, undefined)).catch((e: unknown) => {
          this.#log.error(
            { containerId: att.containerId, network: list.name, err: errorText(e) },
            'cannot record the attachment for a later DEL',
          );
        });
      }
    }
  }

  /** Runs one plugin of `list` for `rt` (bounded by the exec slots); counts its failures. */
  async #exec(
    list: CniNetworkList,
    plugin: CniPluginConf,
    command: CniCommand,
    rt: RuntimeConf,
    prevResult: unknown,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const { containerId } = rt;
    const stdin = pluginStdin(list, plugin, { prevResult, capabilityArgs: rt.capabilityArgs });
    const release = await this.#slots.acquire(signal, `CNI plugin ${plugin.type} ${command}`);
    const t0 = performance.now();
    try {
      const out = await runPlugin(
        this.#runner,
        { type: plugin.type, command, stdin, containerId, netns: rt.netns, ifName: rt.ifName, cniArgs: formatCniArgs(rt.args) },
        signal,
      );
      this.#log.debug({ containerId, network: list.name, plugin: plugin.type, command, ms: elapsed(t0) }, 'CNI plugin ran');
      return out;
    } catch (err) {
      // A caller's cancel is not a plugin failure; a timeout or an error is.
      if (!signal?.aborted) this.#metrics?.cniErrors.inc({ command });
      const output = pluginOutputOf(err);
      if (output !== undefined)
        this.#log.debug({ containerId, network: list.name, plugin: plugin.type, command, output }, 'CNI plugin failed');
      throw err;
    } finally {
      release();
    }
  }

  #entry(list: CniNetworkList, att: CniAttachment, ifName: string, rt: RuntimeArgs, result: unknown): CachedAttachment {
    return {
      containerId: att.containerId,
      ifName,
      networkName: list.name,
      netns: att.netns,
      config: list.bytes,
      cniArgs: rt.args,
      capabilityArgs: rt.capabilityArgs,
      result,
    };
  }

  /** The list an ADD used, from its cache entry, when it is still a valid list of this network. */
  #cachedList(entry: CachedAttachment | undefined): CniNetworkList | undefined {
    if (entry === undefined || entry.config.length === 0) return undefined;
    try {
      const l = parseNetworkList(entry.config, `cached config of ${entry.containerId}`);
      return l.name === this.list.name ? l : undefined;
    } catch {
      return undefined;
    }
  }

  async #readCacheOrWarn(network: string, containerId: string, ifName: string): Promise<CachedAttachment | undefined> {
    try {
      return await readCache(this.#cacheDir, network, containerId, ifName);
    } catch (err) {
      // A corrupt entry must not block DEL: run it without prevResult, then the file goes.
      this.#log.warn({ containerId, network, err: errorText(err) }, 'ignoring unreadable CNI cache entry');
      return undefined;
    }
  }
}
