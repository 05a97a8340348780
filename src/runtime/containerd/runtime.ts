/**
 * ContainerdRuntime: the product runtime. It owns the order of operations; each step is a
 * one-call leaf in containers.ts, tasks.ts, leases.ts, image/, cni/. Ensure:
 *
 *   image (pull/unpack) → id (state dir entry) → snapshot → netns → worker files
 *   → container record → [task create ∥ CNI ADD] → hosts entry → [IP label ∥ task start]
 *   → worker table
 *
 * Every created object registers its undo before it is made; any failure or cancel undoes in
 * reverse on a detached deadline. CNI ADD happens before the function's process starts (docs/go-agent.md#w3),
 * on a named netns that outlives the task (docs/go-agent.md#w4), and the IP comes from the ADD result, kept in
 * a container label (docs/go-agent.md#w1). Facts: docs/containerd.md.
 */
import { AgentError, abortError, errorText, hasCode, isAlreadyExists, throwIfAborted } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import type { Config } from '../../config/config.js';
import { CniNetwork } from '../../cni/network.js';
import { defaultNetworkName, ensureConflist } from '../../cni/conflist.js';
import { containerIpv4 } from '../../cni/result.js';
import { createNetns, removeNetns } from '../../cni/netns.js';
import { decodeCgroupMetrics } from '../../cgroups/metrics.js';
import { detectCgroupVersion, type CgroupVersion } from '../../cgroups/version.js';
import { LABELS, isManaged, managedFilter, workerId, workerIdPrefix, workerLabels } from '../naming.js';
import { WORKER_PORT, type CallOptions, type EnsureRequest, type Runtime, type WorkerInfo, type WorkerMetrics, type WorkerState, type WorkerStatus } from '../runtime.js';
import { TableBackedRuntime } from '../table-runtime.js';
import { KeyedLock } from '../../keyed-lock.js';
import { memoryMbFor } from '../limits.js';
import { ContainerdClient } from './client.js';
import { createContainer, runcOptions, deleteContainer, listContainers, prepareSnapshot, removeSnapshot, setContainerLabel, timestampSeconds, type ContainerRecord } from './containers.js';
import { EventWatcher, type TaskEvent } from './events.js';
import { ImageService } from './image/image-service.js';
import { requestedImageRef } from './image/reference.js';
import { createLease, deleteLease } from './leases.js';
import { buildWorkerSpec } from './spec/spec.js';
import { createTask, deleteTask, getTask, killAndWait, pauseTask, requireStatus, resumeTask, startTask, type TaskProcess } from './tasks.js';
import { UndoStack } from '../undo.js';
import { nowSeconds } from '../workers.js';
import { addHostsEntry, createWorkerDir, removeWorkerFiles, secureWorkersDir, writeWorkerFiles } from './worker-files.js';
import { reconcile, type ReconcileResult } from './reconcile.js';
import { KILL_WAIT_MS, teardownWorker } from './teardown.js';
import { LastUsedFile } from '../last-used-file.js';
import { WorkerLogCap } from './worker-log-cap.js';
import { createWorkerFirewall } from '../../netfilter/index.js';
import type { WorkerFirewall } from '../../netfilter/firewall.js';
import { networkFromConflist, networkFromResult } from '../../netfilter/network.js';
import { ImageUsers } from './image-user.js';
import { RegistryHosts } from './image/registry-hosts.js';

export interface ContainerdRuntimeDeps {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /**
   * How Ensure makes and (on rollback) removes a worker's named netns. Default: `ip netns`
   * (cni/netns.ts), which needs root. Tests without root inject a fake.
   */
  readonly netns?: { create(name: string): Promise<string>; remove(name: string): Promise<void> } | undefined;
}

/** Rollback and destroy run on their own clock, whatever the caller's deadline was. */
const CLEANUP_DEADLINE_MS = 60_000;
/** A lease protects a new snapshot until the container record roots it. */
const ENSURE_LEASE_TTL_MS = 15 * 60_000;
/** Pause between the two start-up reconciliation passes after a crash. */
const RECONCILE_SETTLE_MS = 3000;
/** How many torn-down ids reconciliation remembers for attributing late debris. */
const TORN_DOWN_MEMORY = 1024;
/** Attempts at a fresh id suffix when one clashes with an existing worker. */
const ID_ATTEMPTS = 5;

function statusOf(p: TaskProcess | undefined): WorkerStatus {
  switch (p?.status) {
    case undefined:
    case 'STOPPED':
      return 'STOPPED';
    case 'RUNNING':
      return 'RUNNING';
    case 'PAUSED':
    case 'PAUSING':
      return 'PAUSED';
    default:
      return 'UNKNOWN';
  }
}

export class ContainerdRuntime extends TableBackedRuntime implements Runtime {
  readonly kind = 'containerd' as const;
  readonly canPause = true;
  readonly client: ContainerdClient;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #metrics: AgentMetrics;
  readonly #images: ImageService;
  readonly #cni: CniNetwork;
  readonly #events: EventWatcher;
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
  /** Event-stream (re)subscriptions so far: every one after the first follows an outage. */
  #subscriptions = 0;
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
    this.#events = new EventWatcher({
      client: this.client,
      log: this.#log,
      onEvent: (e) => {
        this.#onTaskEvent(e);
      },
      onResync: () => this.#onSubscribed(),
    });
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
      { containerdVersion: v.version, revision: v.revision, namespace: this.client.namespace, namespaceCreated: created, socket: this.client.socket },
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
    await this.#events.start();
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
    const cfg = this.#config;
    const memoryMb = memoryMbFor(req.env, cfg.defaultMemoryMb);
    const ref = requestedImageRef(req.image, req.functionName, cfg.registry.defaultRegistry, cfg.tag);
    // Before anything is made: a refused Ensure leaves nothing behind.
    const admission = this.admit(memoryMb);
    const envList = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
    const log = this.#log.child({ op: 'ensure', function: req.functionName, owner: req.ownerId });
    const undo = new UndoStack();
    const c = this.client;
    const sn = cfg.containerd.snapshotter;
    const phase = (name: string, t0: number): void => {
      this.#metrics.observePhase(name, t0);
    };
    let id = '';
    try {
      // The image service records its own pull/unpack phases.
      const image = await this.#images.ensureImage(ref, { signal });
      throwIfAborted(signal, 'EnsureContainer');

      // containerd calls below get no caller signal: each is short, and finishing a started
      // call keeps rollback exact. The caller's cancel is checked between steps.
      let t = performance.now();
      const lease = await createLease(c, 'ensure', ENSURE_LEASE_TTL_MS, {});
      undo.push('delete lease', () => deleteLease(c, lease, {}));
      let mounts: Awaited<ReturnType<typeof prepareSnapshot>> | undefined;
      for (let attempt = 0; attempt < ID_ATTEMPTS && !mounts; attempt++) {
        const candidate = workerId(cfg.brand, cfg.env, req.functionName);
        // The state dir entry comes first: it marks everything made under this id as ours for
        // reconciliation, and an existing one is a clash.
        try {
          await createWorkerDir(cfg.stateDir, candidate);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          log.warn({ id: candidate }, 'worker id clash in the state dir; retrying with a new suffix');
          continue;
        }
        id = candidate;
        this.#creating.add(candidate);
        const dropFiles = undo.push('remove worker files', () => removeWorkerFiles(cfg.stateDir, candidate));
        const dropSnapshot = undo.push(`remove snapshot ${candidate}`, (s) => removeSnapshot(c, sn, candidate, { signal: s }));
        try {
          mounts = await prepareSnapshot(c, sn, candidate, image.chainId, { lease });
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
          // Someone else's snapshot: never remove it, and give up the id at once so that no
          // state dir entry ever claims it.
          dropSnapshot();
          dropFiles();
          await removeWorkerFiles(cfg.stateDir, candidate);
          this.#creating.delete(candidate);
          log.warn({ id: candidate }, 'worker id clash; retrying with a new suffix');
        }
      }
      if (!mounts) throw new AgentError('INTERNAL', `could not find a free worker id after ${ID_ATTEMPTS} attempts`);
      const wid = id;
      phase('snapshot', t);
      throwIfAborted(signal, 'EnsureContainer');

      // Network and container are built side by side. The netns must exist before runc
      // creates the task (the task joins it), but CNI ADD only has to finish before Start runs
      // the function's process (docs/go-agent.md#w3): the ADD runs alongside container + task create.
      t = performance.now();
      undo.push(`remove netns ${wid}`, () => this.#netns.remove(wid));
      const [nsR, userR] = await Promise.allSettled([this.#netns.create(wid), this.users.resolve(image, image.config.config?.User, mounts)]);
      if (nsR.status === 'rejected') throw nsR.reason;
      if (userR.status === 'rejected') throw userR.reason;
      const netnsPath = nsR.value;
      const user = userR.value;
      phase('netns', t);
      throwIfAborted(signal, 'EnsureContainer');

      // CNI ADD starts once Tasks.Create is on the wire: the plugins are processes, and each
      // spawn stalls this event loop for milliseconds, which must not hold back the longest
      // step (the task create inside containerd). A container step that fails first means
      // the network is never attached.
      let openGate!: (run: boolean) => void;
      const gate = new Promise<boolean>((r) => (openGate = r));
      const network = gate.then(async (run) => {
        if (!run) return undefined;
        const tNet = performance.now();
        undo.push(`CNI DEL ${wid}`, (s) => this.#cni.del({ containerId: wid, netns: netnsPath }, { signal: s }));
        const result = await this.#cni.add({ containerId: wid, netns: netnsPath }, { signal });
        // The worker's process starts only after this: its bridge must be firewalled by then.
        // Cached per bridge, so this runs iptables once per network and process.
        if (this.#firewall) await this.#firewall.ensure(await networkFromResult(result, this.#cni.name));
        phase('network', tNet);
        return containerIpv4(result, this.#cni.ifName);
      });
      const createdAt = nowSeconds();
      const hostname = wid.slice(0, 63);
      const container = (async () => {
        try {
          let tc = performance.now();
          const files = await writeWorkerFiles(cfg.stateDir, wid, cfg.cni.dnsServer);
          const spec = buildWorkerSpec({
            namespace: c.namespace,
            id: wid,
            image: image.config.config ?? {},
            user,
            env: envList,
            memoryMb,
            cgroupVersion: this.#cgroupVersion,
            cgroupDriver: cfg.containerd.cgroupDriver,
            readonlyRootfs: cfg.workerFs.readonlyRootfs,
            tmpSizeMb: cfg.workerFs.tmpSizeMb,
            netnsPath,
            resolvConfPath: files.resolvConf,
            hostsPath: files.hosts,
            hostname: wid,
          });
          // The IP label is set once CNI ADD has answered; reconciliation treats a record
          // without it as half-made.
          const labels = workerLabels({
            functionName: req.functionName,
            env: cfg.env,
            ownerId: req.ownerId,
            createdAt,
            ip: '',
            netns: netnsPath,
            cniNetwork: this.#cni.name,
            memoryMb,
            image: image.name,
          });
          undo.push(`delete container ${wid}`, (s) => deleteContainer(c, wid, { signal: s }));
          await createContainer(c, { id: wid, labels, image: image.name, runtime: cfg.containerd.runtime, runtimeOptions: this.#runtimeOptions, spec, snapshotter: sn, snapshotKey: wid }, { lease });
          phase('create', tc);
          throwIfAborted(signal, 'EnsureContainer');
          tc = performance.now();
          undo.push(`delete task ${wid}`, async (s) => {
            await killAndWait(c, wid, KILL_WAIT_MS, { signal: s });
            await deleteTask(c, wid, { signal: s });
          });
          const taskCreated = createTask(c, { containerId: wid, rootfs: mounts, stdout: `file://${files.log}` }, {});
          openGate(true);
          await taskCreated;
          phase('task_create', tc);
          return files;
        } finally {
          openGate(false); // no effect once open
        }
      })();
      // Both must settle before going on or rolling back: undoing while the other branch
      // still runs would race CNI DEL against ADD (a leaked IP) or a delete against a create.
      const [ipR, filesR] = await Promise.allSettled([network, container]);
      if (ipR.status === 'rejected') throw ipR.reason;
      if (filesR.status === 'rejected') throw filesR.reason;
      const ip = ipR.value;
      if (ip === undefined) throw new AgentError('INTERNAL', `EnsureContainer ${wid}: the network was never attached`);
      throwIfAborted(signal, 'EnsureContainer');

      t = performance.now();
      await addHostsEntry(filesR.value, ip, hostname);
      this.trackNewWorker(undo, { id: wid, functionName: req.functionName, ownerId: req.ownerId, createdAt, ipAddress: ip, memoryMb }, admission);
      throwIfAborted(signal, 'EnsureContainer');
      // The label (docs/go-agent.md#w1: the IP survives restarts) and Start are independent; a failure of either
      // rolls back both.
      const [labelR, startR] = await Promise.allSettled([setContainerLabel(c, wid, LABELS.ip, ip, {}), startTask(c, wid, {})]);
      if (labelR.status === 'rejected') throw labelR.reason;
      if (startR.status === 'rejected') throw startR.reason;
      phase('start', t);
      undo.clear();
      // The container record now roots the snapshot; the lease has done its job. Deleted off
      // the reply path: a lease that outlives a crash expires by itself.
      void deleteLease(c, lease, {}).catch((err: unknown) => {
        this.#undeletedLeases.add(lease);
        log.warn({ err, lease }, 'could not delete the ensure lease; retried when containerd is back (or it expires by itself)');
      });
      // The task may already have exited (its exit event can beat Start's reply): only a
      // worker still without a status becomes RUNNING here.
      if (this.workers.get(wid)?.status === 'UNKNOWN') this.workers.update(wid, { status: 'RUNNING' });
      log.info({ id: wid, ip, image: image.name, memoryMb }, 'worker started');
      return { id: wid, name: wid, ipAddress: ip, port: WORKER_PORT };
    } catch (err) {
      const failed = await undo.run(log, CLEANUP_DEADLINE_MS);
      const cause = signal.aborted ? abortError(signal, 'EnsureContainer') : err;
      log.warn({ id, err: errorText(cause), rollbackFailures: failed }, 'EnsureContainer failed; rolled back');
      throw cause instanceof AgentError ? cause : new AgentError('INTERNAL', `EnsureContainer failed: ${errorText(cause)}`, { cause });
    } finally {
      // After a failed rollback whatever is left is reconciliation's (logged above).
      this.#creating.delete(id);
      admission.release();
    }
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
      const rec = await c.call('containers', 'Get', { id }, { signal, what: `get container ${id}` }).then(
        (r) => r.container ?? undefined,
        (err: unknown) => {
          if (hasCode(err, 'NOT_FOUND')) return undefined;
          throw err;
        },
      );
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
  async #transition(id: string, action: 'pause' | 'resume', target: 'PAUSED' | 'RUNNING', call: () => Promise<void>, signal: AbortSignal | undefined): Promise<void> {
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
        this.#log.warn({ id, action, err: errorText(err) }, `${action} failed with the task still ${statusOf(now).toLowerCase()}: trying once more`);
      }
    }
  }

  // ---------------------------------------------------------------- read side

  async metrics(id: string, { signal }: CallOptions): Promise<WorkerMetrics> {
    const known = this.workers.get(id);
    const p = await getTask(this.client, id, { signal });
    const collectedAt = nowSeconds();
    const status = statusOf(p);
    const oomFromEvents = BigInt(known?.oomKills ?? 0);
    if (!p || status === 'STOPPED') return this.#stoppedMetrics(id, p, oomFromEvents, collectedAt, signal);
    const res = await this.client.call('tasks', 'Metrics', { filters: [`id==${id}`] }, { signal, what: `metrics of ${id}` });
    const m = res.metrics[0];
    if (!m?.data) {
      // No sample: the shim could not read the task's cgroup because it is gone, which means
      // the task ended between Get and Metrics. Not UNIMPLEMENTED: the gateway reads that as
      // "this runtime has no metrics".
      const now = await getTask(this.client, id, { signal });
      if (!now || statusOf(now) === 'STOPPED') return this.#stoppedMetrics(id, now, oomFromEvents, nowSeconds(), signal);
      throw new AgentError('UNAVAILABLE', `metrics of worker ${id}: containerd returned no cgroup sample although the task is ${statusOf(now)}; retry`);
    }
    const decoded = this.client.decodeAny(m.data);
    if (!decoded) {
      throw new AgentError('UNIMPLEMENTED', `metrics not implemented for payload type ${m.data.type_url} of worker ${id}`);
    }
    const cg = decodeCgroupMetrics(decoded.type, decoded.value);
    return {
      state: status,
      memoryCurrentBytes: cg.memoryCurrentBytes,
      memoryMaxBytes: cg.memoryMaxBytes,
      oomEvents: cg.oomKills > oomFromEvents ? cg.oomKills : oomFromEvents,
      cpuUsageNs: cg.cpuUsageNs,
      exitCode: 0,
      exitTime: 0,
      collectedAt,
    };
  }

  /** A stopped worker's metrics: no usage, its exit, and the OOM kills seen. */
  async #stoppedMetrics(id: string, p: TaskProcess | undefined, oomFromEvents: bigint, collectedAt: number, signal: AbortSignal): Promise<WorkerMetrics> {
    const known = this.workers.get(id);
    return {
      state: 'STOPPED',
      memoryCurrentBytes: 0n,
      memoryMaxBytes: 0n,
      oomEvents: p ? await this.#stoppedOomKills(id, oomFromEvents, signal) : oomFromEvents,
      cpuUsageNs: 0n,
      exitCode: p ? p.exit_status : (known?.exitCode ?? 0),
      exitTime: p ? timestampSeconds(p.exited_at) : (known?.exitTime ?? 0),
      collectedAt,
    };
  }

  /** The cgroup's OOM counter of a stopped, undeleted task (best effort), or `known`. */
  async #stoppedOomKills(id: string, known: bigint, signal: AbortSignal): Promise<bigint> {
    try {
      const res = await this.client.call('tasks', 'Metrics', { filters: [`id==${id}`] }, { signal, what: `metrics of ${id}` });
      const decoded = this.client.decodeAny(res.metrics[0]?.data);
      if (!decoded) return known;
      const cg = decodeCgroupMetrics(decoded.type, decoded.value);
      return cg.oomKills > known ? cg.oomKills : known;
    } catch {
      return known;
    }
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
    this.#events.close();
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
      { ...this.#teardownDeps(), env: cfg.env, cgroupDriver: cfg.containerd.cgroupDriver, idPrefix: workerIdPrefix(cfg.brand, cfg.env), runtimeName: cfg.containerd.runtime, log: this.#log, metrics: this.#metrics },
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

  /**
   * Called after every event-stream subscription. The first builds the worker table; later
   * ones follow a containerd outage: rebuild the table, then clean up what the outage left.
   */
  async #onSubscribed(): Promise<void> {
    const first = this.#subscriptions++ === 0;
    await this.#resync();
    if (first) return;
    this.#log.info({ workers: this.workers.size }, 'containerd is back; worker table resynced');
    await this.reconcile({ startup: false });
  }

  /** Rebuilds the worker table from containerd: managed containers + their tasks. */
  async #resync(): Promise<void> {
    const c = this.client;
    const [containers, tasks] = await Promise.all([
      listContainers(c, managedFilter(this.#config.env), {}),
      c.call('tasks', 'List', { filter: '' }, { what: 'list tasks' }).then((r) => r.tasks),
    ]);
    const taskById = new Map(tasks.map((t) => [t.id, t]));
    const seen = new Set<string>();
    for (const rec of containers) {
      if (!isManaged(rec.labels, this.#config.env)) continue;
      const w = this.#fromRecord(rec, taskById.get(rec.id));
      if (!w) continue;
      seen.add(w.id);
      this.workers.put(w);
    }
    for (const w of this.workers.list()) {
      // Keep workers being created right now (their container may not be listed yet).
      if (!seen.has(w.id) && w.status !== 'UNKNOWN') this.workers.delete(w.id);
    }
  }

  #fromRecord(rec: ContainerRecord, task: TaskProcess | undefined): WorkerState | undefined {
    const l = rec.labels;
    const functionName = l[LABELS.function];
    const ownerId = l[LABELS.owner];
    if (functionName === undefined || ownerId === undefined) {
      this.#log.warn({ id: rec.id }, 'managed container without function/owner labels; not listed');
      return undefined;
    }
    const prev = this.workers.get(rec.id);
    const createdAt = Number(l[LABELS.createdAt]) || timestampSeconds(rec.created_at);
    return {
      id: rec.id,
      name: rec.id,
      functionName,
      ownerId,
      status: statusOf(task),
      createdAt,
      lastUsedAt: Math.max(prev?.lastUsedAt ?? 0, this.#savedLastUsed.get(rec.id) ?? 0, createdAt),
      // An Ensure in progress sets the IP label last; its table entry already has the IP.
      ipAddress: (l[LABELS.ip] ?? '') !== '' ? (l[LABELS.ip] ?? '') : (prev?.ipAddress ?? ''),
      port: WORKER_PORT,
      exitCode: task?.status === 'STOPPED' ? task.exit_status : (prev?.exitCode ?? 0),
      exitTime: task?.status === 'STOPPED' ? timestampSeconds(task.exited_at) : (prev?.exitTime ?? 0),
      oomKills: Math.max(prev?.oomKills ?? 0, Number(l[LABELS.oomKills]) || 0),
      memoryMb: Number(l[LABELS.memoryMb]) || (prev?.memoryMb ?? 0),
    };
  }

  #onTaskEvent(e: TaskEvent): void {
    if (this.#destroying.has(e.containerId) || !this.workers.get(e.containerId)) return;
    switch (e.kind) {
      case 'start':
        this.workers.update(e.containerId, { status: 'RUNNING' });
        break;
      case 'exit':
        // Only the init process's exit (exec id = container id or empty) stops the worker.
        if (e.execId === '' || e.execId === e.containerId) {
          this.recordExit(e.containerId, e.exitStatus, e.exitedAt);
        }
        break;
      case 'oom': {
        const count = this.recordOomKill(e.containerId);
        // Kept in a label too: the count must survive an agent restart (docs/state-and-labels.md#restart-survival), and on
        // cgroup v2 the cgroup holding the kernel's counter may be gone by then.
        const key = LABELS.oomKills;
        this.client
          .call('containers', 'Update', { container: { id: e.containerId, labels: { [key]: String(count) } }, update_mask: { paths: [`labels.${key}`] } })
          .catch((err: unknown) => {
            this.#log.warn({ err, id: e.containerId }, 'could not record the OOM kill in a label');
          });
        break;
      }
      case 'paused':
        this.workers.update(e.containerId, { status: 'PAUSED' });
        break;
      case 'resumed':
        this.workers.update(e.containerId, { status: 'RUNNING' });
        break;
      case 'delete':
        this.workers.update(e.containerId, { status: 'STOPPED' });
        break;
    }
  }
}
