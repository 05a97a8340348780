/**
 * Follows containerd's task events for the agent's namespace and hands them on, decoded. Events
 * are live only (no replay): after the stream breaks (containerd restart) it resubscribes with
 * backoff and calls `onResync` so the owner rebuilds its view from Tasks/Containers.List
 * (docs/containerd.md#events). Subscribe has no deadline; closing cancels it.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../log.js';
import type { Envelope__Output } from '../../gen/containerd/containerd/services/events/v1/Envelope.js';
import type { ContainerdClient } from './client.js';
import { timestampSeconds } from './containers.js';

export type TaskEvent =
  | { kind: 'start'; containerId: string; pid: number }
  | { kind: 'exit'; containerId: string; execId: string; exitStatus: number; exitedAt: number }
  | { kind: 'oom'; containerId: string }
  | { kind: 'paused'; containerId: string }
  | { kind: 'resumed'; containerId: string }
  | { kind: 'delete'; containerId: string };

export interface EventWatcherOptions {
  readonly client: ContainerdClient;
  readonly log: Logger;
  readonly onEvent: (e: TaskEvent) => void;
  /** Called after every (re)subscription, once the stream is open: rebuild state then. */
  readonly onResync: () => Promise<void>;
  readonly maxBackoffMs?: number;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : 0);

/** Decodes one envelope into a TaskEvent; undefined for topics the agent ignores. */
export function decodeTaskEvent(client: ContainerdClient, env: Envelope__Output): TaskEvent | undefined {
  const decoded = client.decodeAny(env.event);
  if (!decoded) return undefined;
  const v = decoded.value;
  const containerId = str(v['container_id']);
  switch (decoded.type) {
    case 'containerd.events.TaskStart':
      return { kind: 'start', containerId, pid: num(v['pid']) };
    case 'containerd.events.TaskExit':
      return {
        kind: 'exit',
        containerId,
        execId: str(v['id']),
        exitStatus: num(v['exit_status']),
        exitedAt: timestampSeconds(v['exited_at'] as { seconds: string } | undefined),
      };
    case 'containerd.events.TaskOOM':
      return { kind: 'oom', containerId };
    case 'containerd.events.TaskPaused':
      return { kind: 'paused', containerId };
    case 'containerd.events.TaskResumed':
      return { kind: 'resumed', containerId };
    case 'containerd.events.TaskDelete':
      return { kind: 'delete', containerId };
    default:
      return undefined;
  }
}

export class EventWatcher {
  readonly #o: EventWatcherOptions;
  #stream: grpc.ClientReadableStream<Envelope__Output> | undefined;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #backoffMs = 100;
  #connected = false;

  constructor(o: EventWatcherOptions) {
    this.#o = o;
  }

  /** True while a subscription is open. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Subscribes and resolves after the first resync. Later breaks are handled in the background. */
  async start(): Promise<void> {
    this.#subscribe();
    await this.#o.onResync();
  }

  #subscribe(): void {
    const { client, log } = this.#o;
    const filter = `namespace==${JSON.stringify(client.namespace)},topic~="^/tasks/"`;
    const stream = client.svc.events.Subscribe({ filters: [filter] }, client.metadata());
    this.#stream = stream;
    this.#connected = true;
    stream.on('data', (env: Envelope__Output) => {
      this.#backoffMs = 100;
      let e: TaskEvent | undefined;
      try {
        e = decodeTaskEvent(client, env);
      } catch (err) {
        log.warn({ err, topic: env.topic }, 'undecodable containerd event');
        return;
      }
      if (e) this.#o.onEvent(e);
    });
    const onBreak = (err?: Error): void => {
      if (this.#stream !== stream) return;
      this.#stream = undefined;
      this.#connected = false;
      if (this.#closed) return;
      log.warn({ err: err?.message, retryInMs: this.#backoffMs }, 'containerd event stream broke; resubscribing');
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (this.#closed) return;
        this.#subscribe();
        this.#o.onResync().catch((e: unknown) => {
          log.warn({ err: e }, 'resync after resubscribe failed');
          // Force another round: the stream may be up while List failed.
          this.#stream?.cancel();
        });
      }, this.#backoffMs);
      this.#backoffMs = Math.min(this.#backoffMs * 2, this.#o.maxBackoffMs ?? 5000);
    };
    stream.on('error', (err: Error) => {
      onBreak(err);
    });
    stream.on('end', () => {
      onBreak();
    });
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#connected = false;
  }
}
