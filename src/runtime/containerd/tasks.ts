/**
 * Tasks (the running process tree of a container): one containerd call per function, plus the
 * kill-then-wait that every teardown needs. Facts: docs/containerd.md#tasks.
 */
import { AgentError, isNotFound } from '../../errors.js';
import type { Process__Output } from '../../gen/containerd/containerd/v1/types/Process.js';
import type { Metric__Output } from '../../gen/containerd/containerd/types/Metric.js';
import type { ContainerdClient, RequestOptions } from './client.js';
import type { Mount } from './containers.js';

export type TaskProcess = Process__Output;
const SIGKILL = 9;

export interface NewTask {
  readonly containerId: string;
  readonly rootfs: readonly Mount[];
  /** `file:///abs/path` or `binary:///abs/path?k=v`: where the shim sends stdout+stderr. */
  readonly stdout: string;
}

/**
 * Creates the task (runc init waits, namespaces made; nothing of the image runs yet). The
 * rootfs mounts are always passed: without them a failed create leaves a bundle dir that
 * blocks the id for good (docs/containerd.md#task-create).
 */
export async function createTask(c: ContainerdClient, t: NewTask, opts: RequestOptions): Promise<number> {
  const res = await c.call(
    'tasks',
    'Create',
    {
      container_id: t.containerId,
      rootfs: t.rootfs.map((m) => ({ type: m.type, source: m.source, options: m.options, target: '' })),
      stdin: '',
      stdout: t.stdout,
      stderr: t.stdout,
      terminal: false,
    },
    { ...opts, what: `create task ${t.containerId}` },
  );
  return res.pid;
}

export async function startTask(c: ContainerdClient, id: string, opts: RequestOptions): Promise<number> {
  const res = await c.call('tasks', 'Start', { container_id: id, exec_id: '' }, { ...opts, what: `start task ${id}` });
  return res.pid;
}

/** The task's process, or undefined when the container has no task. */
export async function getTask(c: ContainerdClient, id: string, opts: RequestOptions): Promise<TaskProcess | undefined> {
  try {
    const res = await c.call('tasks', 'Get', { container_id: id, exec_id: '' }, { ...opts, what: `get task ${id}` });
    return res.process ?? undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Every task in the namespace (with or without a container record). */
export async function listTasks(c: ContainerdClient, opts: RequestOptions): Promise<TaskProcess[]> {
  const res = await c.call('tasks', 'List', { filter: '' }, { ...opts, what: 'list tasks' });
  return res.tasks;
}

/**
 * The task's cgroup sample as a packed Any (decode with client.decodeAny), or undefined when
 * the shim returned none (its cgroup is gone: the task has ended).
 */
export async function taskMetrics(c: ContainerdClient, id: string, opts: RequestOptions): Promise<Metric__Output['data'] | undefined> {
  const res = await c.call('tasks', 'Metrics', { filters: [`id==${id}`] }, { ...opts, what: `metrics of ${id}` });
  return res.metrics[0]?.data ?? undefined;
}

export async function pauseTask(c: ContainerdClient, id: string, opts: RequestOptions): Promise<void> {
  await c.call('tasks', 'Pause', { container_id: id }, { ...opts, what: `pause task ${id}` });
}

export async function resumeTask(c: ContainerdClient, id: string, opts: RequestOptions): Promise<void> {
  await c.call('tasks', 'Resume', { container_id: id }, { ...opts, what: `resume task ${id}` });
}

/** Deletes a stopped (or never started) task; already gone counts as deleted. */
export async function deleteTask(c: ContainerdClient, id: string, opts: RequestOptions): Promise<void> {
  try {
    await c.call('tasks', 'Delete', { container_id: id }, { ...opts, what: `delete task ${id}` });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/**
 * SIGKILLs every process of the task and waits until it has stopped, at most `timeoutMs`.
 * `Kill{all}` also thaws a paused task (runc kill --all); a Resume after it covers kernels
 * where a frozen task keeps the signal pending (docs/containerd.md#pause-resume). Waiting polls
 * Tasks.Get instead of holding Tasks.Wait: Wait past a deadline answers UNKNOWN (§1.3) and
 * a cancelled Wait leaves nothing to learn. Returns false if the task is still not stopped.
 */
export async function killAndWait(c: ContainerdClient, id: string, timeoutMs: number, opts: RequestOptions): Promise<boolean> {
  try {
    await c.call('tasks', 'Kill', { container_id: id, exec_id: '', signal: SIGKILL, all: true }, { ...opts, what: `kill task ${id}` });
  } catch (err) {
    // NOT_FOUND: no task or "process already finished".
    if (!isNotFound(err)) throw err;
  }
  await c.call('tasks', 'Resume', { container_id: id }, { ...opts, what: `resume task ${id}` }).catch(() => undefined);
  const end = Date.now() + timeoutMs;
  let delay = 5;
  for (;;) {
    const p = await getTask(c, id, opts);
    if (!p || p.status === 'STOPPED') return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 100);
  }
}

/** Throws FAILED_PRECONDITION with a clear text when a task is not in one of `allowed`. */
export function requireStatus(id: string, p: TaskProcess | undefined, allowed: readonly string[], action: string): TaskProcess {
  if (!p) throw new AgentError('FAILED_PRECONDITION', `cannot ${action} worker ${id}: it has no running task (it is stopped)`);
  if (!allowed.includes(p.status))
    throw new AgentError('FAILED_PRECONDITION', `cannot ${action} worker ${id}: it is ${p.status.toLowerCase()}`);
  return p;
}
