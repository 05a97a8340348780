/**
 * ContainerdRuntime: the product runtime. It wires the steps together and serialises the
 * state-changing calls per worker; each step lives in its own module:
 *
 *   ensure.ts        EnsureContainer, as named steps with their undo
 *   teardown.ts      DestroyContainer (and reconciliation's) teardown of one worker id
 *   worker-sync.ts   the worker table kept in step with containerd's task events
 *   worker-metrics.ts GetContainerMetrics
 *   reconcile.ts     removal of what a crash or an outage left half-made
 *
 * and every containerd call is a one-call leaf in containers.ts, tasks.ts, leases.ts, image/.
 * Facts: docs/containerd.md.
 */
import { AgentError, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import type { Config } from '../../config/config.js';
import { CniNetwork } from '../../cni/network.js';
import { defaultNetworkName, ensureConflist } from '../../network/default-conflist.js';
import { detectCgroupVersion, type CgroupVersion } from '../../cgroups/version.js';
import { isManaged, workerIdPrefix } from '../../worker/naming.js';
import type { CallOptions, EnsureRequest, Runtime, WorkerInfo, WorkerMetrics } from '../runtime.js';
import { createNetns, removeNetns } from '../../cni/netns.js';
import { TableBackedRuntime } from '../table-runtime.js';
import { KeyedLock } from '../../concurrency/keyed-lock.js';
import { ContainerdClient } from './client.js';
import { getContainer, runcOptions } from './containers.js';
import { CLEANUP_DEADLINE_MS, ensureWorker, type EnsureDeps } from './ensure.js';
import { ImageService } from './image/image-service.js';
import { getTask, pauseTask, requireStatus, resumeTask } from './tasks.js';
import { secureWorkersDir } from './worker-files.js';
import { reconcile, type ReconcileResult } from './reconcile.js';
import { teardownWorker } from './teardown.js';
import { LastUsedFile } from '../last-used-file.js';
import { WorkerLogCap } from './worker-log-cap.js';
import { readWorkerMetrics } from './worker-metrics.js';
import { WorkerSync, statusOf } from './worker-sync.js';
import { createWorkerFirewall } from '../../netfilter/index.js';
import type { WorkerFirewall } from '../../netfilter/firewall.js';
import { networkFromConflist } from '../../netfilter/network.js';
import { ImageUsers } from './image-user.js';
import { RegistryHosts } from '../../registry/registry-hosts.js';

export interface ContainerdRuntimeDeps {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /**
   * How Ensure makes and (on rollback) removes a worker's named netns. Default: `ip netns`
   * (cni/netns.ts), which needs root. Tests without root inject a fake.
   */
  readonly netns?: { create(name: string): Promise<string>; remove(name: string): Promise<void> } | undefined;
}

/** Pause between the two start-up reconciliation passes after a crash. */
const RECONCILE_SETTLE_MS = 3000;
/** How many torn-down ids reconciliation remembers for attributing late debris. */
const TORN_DOWN_MEMORY = 1024;

export class ContainerdRuntime extends TableBackedRuntime implements Runtime {
  readonly kind = 'containerd' as const;
  readonly canPause = true;
  readonly client: ContainerdClient;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #metrics: AgentMetrics;
  readonly #images: ImageService;
  readonly #cni: CniNetwork;
  readonly #sync: WorkerSync;
  readonly #ensureDeps: EnsureDeps;
  /** Ids being destroyed: their events no longer resurrect them. */
  readonly #destroying = new Set<string>();
  /** Ids an Ensure is building or rolling back: reconciliation leaves them alone. */
  readonly #creating = new Set<string>();
  /** last_used_at of every worker, kept across restarts. */
  readonly #lastUsed: LastUsedFile;
  /** Saved last_used_at times, read at start(). */
  #savedLastUsed = new Map<string, number>();
  /** The runc shim's options (systemd cgroups, another runtime binary); undefined = the shim's defaults. */
  readonly #runtimeOptions: ReturnType<typeof runcOptions>;
  /** The host's cgroup hierarchy, read once: parts of the worker spec differ between v1 and v2. */
  readonly #cgroupVersion: CgroupVersion = detectCgroupVersion();
  /** Ids reconciliation tore down lately (bounded): their late debris is still ours. */
  readonly #tornDown = new Set<string>();
  /** Ensure leases whose deletion failed (containerd away); reconciliation retries them. */
  readonly #undeletedLeases = new Set<string>();
  /** Serialises state-changing calls per worker (destroy vs pause vs resume). */
  readonly #locks = new KeyedLock();
  /** Rotates worker logs over AGENT_WORKER_LOG_MAX_BYTES; runs between start() and close(). */
  #logCap: WorkerLogCap | undefined;
  /** undefined when AGENT_WORKER_FIREWALL=false. */
  readonly #firewall: WorkerFirewall | undefined;
  /** Image USER → numeric ids, read inside the image; cached per (chain id, USER). */
  readonly users: ImageUsers;
  readonly #netns: NonNullable<ContainerdRuntimeDeps['netns']>;

  constructor(config: Config, deps: ContainerdRuntimeDeps) {
    super({ log: deps.log.child({ module: 'containerd' }), metrics: deps.metrics, limits: config.limits });
    this.#config = config;
    this.#log = deps.log.child({ module: 'containerd' });
    this.#metrics = deps.metrics;
    this.#netns = deps.netns ?? { create: createNetns, remove: removeNetns };
    this.client = new ContainerdClient({ socket: config.containerd.socket, namespace: config.containerd.namespace });
    this.#runtimeOptions = runcOptions(this.client, config.containerd);
    this.#images = new ImageService({
      client: this.client,
      snapshotter: config.containerd.snapshotter,
      registry: {
        hosts: new RegistryHosts({ allowed: config.registry.allowed, insecure: config.registry.insecure }),
        caFile: config.registry.caFile,
        dockerConfigDir: config.registry.dockerConfigDir,
      },
      pullPolicy: config.pullPolicy,
      bounds: config.images,
      log: deps.log,
      metrics: deps.metrics,
    });
    this.#cni = new CniNetwork({
      confFile: config.cni.confFile,
      binDirs: config.cni.binDirs,
      cacheDir: `${config.stateDir}/cni-cache`,
      log: deps.log,
      metrics: deps.metrics,
    });
    this.#firewall = createWorkerFirewall(config, config.cni.dnsServer, deps);
    this.users = new ImageUsers({ stateDir: config.stateDir, log: this.#log });
    this.#lastUsed = new LastUsedFile(config.stateDir, this.#log, () => new Map(this.workers.list().map((w) => [w.id, w.lastUsedAt])));
    this.#sync = new WorkerSync({
      client: this.client,
      env: config.env,
      log: this.#log,
      workers: this.workers,
      destroying: (id) => this.#destroying.has(id),
      recordExit: (id, exitCode, exitTime) => {
        this.recordExit(id, exitCode, exitTime);
      },
      recordOomKill: (id) => this.recordOomKill(id),
      savedLastUsed: () => this.#savedLastUsed,
      reconcile: () => this.reconcile({ startup: false }),
    });
    this.#ensureDeps = {
      config,
      client: this.client,
      images: this.#images,
      cni: this.#cni,
      firewall: this.#firewall,
      users: this.users,
      netns: this.#netns,
      runtimeOptions: this.#runtimeOptions,
      cgroupVersion: this.#cgroupVersion,
      log: this.#log,
      metrics: this.#metrics,
      workers: this.workers,
      creating: this.#creating,
      undeletedLeases: this.#undeletedLeases,
      admit: (memoryMb) => this.admit(memoryMb),
      trackNewWorker: (undo, w, reservation) => {
        this.trackNewWorker(undo, w, reservation);
      },
    };
  }

  /** The image service (also used by `esb-agent import`). */
  get images(): ImageService {
    return this.#images;
  }

  async start(): Promise<void> {
    await this.client.waitForReady(10_000);
    const v = await this.client.getVersion();
    const created = await this.client.ensureNamespace();
    this.#log.info(
      {
        containerdVersion: v.version,
        revision: v.revision,
        namespace: this.client.namespace,
        namespaceCreated: created,
        socket: this.client.socket,
      },
      'connected to containerd',
    );
    const wrote = await ensureConflist({ ...this.#config.cni, name: defaultNetworkName(this.#config.brand) }, {});
    if (wrote) this.#log.info({ confFile: this.#config.cni.confFile }, 'generated the default CNI network config');
    await this.#cni.load();
    await secureWorkersDir(this.#config.stateDir);
    // Before any worker can start: a conflist with the bridge plugin names its bridge, so the
    // chains are checked (and repaired) now. Other conflists are covered at their first ADD.
    const known = this.#firewall ? networkFromConflist(this.#cni.list) : undefined;
    if (known) await this.#firewall?.ensure(known);
    // Before the table is built and before any RPC: nothing is in flight, so every half-made
    // worker and every lease of ours is a leftover of an earlier run.
    const first = await this.reconcile({ startup: true });
    if (first.total > 0) {
      // There was a crash. Calls the dead agent had in flight may still be finishing inside
      // containerd (a task create, say); let them land, then sweep once more.
      await new Promise((r) => setTimeout(r, RECONCILE_SETTLE_MS));
      await this.reconcile({ startup: false });
    }
    this.#savedLastUsed = await this.#lastUsed.load();
    await this.#sync.start();
    this.#lastUsed.start();
    this.#log.info({ workers: this.workers.size, network: this.#cni.name }, 'worker table rebuilt from containerd');
    this.#logCap = new WorkerLogCap({
      stateDir: this.#config.stateDir,
      maxBytes: this.#config.workerLogMaxBytes,
      log: this.#log,
      onRotate: () => {
        this.#metrics.workerLogRotations.inc();
      },
    });
    this.#logCap.start();
  }

  // ---------------------------------------------------------------- ensure

  async ensure(req: EnsureRequest, { signal }: CallOptions): Promise<WorkerInfo> {
    return ensureWorker(this.#ensureDeps, req, signal);
  }

  // ---------------------------------------------------------------- destroy

  async destroy(id: string, _opts: CallOptions): Promise<void> {
    // Destroy finishes even if the caller goes away: a half-destroyed worker helps nobody.
    await this.#locks.run(id, undefined, () => this.#destroy(id));
  }

  async #destroy(id: string): Promise<void> {
    const c = this.client;
    const cfg = this.#config;
    const signal = AbortSignal.timeout(CLEANUP_DEADLINE_MS);
    this.#destroying.add(id);
    try {
      const rec = await getContainer(c, id, { signal });
      if (rec && !isManaged(rec.labels, cfg.env)) {
        // Never touch what is not ours (docs/contract.md#rules).
        throw new AgentError('NOT_FOUND', `container ${id} is not managed by this agent`);
      }
      await teardownWorker(this.#teardownDeps(), id, signal);
      this.workers.delete(id);
      this.#log.info({ id, existed: rec !== undefined }, 'worker destroyed');
    } finally {
      this.#destroying.delete(id);
    }
  }

  // ---------------------------------------------------------------- pause / resume

  async pause(id: string, { signal }: CallOptions): Promise<void> {
    await this.#locks.run(id, undefined, async () => {
      const p = requireStatus(id, await getTask(this.client, id, { signal }), ['RUNNING', 'PAUSED', 'PAUSING'], 'pause');
      if (p.status === 'RUNNING') await this.#transition(id, 'pause', 'PAUSED', () => pauseTask(this.client, id, { signal }), signal);
      this.workers.update(id, { status: 'PAUSED' });
    });
  }

  async resume(id: string, { signal }: CallOptions): Promise<void> {
    await this.#locks.run(id, undefined, async () => {
      const p = requireStatus(id, await getTask(this.client, id, { signal }), ['RUNNING', 'PAUSED', 'PAUSING'], 'resume');
      if (p.status !== 'RUNNING') await this.#transition(id, 'resume', 'RUNNING', () => resumeTask(this.client, id, { signal }), signal);
      this.workers.update(id, { status: 'RUNNING' });
      this.workers.touch(id);
    });
  }

  /**
   * One Pause or Resume under the idempotent contract. A failed call is judged by the task's
   * state read afterwards: the target reached (a concurrent call did it) is success; a stopped
   * task answers FAILED_PRECONDITION saying so; a task still short of the target is tried once
   * more (runc's freezer write can fail transiently while the worker forks), then containerd's
   * own error is the answer, never a bare "it is running" that hides why.
   */
  async #transition(
    id: string,
    action: 'pause' | 'resume',
    target: 'PAUSED' | 'RUNNING',
    call: () => Promise<void>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await call();
        return;
      } catch (err) {
        if (signal?.aborted) throw err;
        const now = await getTask(this.client, id, { signal });
        if (statusOf(now) === target) return;
        requireStatus(id, now, ['RUNNING', 'PAUSED', 'PAUSING'], action);
        if (attempt >= 2) throw err;
        this.#log.warn(
          { id, action, err: errorText(err) },
          `${action} failed with the task still ${statusOf(now).toLowerCase()}: trying once more`,
        );
      }
    }
  }

  // ---------------------------------------------------------------- read side

  async metrics(id: string, { signal }: CallOptions): Promise<WorkerMetrics> {
    return readWorkerMetrics({ client: this.client, workers: this.workers }, id, signal);
  }

  async ping(opts: CallOptions): Promise<boolean> {
    try {
      await this.client.getVersion({ signal: opts.signal, deadlineMs: 2000 });
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.#logCap?.stop();
    await this.#lastUsed.close();
    this.#sync.close();
    this.client.close();
  }

  // ---------------------------------------------------------------- state upkeep

  #teardownDeps(): { client: ContainerdClient; cni: CniNetwork; snapshotter: string; stateDir: string } {
    return { client: this.client, cni: this.#cni, snapshotter: this.#config.containerd.snapshotter, stateDir: this.#config.stateDir };
  }

  /**
   * Removes half-made workers (see reconcile.ts). Runs at start-up (with `leases`) and after
   * every reconnection to containerd: an Ensure or Destroy cut off by an outage could not
   * finish its rollback. Ids an RPC is working on are skipped.
   */
  async reconcile(opts: { startup: boolean }): Promise<ReconcileResult> {
    const cfg = this.#config;
    const result = await reconcile(
      {
        ...this.#teardownDeps(),
        env: cfg.env,
        cgroupDriver: cfg.containerd.cgroupDriver,
        idPrefix: workerIdPrefix(cfg.brand, cfg.env),
        runtimeName: cfg.containerd.runtime,
        log: this.#log,
        metrics: this.#metrics,
      },
      {
        startup: opts.startup,
        undeletedLeases: this.#undeletedLeases,
        tornDown: this.#tornDown,
        busy: (id) => this.#creating.has(id) || this.#destroying.has(id) || this.#locks.has(id),
        signal: AbortSignal.timeout(CLEANUP_DEADLINE_MS),
      },
    );
    for (const id of result.tornDown) {
      this.#tornDown.delete(id);
      this.#tornDown.add(id);
    }
    // Oldest first out: only the debris of recent teardowns can still turn up.
    for (const id of this.#tornDown) {
      if (this.#tornDown.size <= TORN_DOWN_MEMORY) break;
      this.#tornDown.delete(id);
    }
    return result;
  }
}
