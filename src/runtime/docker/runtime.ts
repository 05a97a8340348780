/**
 * DockerRuntime: the fallback runtime for hosts that run dockerd and no containerd
 * (AGENT_RUNTIME=docker), behind the same Runtime interface. Ensure:
 *
 *   image (policy, pull) → id → create (labels, limits, CONTAINERS_NETWORK) → start
 *   → IP from inspect of that network → worker table
 *
 * The container's removal is registered before it is created, so any failure or cancel removes
 * it on a detached deadline (docs/go-agent.md#w14). dockerd attaches the network before the process starts.
 * The worker table is rebuilt from labels at start-up and kept current by dockerd's events;
 * List costs no call. Pause/Resume are UNIMPLEMENTED on this runtime (docs/contract.md#pausecontainer).
 */
import { RegistryHosts } from '../../registry/registry-hosts.js';
import type { Config } from '../../config/config.js';
import { AgentError, abortError, errorText, isAlreadyExists, throwIfAborted } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import { requestedImageRef } from '../../registry/reference.js';
import { UndoStack } from '../undo.js';
import { nowSeconds } from '../workers.js';
import { memoryMbFor } from '../../worker/limits.js';
import { isManaged, workerId } from '../../worker/naming.js';
import { WORKER_PORT, type CallOptions, type EnsureRequest, type Runtime, type WorkerInfo, type WorkerMetrics } from '../runtime.js';
import { TableBackedRuntime } from '../table-runtime.js';
import { KeyedLock } from '../../concurrency/keyed-lock.js';
import { createContainer, inspectContainer, listManaged, removeContainer, startContainer, workerFromSummary } from './containers.js';
import { workerContainerBody } from './create.js';
import { DockerEngineClient } from './engine-client.js';
import { DockerEventWatcher, type DockerEvent } from './events.js';
import { DockerImages } from './pull.js';
import { createWorkerFirewall } from '../../netfilter/index.js';
import { dockerWorkerNetwork, type DockerNetworkInspect } from './network.js';
import { metricsFromStats, stoppedMetrics, type DockerStats } from './stats.js';

export interface DockerRuntimeDeps {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
}

/** Rollback and destroy run on their own clock, whatever the caller's deadline was. */
const CLEANUP_DEADLINE_MS = 60_000;
/** How long start-up waits for dockerd to answer /_ping. */
const START_WAIT_MS = 10_000;
/** Attempts at a fresh id suffix when a name clashes with an existing container. */
const ID_ATTEMPTS = 5;

export class DockerRuntime extends TableBackedRuntime implements Runtime {
  readonly kind = 'docker' as const;
  readonly client: DockerEngineClient;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #metrics: AgentMetrics;
  readonly #images: DockerImages;
  readonly #events: DockerEventWatcher;
  readonly #network: string;
  /** Ids being destroyed: their events no longer resurrect them. */
  readonly #destroying = new Set<string>();
  /** Serialises destroys of one worker. */
  readonly #locks = new KeyedLock();
  readonly #deps: DockerRuntimeDeps;

  constructor(config: Config, deps: DockerRuntimeDeps) {
    super({ log: deps.log.child({ module: 'docker' }), metrics: deps.metrics, limits: config.limits });
    this.#config = config;
    this.#log = deps.log.child({ module: 'docker' });
    this.#metrics = deps.metrics;
    this.#network = config.docker.network;
    this.#deps = deps;
    this.client = new DockerEngineClient({ host: config.docker.host });
    this.#images = new DockerImages({
      client: this.client,
      pullPolicy: config.pullPolicy,
      dockerConfigDir: config.registry.dockerConfigDir,
      hosts: new RegistryHosts({ allowed: config.registry.allowed, insecure: config.registry.insecure }),
      maxConcurrentPulls: config.images.maxConcurrentPulls,
      log: deps.log,
      metrics: deps.metrics,
    });
    this.#events = new DockerEventWatcher({
      client: this.client,
      env: config.env,
      log: this.#log,
      onEvent: (e) => {
        this.#onEvent(e);
      },
      onResync: () => this.#resync(),
    });
  }

  async start(): Promise<void> {
    await this.#waitForPing();
    const v = await this.client.json<{ Version: string; ApiVersion: string; MinAPIVersion?: string }>({
      method: 'GET',
      path: '/version',
      what: 'dockerd version',
    });
    const net = await this.client.request({
      method: 'GET',
      path: `/networks/${encodeURIComponent(this.#network)}`,
      what: `inspect network ${this.#network}`,
    });
    if (net.status === 404) {
      throw new AgentError(
        'FAILED_PRECONDITION',
        `CONTAINERS_NETWORK ${this.#network} does not exist in dockerd at ${this.client.host}; create it (docker network create ${this.#network}) or set CONTAINERS_NETWORK`,
      );
    }
    if (net.status !== 200)
      throw new AgentError('UNAVAILABLE', `inspect network ${this.#network}: dockerd answered ${net.status}: ${net.body.slice(0, 300)}`);
    if (this.#config.workerFirewall.enabled) {
      // Checked and installed before the worker table and any RPC: no worker of ours runs
      // unprotected. The DNS server of a docker network is its gateway (or dockerd's embedded
      // resolver inside the worker, which never reaches the host's INPUT).
      const worker = dockerWorkerNetwork(JSON.parse(net.body) as DockerNetworkInspect, this.#network);
      await createWorkerFirewall(this.#config, worker.gateway, this.#deps)?.ensure(worker.network);
    }
    this.#log.info(
      {
        dockerVersion: v.Version,
        apiVersion: v.ApiVersion,
        clientApiVersion: this.client.apiVersion,
        host: this.client.host,
        network: this.#network,
      },
      'connected to dockerd',
    );
    await this.#events.start();
    this.#log.info({ workers: this.workers.size }, 'worker table rebuilt from dockerd');
  }

  async #waitForPing(): Promise<void> {
    const end = Date.now() + START_WAIT_MS;
    for (;;) {
      try {
        await this.client.ping(AbortSignal.timeout(2000));
        return;
      } catch (err) {
        if (Date.now() > end)
          throw new AgentError('UNAVAILABLE', `dockerd unreachable at ${this.client.host} for ${START_WAIT_MS} ms: ${errorText(err)}`, {
            cause: err,
          });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  // ---------------------------------------------------------------- ensure

  async ensure(req: EnsureRequest, { signal }: CallOptions): Promise<WorkerInfo> {
    const cfg = this.#config;
    const memoryMb = memoryMbFor(req.env, cfg.defaultMemoryMb);
    const ref = requestedImageRef(req.image, req.functionName, cfg.registry.defaultRegistry, cfg.tag);
    // Before anything is made: a refused Ensure leaves nothing behind.
    const admission = this.admit(memoryMb);
    const log = this.#log.child({ op: 'ensure', function: req.functionName, owner: req.ownerId });
    const undo = new UndoStack();
    const c = this.client;
    const phase = (name: string, t0: number): void => {
      this.#metrics.observePhase(name, t0);
    };
    let id = '';
    try {
      const image = await this.#images.ensureImage(ref, signal);
      throwIfAborted(signal, 'EnsureContainer');

      // dockerd calls below get no caller signal: each is short, and finishing a started call
      // keeps rollback exact. The caller's cancel is checked between steps.
      let t = performance.now();
      const createdAt = nowSeconds();
      let created = false;
      for (let attempt = 0; attempt < ID_ATTEMPTS && !created; attempt++) {
        id = workerId(cfg.brand, cfg.env, req.functionName);
        const name = id;
        const drop = undo.push(`remove container ${name}`, (s) => removeContainer(c, name, s).then(() => undefined));
        const body = workerContainerBody({
          id: name,
          image,
          env: req.env,
          memoryMb,
          readonlyRootfs: cfg.workerFs.readonlyRootfs,
          tmpSizeMb: cfg.workerFs.tmpSizeMb,
          network: this.#network,
          labels: { functionName: req.functionName, env: cfg.env, ownerId: req.ownerId, createdAt, memoryMb, image },
        });
        try {
          await createContainer(c, name, body);
          created = true;
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
          drop(); // someone else's container: never remove it
          log.warn({ id: name }, 'worker name clash; retrying with a new suffix');
        }
      }
      if (!created) throw new AgentError('INTERNAL', `could not find a free worker name after ${ID_ATTEMPTS} attempts`);
      const wid = id;
      phase('create', t);
      this.trackNewWorker(
        undo,
        { id: wid, functionName: req.functionName, ownerId: req.ownerId, createdAt, ipAddress: '', memoryMb },
        admission,
      );
      throwIfAborted(signal, 'EnsureContainer');

      t = performance.now();
      await startContainer(c, wid);
      const info = await inspectContainer(c, wid);
      const ip = info?.NetworkSettings.Networks?.[this.#network]?.IPAddress ?? '';
      if (!info || ip === '') {
        const state = info
          ? `${info.State.Status}, exit code ${info.State.ExitCode}${info.State.Error ? `, ${info.State.Error}` : ''}`
          : 'gone';
        throw new AgentError(
          'INTERNAL',
          `worker ${wid} has no address on network ${this.#network} after start (${state}); the function exited or the network is broken`,
        );
      }
      phase('start', t);
      throwIfAborted(signal, 'EnsureContainer');
      undo.clear();
      // An exit event can beat the inspect: only a worker still without a status becomes RUNNING.
      const cur = this.workers.get(wid);
      this.workers.update(wid, { ipAddress: ip, ...(cur?.status === 'UNKNOWN' ? { status: 'RUNNING' as const } : {}) });
      log.info({ id: wid, ip, image, memoryMb }, 'worker started');
      return { id: wid, name: wid, ipAddress: ip, port: WORKER_PORT };
    } catch (err) {
      const failed = await undo.run(log, CLEANUP_DEADLINE_MS);
      const cause = signal.aborted ? abortError(signal, 'EnsureContainer') : err;
      log.warn({ id, err: errorText(cause), rollbackFailures: failed }, 'EnsureContainer failed; rolled back');
      throw cause instanceof AgentError ? cause : new AgentError('INTERNAL', `EnsureContainer failed: ${errorText(cause)}`, { cause });
    } finally {
      admission.release();
    }
  }

  // ---------------------------------------------------------------- destroy

  async destroy(id: string, _opts: CallOptions): Promise<void> {
    // Destroy finishes even if the caller goes away: a half-destroyed worker helps nobody.
    await this.#locks.run(id, undefined, () => this.#destroy(id));
  }

  async #destroy(id: string): Promise<void> {
    const signal = AbortSignal.timeout(CLEANUP_DEADLINE_MS);
    this.#destroying.add(id);
    try {
      if (!this.workers.get(id)) {
        // Not in the table: only remove it if its labels say it is ours (docs/contract.md#rules).
        const info = await inspectContainer(this.client, id, signal);
        if (info && !isManaged(info.Config.Labels ?? {}, this.#config.env)) {
          throw new AgentError('NOT_FOUND', `container ${id} is not managed by this agent`);
        }
      }
      const { existed } = await removeContainer(this.client, id, signal);
      this.workers.delete(id);
      this.#log.info({ id, existed }, 'worker destroyed');
    } finally {
      this.#destroying.delete(id);
    }
  }

  // ---------------------------------------------------------------- pause / resume

  readonly canPause = false;

  pause(id: string, _opts: CallOptions): Promise<void> {
    return Promise.reject(
      new AgentError(
        'UNIMPLEMENTED',
        `PauseContainer is not implemented by the docker runtime (AGENT_RUNTIME=docker); container ${id} keeps running`,
      ),
    );
  }

  resume(id: string, _opts: CallOptions): Promise<void> {
    return Promise.reject(
      new AgentError(
        'UNIMPLEMENTED',
        `ResumeContainer is not implemented by the docker runtime (AGENT_RUNTIME=docker); container ${id} was never paused by it`,
      ),
    );
  }

  // ---------------------------------------------------------------- read side

  async metrics(id: string, { signal }: CallOptions): Promise<WorkerMetrics> {
    const c = this.client;
    const seen = this.workers.get(id)?.oomKills ?? 0;
    const info = await inspectContainer(c, id, signal);
    if (!info) throw new AgentError('NOT_FOUND', `container ${id} not found in dockerd: it was removed; ensure a new one`);
    const collectedAt = nowSeconds();
    if (!info.State.Running) return stoppedMetrics(info, seen, collectedAt);
    const stats = await c.json<DockerStats>({
      method: 'GET',
      path: `/containers/${id}/stats`,
      query: { stream: false, 'one-shot': true },
      signal,
      what: `stats of ${id}`,
    });
    return metricsFromStats(stats, info, seen, collectedAt);
  }

  async ping(opts: CallOptions): Promise<boolean> {
    try {
      await this.client.ping(opts.signal);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.#events.close();
    await this.client.close();
  }

  // ---------------------------------------------------------------- state upkeep

  /** Rebuilds the worker table from one `/containers/json` call with the managed labels. */
  async #resync(): Promise<void> {
    // Only workers known before the list was asked for can be missing from it: one that an
    // Ensure finished meanwhile must not be dropped (docs/go-agent.md#w17).
    const knownBefore = new Set(this.workers.list().map((w) => w.id));
    const summaries = await listManaged(this.client, this.#config.env);
    const seen = new Set<string>();
    for (const s of summaries) {
      const name = (s.Names[0] ?? '').replace(/^\//, '');
      if (this.#destroying.has(name)) continue;
      const w = workerFromSummary(s, this.#config.env, this.#network, this.workers.get(name));
      if (!w) {
        this.#log.warn({ id: s.Id, name }, 'managed container without function/owner labels; not listed');
        continue;
      }
      seen.add(w.id);
      this.workers.put(w);
    }
    for (const w of this.workers.list()) {
      // Keep workers being created right now (their container may not be listed yet).
      if (!seen.has(w.id) && knownBefore.has(w.id) && w.status !== 'UNKNOWN') this.workers.delete(w.id);
    }
  }

  #onEvent(e: DockerEvent): void {
    if (this.#destroying.has(e.name) || !this.workers.get(e.name)) return;
    switch (e.kind) {
      case 'start':
        this.workers.update(e.name, { status: 'RUNNING' });
        break;
      case 'die':
        this.recordExit(e.name, e.exitCode, e.time);
        break;
      case 'oom':
        this.recordOomKill(e.name);
        break;
      case 'pause':
        this.workers.update(e.name, { status: 'PAUSED' });
        break;
      case 'unpause':
        this.workers.update(e.name, { status: 'RUNNING' });
        break;
      case 'destroy':
        // Removed behind the agent's back: it is gone for the gateway too.
        this.workers.delete(e.name);
        this.#log.warn({ id: e.name }, 'worker removed outside the agent');
        break;
    }
  }
}
