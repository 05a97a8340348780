/**
 * Reconciliation: finds what a crash (of the agent, mid-Ensure or mid-Destroy) left half-made
 * and removes it, so that nothing leaks across restarts (reference agent docs/go-agent.md#w5, docs/go-agent.md#w6, docs/go-agent.md#w18).
 *
 * "Ours" is decided only from things that are ours by construction, never from name patterns
 * that another agent on the same host could share:
 *   - containers carrying our labels (created_by, esb_env, kind) in our namespace;
 *   - per-worker directories in our state dir (Ensure creates one before anything else);
 *   - CNI cache entries in our state dir;
 *   - leases labelled com.esb.lease in our namespace;
 *   - temp mounts under <state dir>/image-mounts (image user lookups; start-up only).
 * A worker is live when its container has complete labels and a task that was started
 * (running, paused or exited: an exited worker stays listed as STOPPED until the gateway
 * destroys it). Every other
 * id found above is torn down completely (task, CNI attachment and IP, netns, container,
 * snapshot, files). Ids an RPC is working on are skipped.
 *
 * Then two kinds of debris that a Tasks.Create cut off mid-way (agent SIGKILLed, deadline)
 * leaves inside containerd 1.6 itself, in our namespace: tasks whose container record is gone
 * (they appear after containerd restarts) and `runc init` processes in worker cgroups that no
 * task accounts for. Neither has a container, so the agent only touches such debris when it
 * can attribute the id to one of its own workers: the id has this agent's worker-id prefix
 * AND this agent made it (a state dir entry, a CNI cache entry or a managed container seen in
 * this pass, or an id an earlier pass of this process tore down). A containerd namespace may
 * be shared with other software, and the agent runs as root: a name pattern alone is never
 * enough to kill processes.
 */
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import { errorText } from '../../errors.js';
import { CGROUP_ROOT, killAndRemoveCgroup, listWorkerCgroups, type CgroupDriver } from '../../cgroups/worker-cgroups.js';
import { CREATED_BY, KIND_FUNCTION, LABELS, isManaged, managedFilter } from '../../worker/naming.js';
import type { ContainerdClient } from './client.js';
import { createPlaceholderContainer, deleteContainer, listContainerIds, listContainers } from './containers.js';
import { LEASE_OWNER_LABEL, deleteLease, listLeases } from './leases.js';
import { deleteTask, killAndWait, listTasks } from './tasks.js';
import { KILL_WAIT_MS, teardownWorker, type TeardownDeps } from './teardown.js';
import { listWorkerFileIds } from './worker-files.js';
import { removeStaleMounts } from './rootfs/readonly-mount.js';

export type ReconcileKind =
  'container' | 'task' | 'snapshot' | 'netns' | 'cni_attachment' | 'worker_files' | 'lease' | 'cgroup' | 'temp_file' | 'mount';

export interface ReconcileDeps extends TeardownDeps {
  /** The ENV label value this agent manages. */
  readonly env: string;
  /** Every worker id this agent makes starts with it (`<brand>-<env>-`). */
  readonly idPrefix: string;
  /** Where worker cgroups are (AGENT_CGROUP_DRIVER). */
  readonly cgroupDriver: CgroupDriver;
  /** containerd runtime name (io.containerd.runc.v2), for the placeholder of a stray task. */
  readonly runtimeName: string;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
}

export interface ReconcileOptions {
  /** Ids an RPC is creating or destroying right now: never touched. */
  readonly busy: (id: string) => boolean;
  /**
   * Start-up: also delete the agent's leases and the temp files of interrupted cache writes.
   * Only safe when nothing is in flight: a lease protects an Ensure or pull in progress.
   */
  readonly startup: boolean;
  /**
   * Leases this agent failed to delete (containerd was away): deleted now, and dropped from
   * the set once gone.
   */
  readonly undeletedLeases?: Set<string>;
  /**
   * Ids earlier passes of this process tore down: debris of theirs (a task create that lands
   * late) is still attributable to this agent although their state dir entry is gone.
   */
  readonly tornDown?: ReadonlySet<string>;
  readonly signal: AbortSignal;
}

export interface ReconcileResult {
  readonly removed: Readonly<Record<ReconcileKind, number>>;
  /** Sum of `removed`. */
  readonly total: number;
  /** Ids whose teardown failed (logged); the next reconciliation retries them. */
  readonly failed: readonly string[];
  /** Ids this pass tore down (completely or not). */
  readonly tornDown: readonly string[];
}

/** Teardowns at once: each runs a few CNI plugins and containerd calls. */
const PARALLEL_TEARDOWNS = 4;

export async function reconcile(d: ReconcileDeps, o: ReconcileOptions): Promise<ReconcileResult> {
  const log = d.log.child({ op: 'reconcile' });
  const c = d.client;
  const removed: Record<ReconcileKind, number> = {
    container: 0,
    task: 0,
    snapshot: 0,
    netns: 0,
    cni_attachment: 0,
    worker_files: 0,
    lease: 0,
    cgroup: 0,
    temp_file: 0,
    mount: 0,
  };
  const count = (kind: ReconcileKind, n = 1): void => {
    if (n <= 0) return;
    removed[kind] += n;
    d.metrics.reconcileRemoved.inc({ kind }, n);
  };

  const [containers, tasks, dirIds, cached] = await Promise.all([
    listContainers(c, managedFilter(d.env), { signal: o.signal }),
    listTasks(c, { signal: o.signal }),
    listWorkerFileIds(d.stateDir),
    d.cni.listCachedAttachments(),
  ]);
  // A task still CREATED was never started: the Ensure that made it died before Start.
  const started = new Set(tasks.filter((t) => t.status !== 'CREATED').map((t) => t.id));
  const live = new Set<string>();
  const candidates = new Map<string, string>(); // id → why
  for (const rec of containers) {
    if (!isManaged(rec.labels, d.env)) continue;
    // The IP label is set last by Ensure (after CNI ADD): without it the Ensure never finished.
    const complete =
      rec.labels[LABELS.owner] !== undefined && rec.labels[LABELS.function] !== undefined && (rec.labels[LABELS.ip] ?? '') !== '';
    if (complete && started.has(rec.id)) live.add(rec.id);
    else candidates.set(rec.id, complete ? 'container without a started task' : 'container with incomplete labels');
  }
  for (const id of dirIds) if (!live.has(id) && !candidates.has(id)) candidates.set(id, 'state dir entry without a live worker');
  const cachedIds = new Set(cached.map((a) => a.containerId));
  for (const id of cachedIds) if (!live.has(id) && !candidates.has(id)) candidates.set(id, 'CNI attachment without a live worker');

  // Ids this agent can prove it made (see the module comment); debris is only ever removed for these.
  const attributable = new Set<string>([...dirIds, ...cachedIds, ...candidates.keys(), ...live, ...(o.tornDown ?? [])]);
  const orphans = [...candidates].filter(([id]) => !o.busy(id));
  const failed: string[] = [];
  const queue = [...orphans];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [id, why] = next;
      try {
        const r = await teardownWorker(d, id, o.signal);
        count('container', Number(r.container));
        count('task', Number(r.task));
        count('snapshot', Number(r.snapshot));
        count('netns', Number(r.netns));
        count('worker_files', Number(r.workerFiles));
        count('cni_attachment', Number(cachedIds.has(id)));
        log.warn({ id, why, removed: r, cniAttachment: cachedIds.has(id) }, 'removed a half-made worker');
      } catch (err) {
        failed.push(id);
        log.error({ id, why, err: errorText(err) }, 'could not remove a half-made worker; retried at the next reconciliation');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_TEARDOWNS, orphans.length) }, worker));

  const ours = (id: string): boolean => id.startsWith(d.idPrefix) && attributable.has(id);
  await removeContainerlessDebris(d, o, log, count, failed, ours);

  for (const lease of o.undeletedLeases ?? []) {
    try {
      await deleteLease(c, lease, { signal: o.signal });
      o.undeletedLeases?.delete(lease);
      count('lease');
      log.info({ lease }, 'deleted a lease that could not be deleted while containerd was away');
    } catch (err) {
      log.warn({ lease, err: errorText(err) }, 'still cannot delete a lease; it expires by itself');
    }
  }

  if (o.startup) {
    // Read-only mounts of snapshots an image user lookup had open when the agent died. They
    // pin the snapshot's directories, so they go before anything else could need them gone.
    const mounts = await removeStaleMounts(d.stateDir);
    count('mount', mounts);
    if (mounts > 0) log.warn({ mounts }, 'unmounted image root filesystems an earlier run left mounted');
    const temps = await d.cni.removeStaleTempFiles();
    count('temp_file', temps.length);
    if (temps.length > 0) log.warn({ files: temps }, 'removed temp files of CNI cache writes an earlier run did not finish');

    const leases = await listLeases(c, { signal: o.signal });
    for (const l of leases) {
      if (l.labels[LEASE_OWNER_LABEL] === undefined) continue;
      try {
        await deleteLease(c, l.id, { signal: o.signal });
        count('lease');
        log.warn({ lease: l.id, purpose: l.labels[LEASE_OWNER_LABEL] }, 'removed a lease left by an earlier run');
      } catch (err) {
        log.error({ lease: l.id, err: errorText(err) }, 'could not remove a leftover lease; it expires by itself');
      }
    }
  }
  const total = Object.values(removed).reduce((a, b) => a + b, 0);
  log.info(
    { live: live.size, removed, failed: failed.length, total },
    total > 0 || failed.length > 0 ? 'reconciliation removed leftovers' : 'reconciliation found nothing to remove',
  );
  return { removed, total, failed, tornDown: orphans.map(([id]) => id) };
}

/** Tasks without a container, then worker cgroups without a task or container (see top). */
async function removeContainerlessDebris(
  d: ReconcileDeps,
  o: ReconcileOptions,
  log: ReconcileDeps['log'],
  count: (kind: ReconcileKind, n?: number) => void,
  failed: string[],
  ours: (id: string) => boolean,
): Promise<void> {
  const c = d.client;
  const [all, tasks] = await Promise.all([
    listContainerIds(c, { signal: o.signal }),
    listTasks(c, { signal: o.signal }).then((ts) => ts.map((t) => t.id)),
  ]);
  const containers = new Set(all);
  for (const id of tasks) {
    if (containers.has(id) || o.busy(id)) continue;
    if (!ours(id)) {
      log.debug({ id }, 'a task without a container that this agent cannot attribute to itself; left alone');
      continue;
    }
    try {
      await removeStrayTask(c, d, id, o.signal);
      count('task');
      log.warn({ id }, 'removed a task that had no container (left by an interrupted task create)');
    } catch (err) {
      failed.push(id);
      log.error({ id, err: errorText(err) }, 'could not remove a task without a container');
    }
  }
  const known = new Set([...all, ...tasks]);
  for (const [id, dirs] of await listWorkerCgroups(c.namespace, CGROUP_ROOT, d.cgroupDriver)) {
    if (known.has(id) || o.busy(id)) continue;
    if (!ours(id)) {
      log.debug({ id }, 'a cgroup without a task that this agent cannot attribute to itself; left alone');
      continue;
    }
    try {
      const killed = await killAndRemoveCgroup(dirs);
      count('cgroup');
      log.warn({ id, killedProcesses: killed }, 'removed a worker cgroup that no task accounts for');
    } catch (err) {
      failed.push(id);
      log.error({ id, err: errorText(err) }, 'could not clear a stray worker cgroup');
    }
  }
}

/**
 * containerd finds a task only through its container record (Tasks.Kill/Delete look the
 * container up first), so a task whose record is gone gets a placeholder record for as long as
 * it takes to kill and delete it. The placeholder carries our labels but no owner: should the
 * agent die right here, the next reconciliation removes it as a half-made container.
 */
async function removeStrayTask(
  c: ContainerdClient,
  d: Pick<ReconcileDeps, 'env' | 'runtimeName'>,
  id: string,
  signal: AbortSignal,
): Promise<void> {
  const labels = { [LABELS.createdBy]: CREATED_BY, [LABELS.env]: d.env, [LABELS.kind]: KIND_FUNCTION, 'com.esb.placeholder': 'stray-task' };
  await createPlaceholderContainer(c, { id, labels, runtime: d.runtimeName }, { signal });
  try {
    await killAndWait(c, id, KILL_WAIT_MS, { signal });
    await deleteTask(c, id, { signal });
  } finally {
    await deleteContainer(c, id, { signal });
  }
}
