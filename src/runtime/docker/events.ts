/**
 * Follows dockerd's `/events` stream for the agent's own containers (label filters) so the
 * worker table stays current without a call per List (docs/go-agent.md#w17): start, die (exit code), oom,
 * pause/unpause, destroy. The stream is live only: after it breaks (dockerd restart) it
 * reconnects with backoff and calls `onResync` once it is open again, so the owner rebuilds its
 * view from one `/containers/json` call, as containerd's watcher does.
 */
import type { Logger } from '../../log.js';
import type { DockerEngineClient } from './engine-client.js';
import { managedLabelFilters } from './containers.js';
import { jsonLines } from './json-stream.js';

export type DockerEvent =
  | { readonly kind: 'start' | 'oom' | 'pause' | 'unpause' | 'destroy'; readonly name: string }
  | { readonly kind: 'die'; readonly name: string; readonly exitCode: number; readonly time: number };

const EVENT_KINDS = ['start', 'die', 'oom', 'pause', 'unpause', 'destroy'] as const;

/** One `/events` message → a DockerEvent; undefined for anything the agent ignores. */
export function decodeDockerEvent(msg: unknown): DockerEvent | undefined {
  if (typeof msg !== 'object' || msg === null) return undefined;
  const m = msg as { Type?: unknown; Action?: unknown; time?: unknown; Actor?: { Attributes?: Record<string, unknown> } };
  if (m.Type !== 'container' || typeof m.Action !== 'string') return undefined;
  const attrs = m.Actor?.Attributes ?? {};
  const name = typeof attrs['name'] === 'string' ? attrs['name'] : '';
  if (name === '') return undefined;
  switch (m.Action) {
    case 'die':
      return { kind: 'die', name, exitCode: Number(attrs['exitCode']) || 0, time: typeof m.time === 'number' ? m.time : 0 };
    case 'start':
    case 'oom':
    case 'pause':
    case 'unpause':
    case 'destroy':
      return { kind: m.Action, name };
    default:
      return undefined;
  }
}

export interface DockerEventWatcherOptions {
  readonly client: DockerEngineClient;
  readonly env: string;
  readonly log: Logger;
  readonly onEvent: (e: DockerEvent) => void;
  /** Called after every (re)connect, once the stream is open: rebuild state then. */
  readonly onResync: () => Promise<void>;
  readonly maxBackoffMs?: number;
}

export class DockerEventWatcher {
  readonly #o: DockerEventWatcherOptions;
  #abort: AbortController | undefined;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #backoffMs = 100;

  constructor(o: DockerEventWatcherOptions) {
    this.#o = o;
  }

  /** Connects and resolves after the first resync. Later breaks are handled in the background. */
  async start(): Promise<void> {
    const body = await this.#connect();
    void this.#follow(body);
    await this.#o.onResync();
  }

  async #connect(): Promise<AsyncIterable<Buffer>> {
    const abort = new AbortController();
    this.#abort = abort;
    const filters = { type: ['container'], event: [...EVENT_KINDS], ...managedLabelFilters(this.#o.env) };
    const res = await this.#o.client.stream({
      method: 'GET',
      path: '/events',
      query: { filters: JSON.stringify(filters) },
      signal: abort.signal,
      what: 'follow dockerd events',
      timeoutMs: 0,
    });
    if (!res.ok) throw new Error(`dockerd refused the event stream: ${res.status} ${res.body}`);
    return res.body;
  }

  async #follow(body: AsyncIterable<Buffer>): Promise<void> {
    const { log } = this.#o;
    try {
      for await (const msg of jsonLines(body)) {
        this.#backoffMs = 100;
        const e = decodeDockerEvent(msg);
        if (e) this.#o.onEvent(e);
      }
      if (!this.#closed) log.warn({ retryInMs: this.#backoffMs }, 'dockerd event stream ended; reconnecting');
    } catch (err) {
      if (!this.#closed) log.warn({ err: (err as Error).message, retryInMs: this.#backoffMs }, 'dockerd event stream broke; reconnecting');
    }
    this.#retry();
  }

  #retry(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      this.#connect().then(
        (body) => {
          void this.#follow(body);
          this.#o.onResync().catch((err: unknown) => {
            this.#o.log.warn({ err }, 'resync after reconnecting to dockerd failed');
            // Force another round: the stream may be up while the list failed.
            this.#abort?.abort();
          });
        },
        () => {
          this.#retry();
        },
      );
    }, this.#backoffMs);
    this.#backoffMs = Math.min(this.#backoffMs * 2, this.#o.maxBackoffMs ?? 5000);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#abort?.abort();
    this.#abort = undefined;
  }
}
