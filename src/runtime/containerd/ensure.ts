/**
 * EnsureContainer on containerd, as named steps (docs/design.md#ensure):
 *
 *   image (pull/unpack) → lease → claimWorkerId (state dir entry + snapshot)
 *   → prepareNetnsAndUser → createTaskWithNetwork ([container + task create ∥ CNI ADD])
 *   → startWorker (hosts entry, worker table, [IP label ∥ task start])
 *
 * Every created object registers its undo before it is made; any failure or cancel undoes in
 * reverse on a detached deadline. CNI ADD happens before the function's process starts (docs/go-agent.md#w3),
 * on a named netns that outlives the task (docs/go-agent.md#w4), and the IP comes from the ADD result, kept in
 * a container label (docs/go-agent.md#w1). Facts: docs/containerd.md. The steps call only the leaf modules
 * (containers.ts, tasks.ts, leases.ts, cni/, worker-files.ts).
 */
import { AgentError, abortError, errnoCode, errorText, isAlreadyExists, throwIfAborted } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import type { Config } from '../../config/config.js';
import type { CniNetwork } from '../../cni/network.js';
import { containerIpv4 } from '../../cni/result.js';
import type { CgroupVersion } from '../../cgroups/version.js';
import type { WorkerFirewall } from '../../netfilter/firewall.js';
import { networkFromResult } from '../../netfilter/network.js';
import { LABELS, workerId, workerLabels } from '../../worker/naming.js';
import { WORKER_PORT, type EnsureRequest, type WorkerInfo } from '../runtime.js';
import type { Reservation } from '../admission.js';
import { memoryMbFor } from '../../worker/limits.js';
import { UndoStack } from '../undo.js';
import { nowSeconds, type WorkerTable } from '../workers.js';
import type { ContainerdClient } from './client.js';
import {
  createContainer,
  deleteContainer,
  prepareSnapshot,
  removeSnapshot,
  setContainerLabel,
  type Mount,
  type runcOptions,
} from './containers.js';
import type { ImageService, ResolvedImage } from './image/image-service.js';
import { requestedImageRef } from '../../registry/reference.js';
import type { ImageUsers } from './image-user.js';
import { createLease, deleteLease } from './leases.js';
import { buildWorkerSpec } from './spec/spec.js';
import type { OciUser } from './spec/types.js';
import { createTask, deleteTask, killAndWait, startTask } from './tasks.js';
import { KILL_WAIT_MS } from './teardown.js';
import { addHostsEntry, createWorkerDir, removeWorkerFiles, writeWorkerFiles, type WorkerFiles } from './worker-files.js';

/** Rollback runs on its own clock, whatever the caller's deadline was. */
export const CLEANUP_DEADLINE_MS = 60_000;
/** A lease protects a new snapshot until the container record roots it. */
const ENSURE_LEASE_TTL_MS = 15 * 60_000;
/** Attempts at a fresh id suffix when one clashes with an existing worker. */
const ID_ATTEMPTS = 5;

/** What the steps need from the runtime that owns them. */
export interface EnsureDeps {
  readonly config: Config;
  readonly client: ContainerdClient;
  readonly images: ImageService;
  readonly cni: CniNetwork;
  /** undefined when AGENT_WORKER_FIREWALL=false. */
  readonly firewall: WorkerFirewall | undefined;
  readonly users: ImageUsers;
  /** Makes and removes the worker's named netns (ContainerdRuntimeDeps.netns; default `ip netns`). */
  readonly netns: { create(name: string): Promise<string>; remove(name: string): Promise<void> };
  /** The runc shim's options; undefined = the shim's defaults. */
  readonly runtimeOptions: ReturnType<typeof runcOptions>;
  readonly cgroupVersion: CgroupVersion;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly workers: WorkerTable;
  /** Ids an Ensure is building or rolling back: reconciliation leaves them alone. */
  readonly creating: Set<string>;
  /** Ensure leases whose deletion failed (containerd away); reconciliation retries them. */
  readonly undeletedLeases: Set<string>;
  /** Reserves admission for a new worker (RESOURCE_EXHAUSTED when full). */
  readonly admit: (memoryMb: number) => Reservation;
  /** Puts the new worker into the table, hands the reservation over, registers its removal. */
  readonly trackNewWorker: (
    undo: UndoStack,
    w: { id: string; functionName: string; ownerId: string; createdAt: number; ipAddress: string; memoryMb: number },
    reservation: Reservation,
  ) => void;
}

/** One Ensure in progress: what every step reads, and the undo stack they all push to. */
interface Build {
  readonly d: EnsureDeps;
  readonly req: EnsureRequest;
  readonly signal: AbortSignal;
  readonly memoryMb: number;
  readonly log: Logger;
  readonly undo: UndoStack;
  /** The worker id claimed last ('' before any): the finally releases it from `creating`. */
  id: string;
}

function phase(b: Build, name: string, t0: number): void {
  b.d.metrics.observePhase(name, t0);
}

export async function ensureWorker(d: EnsureDeps, req: EnsureRequest, signal: AbortSignal): Promise<WorkerInfo> {
  const cfg = d.config;
  const memoryMb = memoryMbFor(req.env, cfg.defaultMemoryMb);
  const ref = requestedImageRef(req.image, req.functionName, cfg.registry.defaultRegistry, cfg.tag);
  // Before anything is made: a refused Ensure leaves nothing behind.
  const admission = d.admit(memoryMb);
  const log = d.log.child({ op: 'ensure', function: req.functionName, owner: req.ownerId });
  const b: Build = { d, req, signal, memoryMb, log, undo: new UndoStack(), id: '' };
  const c = d.client;
  try {
    // The image service records its own pull/unpack phases.
    const image = await d.images.ensureImage(ref, { signal });
    throwIfAborted(signal, 'EnsureContainer');

    // containerd calls below get no caller signal: each is short, and finishing a started
    // call keeps rollback exact. The caller's cancel is checked between steps.
    let t = performance.now();
    const lease = await createLease(c, 'ensure', ENSURE_LEASE_TTL_MS, {});
    b.undo.push('delete lease', () => deleteLease(c, lease, {}));
    const mounts = await claimWorkerId(b, image, lease);
    const id = b.id;
    phase(b, 'snapshot', t);
    throwIfAborted(signal, 'EnsureContainer');

    t = performance.now();
    const { netnsPath, user } = await prepareNetnsAndUser(b, id, image, mounts);
    phase(b, 'netns', t);
    throwIfAborted(signal, 'EnsureContainer');

    const createdAt = nowSeconds();
    const { ip, files } = await createTaskWithNetwork(b, { id, image, mounts, lease, netnsPath, user, createdAt });
    throwIfAborted(signal, 'EnsureContainer');

    t = performance.now();
    await startWorker(b, { id, ip, files, createdAt }, admission);
    phase(b, 'start', t);
    b.undo.clear();
    // The container record now roots the snapshot; the lease has done its job. Deleted off
    // the reply path: a lease that outlives a crash expires by itself.
    void deleteLease(c, lease, {}).catch((err: unknown) => {
      d.undeletedLeases.add(lease);
      log.warn({ err, lease }, 'could not delete the ensure lease; retried when containerd is back (or it expires by itself)');
    });
    // The task may already have exited (its exit event can beat Start's reply): only a
    // worker still without a status becomes RUNNING here.
    if (d.workers.get(id)?.status === 'UNKNOWN') d.workers.update(id, { status: 'RUNNING' });
    log.info({ id, ip, image: image.name, memoryMb }, 'worker started');
    return { id, name: id, ipAddress: ip, port: WORKER_PORT };
  } catch (err) {
    const failed = await b.undo.run(log, CLEANUP_DEADLINE_MS);
    const cause = signal.aborted ? abortError(signal, 'EnsureContainer') : err;
    log.warn({ id: b.id, err: errorText(cause), rollbackFailures: failed }, 'EnsureContainer failed; rolled back');
    throw cause instanceof AgentError ? cause : new AgentError('INTERNAL', `EnsureContainer failed: ${errorText(cause)}`, { cause });
  } finally {
    // After a failed rollback whatever is left is reconciliation's (logged above).
    d.creating.delete(b.id);
    admission.release();
  }
}

/**
 * Claims a fresh worker id and prepares its snapshot on the image (sets `b.id`). The state
 * dir entry comes first: it marks everything made under this id as ours for reconciliation,
 * and an existing one is a clash. A snapshot that already exists is someone else's: the id
 * is given up and another suffix tried.
 */
async function claimWorkerId(b: Build, image: ResolvedImage, lease: string): Promise<Mount[]> {
  const { d, log, undo } = b;
  const cfg = d.config;
  const c = d.client;
  const sn = cfg.containerd.snapshotter;
  for (let attempt = 0; attempt < ID_ATTEMPTS; attempt++) {
    const candidate = workerId(cfg.brand, cfg.env, b.req.functionName);
    try {
      await createWorkerDir(cfg.stateDir, candidate);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      log.warn({ id: candidate }, 'worker id clash in the state dir; retrying with a new suffix');
      continue;
    }
    b.id = candidate;
    d.creating.add(candidate);
    const dropFiles = undo.push('remove worker files', () => removeWorkerFiles(cfg.stateDir, candidate));
    const dropSnapshot = undo.push(`remove snapshot ${candidate}`, (s) => removeSnapshot(c, sn, candidate, { signal: s }));
    try {
      return await prepareSnapshot(c, sn, candidate, image.chainId, { lease });
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      // Someone else's snapshot: never remove it, and give up the id at once so that no
      // state dir entry ever claims it.
      dropSnapshot();
      dropFiles();
      await removeWorkerFiles(cfg.stateDir, candidate);
      d.creating.delete(candidate);
      log.warn({ id: candidate }, 'worker id clash; retrying with a new suffix');
    }
  }
  throw new AgentError('INTERNAL', `could not find a free worker id after ${ID_ATTEMPTS} attempts`);
}

/**
 * The named netns (the task joins it, so it must exist before Tasks.Create) and the image
 * USER's numeric ids (read from the snapshot), side by side.
 */
async function prepareNetnsAndUser(
  b: Build,
  id: string,
  image: ResolvedImage,
  mounts: Mount[],
): Promise<{ netnsPath: string; user: OciUser }> {
  b.undo.push(`remove netns ${id}`, () => b.d.netns.remove(id));
  const [nsR, userR] = await Promise.allSettled([b.d.netns.create(id), b.d.users.resolve(image, image.config.config?.User, mounts)]);
  if (nsR.status === 'rejected') throw nsR.reason;
  if (userR.status === 'rejected') throw userR.reason;
  return { netnsPath: nsR.value, user: userR.value };
}

interface TaskInputs {
  readonly id: string;
  readonly image: ResolvedImage;
  readonly mounts: Mount[];
  readonly lease: string;
  readonly netnsPath: string;
  readonly user: OciUser;
  readonly createdAt: number;
}

/**
 * Network and container are built side by side. CNI ADD only has to finish before Start runs
 * the function's process (docs/go-agent.md#w3), so it runs alongside container + task create.
 * It starts once Tasks.Create is on the wire: the plugins are processes, and each spawn stalls
 * this event loop for milliseconds, which must not hold back the longest step (the task
 * create inside containerd). A container step that fails first means the network is never
 * attached. Returns the worker's IP and its files.
 */
async function createTaskWithNetwork(b: Build, x: TaskInputs): Promise<{ ip: string; files: WorkerFiles }> {
  let openGate!: (run: boolean) => void;
  const gate = new Promise<boolean>((r) => (openGate = r));
  const network = gate.then((run) => (run ? attachNetwork(b, x.id, x.netnsPath) : undefined));
  const container = (async () => {
    try {
      return await createContainerAndTask(b, x, () => {
        openGate(true);
      });
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
  if (ip === undefined) throw new AgentError('INTERNAL', `EnsureContainer ${x.id}: the network was never attached`);
  return { ip, files: filesR.value };
}

/** CNI ADD on the worker's netns (undo: CNI DEL), its bridge firewalled; returns the IPv4. */
async function attachNetwork(b: Build, id: string, netnsPath: string): Promise<string | undefined> {
  const { d } = b;
  const tNet = performance.now();
  b.undo.push(`CNI DEL ${id}`, (s) => d.cni.del({ containerId: id, netns: netnsPath }, { signal: s }));
  const result = await d.cni.add({ containerId: id, netns: netnsPath }, { signal: b.signal });
  // The worker's process starts only after this: its bridge must be firewalled by then.
  // Cached per bridge, so this runs iptables once per network and process.
  if (d.firewall) await d.firewall.ensure(await networkFromResult(result, d.cni.name));
  phase(b, 'network', tNet);
  return containerIpv4(result, d.cni.ifName);
}

/**
 * Worker files, OCI spec, container record, then Tasks.Create. `onTaskCreateSent` runs once
 * the create is on the wire (it lets CNI ADD start).
 */
async function createContainerAndTask(b: Build, x: TaskInputs, onTaskCreateSent: () => void): Promise<WorkerFiles> {
  const { d, req, undo } = b;
  const cfg = d.config;
  const c = d.client;
  const id = x.id;
  let tc = performance.now();
  const files = await writeWorkerFiles(cfg.stateDir, id, cfg.cni.dnsServer);
  const spec = buildWorkerSpec({
    namespace: c.namespace,
    id,
    image: x.image.config.config ?? {},
    user: x.user,
    env: Object.entries(req.env).map(([k, v]) => `${k}=${v}`),
    memoryMb: b.memoryMb,
    cgroupVersion: d.cgroupVersion,
    cgroupDriver: cfg.containerd.cgroupDriver,
    readonlyRootfs: cfg.workerFs.readonlyRootfs,
    tmpSizeMb: cfg.workerFs.tmpSizeMb,
    netnsPath: x.netnsPath,
    resolvConfPath: files.resolvConf,
    hostsPath: files.hosts,
    hostname: id,
  });
  // The IP label is set once CNI ADD has answered; reconciliation treats a record
  // without it as half-made.
  const labels = workerLabels({
    functionName: req.functionName,
    env: cfg.env,
    ownerId: req.ownerId,
    createdAt: x.createdAt,
    ip: '',
    netns: x.netnsPath,
    cniNetwork: d.cni.name,
    memoryMb: b.memoryMb,
    image: x.image.name,
  });
  undo.push(`delete container ${id}`, (s) => deleteContainer(c, id, { signal: s }));
  const sn = cfg.containerd.snapshotter;
  await createContainer(
    c,
    {
      id,
      labels,
      image: x.image.name,
      runtime: cfg.containerd.runtime,
      runtimeOptions: d.runtimeOptions,
      spec,
      snapshotter: sn,
      snapshotKey: id,
    },
    { lease: x.lease },
  );
  phase(b, 'create', tc);
  throwIfAborted(b.signal, 'EnsureContainer');
  tc = performance.now();
  undo.push(`delete task ${id}`, async (s) => {
    await killAndWait(c, id, KILL_WAIT_MS, { signal: s });
    await deleteTask(c, id, { signal: s });
  });
  const taskCreated = createTask(c, { containerId: id, rootfs: x.mounts, stdout: `file://${files.log}` }, {});
  onTaskCreateSent();
  await taskCreated;
  phase(b, 'task_create', tc);
  return files;
}

/**
 * The hosts entry, the worker table entry (admission handed over), then the IP label and
 * Tasks.Start side by side.
 */
async function startWorker(
  b: Build,
  w: { id: string; ip: string; files: WorkerFiles; createdAt: number },
  admission: Reservation,
): Promise<void> {
  const { d, req } = b;
  const c = d.client;
  await addHostsEntry(w.files, w.ip, w.id);
  d.trackNewWorker(
    b.undo,
    { id: w.id, functionName: req.functionName, ownerId: req.ownerId, createdAt: w.createdAt, ipAddress: w.ip, memoryMb: b.memoryMb },
    admission,
  );
  throwIfAborted(b.signal, 'EnsureContainer');
  // The label (docs/go-agent.md#w1: the IP survives restarts) and Start are independent; a failure of either
  // rolls back both.
  const [labelR, startR] = await Promise.allSettled([setContainerLabel(c, w.id, LABELS.ip, w.ip, {}), startTask(c, w.id, {})]);
  if (labelR.status === 'rejected') throw labelR.reason;
  if (startR.status === 'rejected') throw startR.reason;
}
