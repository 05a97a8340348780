/**
 * Tears down everything one worker id can hold, in the reverse order of Ensure: task (SIGKILL,
 * thawed first, waited for), CNI attachment (releases the IP), named netns, container record,
 * snapshot, per-worker files. Every step is idempotent, so the same function serves
 * DestroyContainer, a retry of a failed destroy and start-up reconciliation of half-made
 * workers. It reports which objects existed, for reconciliation's counters.
 */
import { AgentError } from '../../errors.js';
import type { CniNetwork } from '../../cni/network.js';
import { netnsExists, netnsPath, removeNetns } from '../../cni/netns.js';
import type { ContainerdClient } from './client.js';
import { deleteContainer, getContainer, removeSnapshot, snapshotExists } from './containers.js';
import { deleteTask, getTask, killAndWait } from './tasks.js';
import { removeWorkerFiles, workerDirExists } from './worker-files.js';

/** How long a SIGKILLed worker may take to stop before the teardown reports an error. */
export const KILL_WAIT_MS = 10_000;

export interface TeardownDeps {
  readonly client: ContainerdClient;
  readonly cni: CniNetwork;
  readonly snapshotter: string;
  readonly stateDir: string;
}

/** The objects a teardown found and removed. */
export interface TeardownReport {
  task: boolean;
  netns: boolean;
  container: boolean;
  snapshot: boolean;
  workerFiles: boolean;
}

/**
 * Removes worker `id` completely. `netns` is the path from the container label when known
 * (CNI DEL also finds it in its cache). Throws on the first step that fails; what was removed
 * before stays removed, and calling again resumes.
 */
export async function teardownWorker(d: TeardownDeps, id: string, signal: AbortSignal): Promise<TeardownReport> {
  const c = d.client;
  const report: TeardownReport = { task: false, netns: false, container: false, snapshot: false, workerFiles: false };
  report.task = (await getTask(c, id, { signal })) !== undefined;
  if (report.task) {
    const stopped = await killAndWait(c, id, KILL_WAIT_MS, { signal });
    if (!stopped) throw new AgentError('INTERNAL', `worker ${id} did not stop within ${KILL_WAIT_MS} ms of SIGKILL`);
    await deleteTask(c, id, { signal });
  }
  report.netns = await netnsExists(id);
  await d.cni.del({ containerId: id, netns: report.netns ? netnsPath(id) : '' }, { signal });
  await removeNetns(id);
  report.container = (await getContainer(c, id, { signal })) !== undefined;
  if (report.container) await deleteContainer(c, id, { signal });
  report.snapshot = await snapshotExists(c, d.snapshotter, id, { signal });
  if (report.snapshot) await removeSnapshot(c, d.snapshotter, id, { signal });
  report.workerFiles = await workerDirExists(d.stateDir, id);
  await removeWorkerFiles(d.stateDir, id);
  return report;
}
