/**
 * The containerd connection: one grpc-js channel over containerd's unix socket, shared by typed
 * clients of every service the agent uses, loaded at run time from the vendored protos under
 * proto/containerd. Every call carries the `containerd-namespace` header (and `containerd-lease`
 * when a lease is given), and every failure becomes an AgentError (`fromContainerdError`).
 *
 * Facts behind the choices here: docs/containerd.md#connecting.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { AgentError, abortError, type ErrorCode } from '../../errors.js';
import { CONTAINERD_PROTO_DIR } from '../../paths.js';
import { PROTO_LOADER_OPTIONS } from '../../proto-options.js';
import type { ContainersClient } from '../../gen/containerd/containerd/services/containers/v1/Containers.js';
import type { ContentClient } from '../../gen/containerd/containerd/services/content/v1/Content.js';
import type { DiffClient } from '../../gen/containerd/containerd/services/diff/v1/Diff.js';
import type { EventsClient } from '../../gen/containerd/containerd/services/events/v1/Events.js';
import type { ImagesClient } from '../../gen/containerd/containerd/services/images/v1/Images.js';
import type { LeasesClient } from '../../gen/containerd/containerd/services/leases/v1/Leases.js';
import type { NamespacesClient } from '../../gen/containerd/containerd/services/namespaces/v1/Namespaces.js';
import type { SnapshotsClient } from '../../gen/containerd/containerd/services/snapshots/v1/Snapshots.js';
import type { TasksClient } from '../../gen/containerd/containerd/services/tasks/v1/Tasks.js';
import type { VersionClient } from '../../gen/containerd/containerd/services/version/v1/Version.js';
import type { VersionResponse__Output } from '../../gen/containerd/containerd/services/version/v1/VersionResponse.js';

const API = 'github.com/containerd/containerd/api';

/** The service protos the agent calls, relative to proto/containerd. */
const SERVICE_PROTOS = [
  `${API}/services/containers/v1/containers.proto`,
  `${API}/services/content/v1/content.proto`,
  `${API}/services/diff/v1/diff.proto`,
  `${API}/services/events/v1/events.proto`,
  `${API}/services/images/v1/images.proto`,
  `${API}/services/leases/v1/leases.proto`,
  `${API}/services/namespaces/v1/namespace.proto`,
  `${API}/services/snapshots/v1/snapshots.proto`,
  `${API}/services/tasks/v1/tasks.proto`,
  `${API}/services/version/v1/version.proto`,
];

/** Protos whose messages arrive inside `google.protobuf.Any` (events, cgroup metrics). */
const ANY_PROTOS = [
  'github.com/containerd/containerd/runtime/v2/runc/options/oci.proto',
  `${API}/events/task.proto`,
  `${API}/events/container.proto`,
  'github.com/containerd/cgroups/stats/v1/metrics.proto',
  'github.com/containerd/cgroups/v2/stats/metrics.proto',
];

/**
 * containerd's own client limit and the daemon's default (16 MiB): grpc-js defaults to a 4 MiB
 * receive limit, too small for Containers.List with full specs at scale (docs/containerd.md#address-and-options).
 */
export const CONTAINERD_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Default bound on one unary call; long-blocking calls (Wait, Subscribe) pass `deadlineMs: 0`. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

interface Services {
  containers: ContainersClient;
  content: ContentClient;
  diff: DiffClient;
  events: EventsClient;
  images: ImagesClient;
  leases: LeasesClient;
  namespaces: NamespacesClient;
  snapshots: SnapshotsClient;
  tasks: TasksClient;
  version: VersionClient;
}

/** Per-call options. */
export interface RequestOptions {
  /** Aborts the call (client cancel or the caller's deadline). */
  readonly signal?: AbortSignal | undefined;
  /** Lease id sent as `containerd-lease`, so what the call creates is protected from GC. */
  readonly lease?: string | undefined;
  /** Own deadline in ms; 0 = none. Default DEFAULT_CALL_TIMEOUT_MS. */
  readonly deadlineMs?: number | undefined;
  /** Namespace override (Namespaces.Create needs its own name in the header). */
  readonly namespace?: string | undefined;
}

/** Request and response types of a generated unary method (inferred from its last overload). */
type AnyUnary = (argument: never, callback: never) => grpc.ClientUnaryCall;
export type RequestOf<F> = F extends (argument: infer A, callback: grpc.requestCallback<infer _R>) => grpc.ClientUnaryCall ? A : never;
export type ResponseOf<F> = F extends (argument: infer _A, callback: grpc.requestCallback<infer R>) => grpc.ClientUnaryCall ? R : never;
/** Names of the PascalCase unary methods of a generated client (the RPC names). */
export type UnaryMethods<C> = {
  [K in keyof C]: K extends string ? (K extends Capitalize<K> ? (C[K] extends AnyUnary ? K : never) : never) : never;
}[keyof C];

export type UnaryInvoker<T> = (
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<T>,
) => grpc.ClientUnaryCall;

const GRPC_TO_AGENT: Partial<Record<grpc.status, ErrorCode>> = {
  [grpc.status.CANCELLED]: 'CANCELLED',
  [grpc.status.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [grpc.status.DEADLINE_EXCEEDED]: 'DEADLINE_EXCEEDED',
  [grpc.status.NOT_FOUND]: 'NOT_FOUND',
  [grpc.status.ALREADY_EXISTS]: 'ALREADY_EXISTS',
  [grpc.status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [grpc.status.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [grpc.status.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [grpc.status.OUT_OF_RANGE]: 'FAILED_PRECONDITION',
  [grpc.status.UNIMPLEMENTED]: 'UNIMPLEMENTED',
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
};

/**
 * Converts a containerd gRPC failure into an AgentError that keeps containerd's error class
 * (NotFound, AlreadyExists, ...). UNKNOWN (runc and shim failures) becomes INTERNAL; callers
 * reinterpret codes where the meaning changes (e.g. NOT_FOUND during destroy = already gone).
 */
export function fromContainerdError(err: unknown, what: string): AgentError {
  if (err instanceof AgentError) return err;
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === 'number') {
    const code = GRPC_TO_AGENT[e.code] ?? 'INTERNAL';
    const details = e.details ?? e.message ?? '';
    const prefix = code === 'UNAVAILABLE' ? 'containerd unreachable: ' : '';
    return new AgentError(code, `${what}: ${prefix}${details}`, { cause: err });
  }
  return new AgentError('INTERNAL', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

export interface ContainerdClientOptions {
  /** Absolute path of containerd's socket. */
  readonly socket: string;
  /** containerd namespace used for every call. */
  readonly namespace: string;
}

/**
 * Typed access to containerd's services over one channel. Construct once; `close()` at exit.
 * Thin by design: the order of operations lives in the runtime, not here.
 */
export class ContainerdClient {
  readonly namespace: string;
  readonly socket: string;
  readonly svc: Services;
  readonly #anyRoot: protobuf.Root;
  readonly #first: grpc.Client;

  constructor({ socket, namespace }: ContainerdClientOptions) {
    this.socket = socket;
    this.namespace = namespace;
    const def = protoLoader.loadSync(SERVICE_PROTOS, { ...PROTO_LOADER_OPTIONS, includeDirs: [CONTAINERD_PROTO_DIR] });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      containerd: { services: Record<string, { v1: Record<string, grpc.ServiceClientConstructor> }> };
    };
    const s = pkg.containerd.services;
    const ctor = (group: string, name: string): grpc.ServiceClientConstructor => {
      const c = s[group]?.v1[name];
      if (!c) throw new Error(`containerd proto is missing ${group}.${name}`);
      return c;
    };
    const channelOptions: grpc.ChannelOptions = {
      'grpc.max_receive_message_length': CONTAINERD_MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': CONTAINERD_MAX_MESSAGE_BYTES,
      // No keepalive pings: useless on a unix socket, and under 5 min they earn a GOAWAY
      // (too_many_pings) from containerd's gRPC-Go server (docs/containerd.md#address-and-options).
      'grpc.enable_retries': 0,
      // grpc-js backs reconnects off up to 120 s by default; on a local socket that would
      // keep the agent UNAVAILABLE for minutes after containerd is back. Retry often instead.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    };
    const target = `unix://${socket}`;
    const first = new (ctor('version', 'Version'))(target, grpc.credentials.createInsecure(), channelOptions);
    const shared = { ...channelOptions, channelOverride: first.getChannel() } as grpc.ClientOptions;
    const make = (group: string, name: string): never =>
      new (ctor(group, name))(target, grpc.credentials.createInsecure(), shared) as never;
    this.#first = first;
    this.svc = {
      version: first as unknown as VersionClient,
      containers: make('containers', 'Containers'),
      content: make('content', 'Content'),
      diff: make('diff', 'Diff'),
      events: make('events', 'Events'),
      images: make('images', 'Images'),
      leases: make('leases', 'Leases'),
      namespaces: make('namespaces', 'Namespaces'),
      snapshots: make('snapshots', 'Snapshots'),
      tasks: make('tasks', 'Tasks'),
    };
    this.#anyRoot = new protobuf.Root();
    this.#anyRoot.resolvePath = (_origin, target) => `${CONTAINERD_PROTO_DIR}/${target}`;
    this.#anyRoot.loadSync(ANY_PROTOS, { keepCase: true });
  }

  /** Call metadata: the namespace, plus the lease when given. */
  metadata(opts: RequestOptions = {}): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', opts.namespace ?? this.namespace);
    if (opts.lease !== undefined) md.set('containerd-lease', opts.lease);
    return md;
  }

  /**
   * Runs one unary call: adds metadata, applies the deadline, cancels on `signal`, and converts
   * failures. `what` names the operation and object for the error message.
   */
  unary<T>(what: string, invoke: UnaryInvoker<T>, opts: RequestOptions = {}): Promise<T> {
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(abortError(signal, what));
    const deadlineMs = opts.deadlineMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const callOptions: grpc.CallOptions = deadlineMs > 0 ? { deadline: Date.now() + deadlineMs } : {};
    return new Promise<T>((resolve, reject) => {
      let call: grpc.ClientUnaryCall | undefined = undefined;
      const onAbort = (): void => {
        call?.cancel();
        reject(abortError(signal!, what));
      };
      call = invoke(this.metadata(opts), callOptions, (err, res) => {
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(fromContainerdError(err, what));
        else resolve(res as T);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Calls one unary RPC by service and method name, typed from the generated client:
   * `await client.call('tasks', 'Get', { container_id }, opts)`.
   */
  call<S extends keyof Services, M extends UnaryMethods<Services[S]>>(
    service: S,
    method: M,
    request: RequestOf<Services[S][M]>,
    opts: RequestOptions & { readonly what?: string } = {},
  ): Promise<ResponseOf<Services[S][M]>> {
    const client = this.svc[service] as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>;
    const fn = client[method as string]!;
    const what = opts.what ?? `containerd ${service}.${method}`;
    return this.unary<ResponseOf<Services[S][M]>>(what, (md, o, cb) => fn.call(client, request, md, o, cb), opts);
  }

  /**
   * Decodes a `google.protobuf.Any` from containerd (event payloads, cgroup metrics). Type URLs
   * carry no `type.googleapis.com/` prefix; the message name is the text after the last '/'.
   * Returns undefined for a type not vendored. 64-bit integers come back as decimal strings.
   */
  decodeAny(
    any: { type_url: string; value: Buffer | Uint8Array } | null | undefined,
  ): { type: string; value: Record<string, unknown> } | undefined {
    if (!any) return undefined;
    const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let msgType: protobuf.Type;
    try {
      msgType = this.#anyRoot.lookupType(type);
    } catch {
      return undefined;
    }
    const msg = msgType.decode(any.value);
    return { type, value: msgType.toObject(msg, { longs: String, enums: String, defaults: false }) };
  }

  /**
   * Encodes `value` as a `google.protobuf.Any` of the vendored message `type` (for example the
   * runc shim's `containerd.runc.v1.Options`), with containerd's prefix-less type URL.
   */
  encodeAny(type: string, value: Record<string, unknown>): { type_url: string; value: Buffer } {
    const msgType = this.#anyRoot.lookupType(type);
    const problem = msgType.verify(value);
    if (problem) throw new AgentError('INTERNAL', `cannot encode ${type}: ${problem}`);
    return { type_url: type, value: Buffer.from(msgType.encode(msgType.fromObject(value)).finish()) };
  }

  /** Waits until the channel is connected, or rejects UNAVAILABLE after `timeoutMs`. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#first.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(new AgentError('UNAVAILABLE', `containerd unreachable at ${this.socket}: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
  }

  /** containerd's version ({version, revision}). */
  async getVersion(opts: RequestOptions = {}): Promise<{ version: string; revision: string }> {
    const res = await this.unary<VersionResponse__Output>('containerd Version', (md, o, cb) => this.svc.version.Version({}, md, o, cb), {
      deadlineMs: 5000,
      ...opts,
    });
    return { version: res.version, revision: res.revision };
  }

  /**
   * Creates the client's namespace when missing. The namespace's own name goes in the
   * `containerd-namespace` header: without it containerd creates the namespace and then fails
   * publishing the event (docs/containerd.md#metadata-headers).
   */
  async ensureNamespace(opts: RequestOptions = {}): Promise<boolean> {
    try {
      await this.unary(
        `create containerd namespace ${this.namespace}`,
        (md, o, cb) => this.svc.namespaces.Create({ namespace: { name: this.namespace, labels: {} } }, md, o, cb),
        { ...opts, namespace: this.namespace },
      );
      return true;
    } catch (err) {
      if (err instanceof AgentError && err.code === 'ALREADY_EXISTS') return false;
      throw err;
    }
  }

  close(): void {
    for (const c of Object.values(this.svc) as grpc.Client[]) c.close();
  }
}
