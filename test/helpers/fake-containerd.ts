/**
 * A fake containerd for component tests: a grpc-js server on a unix socket in a temp dir,
 * serving the vendored containerd protos (the same ones src/runtime/containerd/client.ts
 * loads) with in-memory state. It implements only what the agent's containerd runtime calls
 * (Containers, Tasks, Snapshots, Images, Content, Leases, Events, Namespaces, Version), with
 * containerd's error classes where the runtime depends on them (NotFound, AlreadyExists).
 * Needs no root and runs no process: a "task" is a record whose status moves on Start/Kill.
 *
 * Every call is recorded (`calls`), and any method can be made to fail (`failOn`).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CONTAINERD_PROTO_DIR } from '../../src/paths.js';
import { PROTO_LOADER_OPTIONS } from '../../src/proto-options.js';

const API = 'github.com/containerd/containerd/api';
const PROTOS = ['containers', 'content', 'events', 'images', 'leases', 'snapshots', 'tasks', 'version'].map(
  (s) => `${API}/services/${s}/v1/${s}.proto`,
);
PROTOS.push(`${API}/services/namespaces/v1/namespace.proto`);

type Obj = Record<string, unknown>;
type Unary = (call: grpc.ServerUnaryCall<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => void;

export interface FakeContainer {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: unknown;
  spec: unknown;
  snapshotter: string;
  snapshot_key: string;
  created_at: { seconds: string; nanos: number };
  updated_at: { seconds: string; nanos: number };
  extensions: Obj;
}

export type FakeTaskStatus = 'CREATED' | 'RUNNING' | 'PAUSED' | 'STOPPED';

export interface FakeTask {
  id: string;
  pid: number;
  status: FakeTaskStatus;
  exit_status: number;
}

export interface FakeSnapshot {
  key: string;
  parent: string;
  kind: 'ACTIVE' | 'COMMITTED';
  labels: Record<string, string>;
}

export interface FakeLease {
  id: string;
  labels: Record<string, string>;
  /** `type/id` of what was made under the lease (containerd-lease header). */
  resources: string[];
}

/** A gRPC error the fake answers with. */
export interface FakeError {
  readonly code: grpc.status;
  readonly details: string;
}

function now(): { seconds: string; nanos: number } {
  return { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 };
}

function err(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

const notFound = (what: string): grpc.ServiceError => err(grpc.status.NOT_FOUND, `${what}: not found`);
const exists = (what: string): grpc.ServiceError => err(grpc.status.ALREADY_EXISTS, `${what}: already exists`);

/** Digest of `data` in containerd's form. */
export function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * containerd's filter syntax, only as far as the agent uses it: comma-separated
 * `labels."key"==value` (value quoted or not) terms, all of which must hold. Other terms match.
 */
function matchesFilter(filter: string, labels: Record<string, string>): boolean {
  if (filter === '') return true;
  const term = /labels\.(?:"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.-]+))==(?:"((?:[^"\\]|\\.)*)"|([^,]*))/g;
  for (const m of filter.matchAll(term)) {
    const key = m[1] !== undefined ? (JSON.parse(`"${m[1]}"`) as string) : m[2]!;
    const value = m[3] !== undefined ? (JSON.parse(`"${m[3]}"`) as string) : m[4]!;
    if (labels[key] !== value) return false;
  }
  return true;
}

export class FakeContainerd {
  readonly dir: string;
  readonly socket: string;
  readonly namespaces = new Set<string>();
  readonly containers = new Map<string, FakeContainer>();
  readonly tasks = new Map<string, FakeTask>();
  readonly snapshots = new Map<string, FakeSnapshot>();
  readonly leases = new Map<string, FakeLease>();
  readonly images = new Map<string, Obj>();
  readonly content = new Map<string, Buffer>();
  /** Every call, in order: `service.Method id` (id = the container, snapshot key, lease...). */
  readonly calls: string[] = [];
  readonly #failures = new Map<string, FakeError>();
  readonly #server: grpc.Server;
  readonly #streams = new Set<grpc.ServerWritableStream<Obj, Obj>>();
  #nextPid = 1000;

  private constructor(dir: string) {
    this.dir = dir;
    this.socket = path.join(dir, 'containerd.sock');
    this.#server = new grpc.Server();
  }

  /** Starts a fake on a fresh socket in a temp dir. */
  static async start(): Promise<FakeContainerd> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-fake-containerd-'));
    const f = new FakeContainerd(dir);
    f.#register();
    await new Promise<void>((resolve, reject) => {
      f.#server.bindAsync(`unix://${f.socket}`, grpc.ServerCredentials.createInsecure(), (e) => {
        if (e) reject(e);
        else resolve();
      });
    });
    return f;
  }

  /** Makes every later call of `service.Method` (e.g. `tasks.Start`) fail with `error` until cleared. */
  failOn(method: string, error: FakeError = { code: grpc.status.UNKNOWN, details: `injected failure of ${method}` }): void {
    this.#failures.set(method, error);
  }

  clearFailures(): void {
    this.#failures.clear();
  }

  /** Names of the calls made so far of `service.Method`, with their ids. */
  callsOf(method: string): string[] {
    return this.calls.filter((c) => c === method || c.startsWith(`${method} `));
  }

  /**
   * Puts a one-layer image into the store (record, manifest, config) with its layer snapshot
   * committed, as a pull + unpack would leave it. Returns the top chain id.
   */
  addImage(name: string, snapshotter: string, config: Obj = {}): string {
    const diffId = sha256(`layer of ${name}`);
    const cfg = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Cmd: ['/bin/worker'], ...config },
        rootfs: { type: 'layers', diff_ids: [diffId] },
      }),
    );
    const cfgDesc = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(cfg), size: cfg.length };
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: cfgDesc,
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(`blob of ${name}`), size: 1 }],
      }),
    );
    this.content.set(cfgDesc.digest, cfg);
    this.content.set(sha256(manifest), manifest);
    this.images.set(name, {
      name,
      labels: {},
      target: {
        media_type: 'application/vnd.oci.image.manifest.v1+json',
        digest: sha256(manifest),
        size: String(manifest.length),
        annotations: {},
      },
      created_at: now(),
      updated_at: now(),
    });
    this.snapshots.set(`${snapshotter}/${diffId}`, { key: diffId, parent: '', kind: 'COMMITTED', labels: {} });
    return diffId;
  }

  /** Snapshot keys of `snapshotter` that are not committed image layers. */
  activeSnapshots(): string[] {
    return [...this.snapshots.values()].filter((s) => s.kind === 'ACTIVE').map((s) => s.key);
  }

  /** Adds a task record directly (as if made by an earlier agent run). */
  putTask(id: string, status: FakeTaskStatus): void {
    this.tasks.set(id, { id, pid: this.#nextPid++, status, exit_status: 0 });
  }

  async close(): Promise<void> {
    for (const s of this.#streams) s.end();
    this.#streams.clear();
    this.#server.forceShutdown();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  #register(): void {
    const def = protoLoader.loadSync(PROTOS, { ...PROTO_LOADER_OPTIONS, includeDirs: [CONTAINERD_PROTO_DIR] });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      containerd: { services: Record<string, { v1: Record<string, grpc.ServiceClientConstructor> }> };
    };
    const svc = (group: string, name: string): grpc.ServiceDefinition => pkg.containerd.services[group]!.v1[name]!.service;
    const add = (group: string, name: string, impl: Record<string, Unary>, streams: grpc.UntypedServiceImplementation = {}): void => {
      const wrapped: grpc.UntypedServiceImplementation = {};
      for (const [method, fn] of Object.entries(impl)) {
        wrapped[method] = ((call: grpc.ServerUnaryCall<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => {
          const key = `${group}.${method}`;
          const r = call.request;
          const id =
            r['id'] ??
            r['container_id'] ??
            r['key'] ??
            r['name'] ??
            (r['container'] as Obj | undefined)?.['id'] ??
            (r['image'] as Obj | undefined)?.['name'];
          this.calls.push(typeof id === 'string' ? `${key} ${id}` : key);
          const failure = this.#failures.get(key);
          if (failure) {
            cb(err(failure.code, failure.details));
            return;
          }
          try {
            fn(call, cb);
          } catch (e) {
            cb(e as grpc.ServiceError);
          }
        }) as grpc.UntypedHandleCall;
      }
      this.#server.addService(svc(group, name), { ...wrapped, ...streams });
    };
    const lease = (call: grpc.ServerUnaryCall<Obj, Obj>, resource: string): void => {
      const id = call.metadata.get('containerd-lease')[0];
      if (typeof id !== 'string') return;
      const l = this.leases.get(id);
      if (!l) throw notFound(`lease ${id}`);
      l.resources.push(resource);
    };

    add('version', 'Version', {
      Version: (_c, cb) => {
        cb(null, { version: 'v1.7.0-fake', revision: 'fake' });
      },
    });

    add('namespaces', 'Namespaces', {
      Create: (c, cb) => {
        const name = (c.request['namespace'] as Obj)['name'] as string;
        if (this.namespaces.has(name)) throw exists(`namespace ${name}`);
        this.namespaces.add(name);
        cb(null, { namespace: { name, labels: {} } });
      },
    });

    add('containers', 'Containers', {
      Get: (c, cb) => {
        const rec = this.containers.get(c.request['id'] as string);
        if (!rec) throw notFound(`container ${String(c.request['id'])}`);
        cb(null, { container: rec });
      },
      List: (c, cb) => {
        const filters = (c.request['filters'] as string[] | undefined) ?? [];
        const all = [...this.containers.values()];
        const out = filters.length === 0 ? all : all.filter((rec) => filters.some((f) => matchesFilter(f, rec.labels)));
        cb(null, { containers: out });
      },
      Create: (c, cb) => {
        const r = c.request['container'] as Obj;
        const id = r['id'] as string;
        if (this.containers.has(id)) throw exists(`container ${id}`);
        lease(c, `containers/${id}`);
        const rec: FakeContainer = {
          id,
          labels: { ...(r['labels'] as Record<string, string>) },
          image: (r['image'] as string | undefined) ?? '',
          runtime: r['runtime'],
          spec: r['spec'],
          snapshotter: (r['snapshotter'] as string | undefined) ?? '',
          snapshot_key: (r['snapshot_key'] as string | undefined) ?? '',
          created_at: now(),
          updated_at: now(),
          extensions: {},
        };
        this.containers.set(id, rec);
        cb(null, { container: rec });
      },
      Update: (c, cb) => {
        const r = c.request['container'] as Obj;
        const rec = this.containers.get(r['id'] as string);
        if (!rec) throw notFound(`container ${String(r['id'])}`);
        const paths = ((c.request['update_mask'] as Obj | null)?.['paths'] as string[] | undefined) ?? [];
        const labels = (r['labels'] as Record<string, string> | undefined) ?? {};
        for (const p of paths) {
          if (!p.startsWith('labels.')) continue;
          const k = p.slice('labels.'.length);
          const v = labels[k];
          // As containerd: a masked label without a value is removed.
          rec.labels = Object.fromEntries(Object.entries(rec.labels).filter(([name]) => name !== k));
          if (v !== undefined && v !== '') rec.labels[k] = v;
        }
        rec.updated_at = now();
        cb(null, { container: rec });
      },
      Delete: (c, cb) => {
        const id = c.request['id'] as string;
        if (!this.containers.delete(id)) throw notFound(`container ${id}`);
        cb(null, {});
      },
    });

    const task = (id: string): FakeTask => {
      const t = this.tasks.get(id);
      if (!t) throw notFound(`task ${id}`);
      return t;
    };
    const processOf = (t: FakeTask): Obj => ({ id: t.id, container_id: t.id, pid: t.pid, status: t.status, exit_status: t.exit_status });
    add('tasks', 'Tasks', {
      Create: (c, cb) => {
        const id = c.request['container_id'] as string;
        if (!this.containers.has(id)) throw notFound(`container ${id}`);
        if (this.tasks.has(id)) throw exists(`task ${id}`);
        const t: FakeTask = { id, pid: this.#nextPid++, status: 'CREATED', exit_status: 0 };
        this.tasks.set(id, t);
        cb(null, { container_id: id, pid: t.pid });
      },
      Start: (c, cb) => {
        const t = task(c.request['container_id'] as string);
        if (t.status !== 'CREATED') throw err(grpc.status.FAILED_PRECONDITION, `task ${t.id} is ${t.status.toLowerCase()}`);
        t.status = 'RUNNING';
        cb(null, { pid: t.pid });
      },
      Get: (c, cb) => {
        cb(null, { process: processOf(task(c.request['container_id'] as string)) });
      },
      List: (_c, cb) => {
        cb(null, { tasks: [...this.tasks.values()].map(processOf) });
      },
      Kill: (c, cb) => {
        const t = task(c.request['container_id'] as string);
        if (t.status === 'STOPPED') throw notFound(`process already finished`);
        t.status = 'STOPPED';
        t.exit_status = 137;
        cb(null, {});
      },
      Pause: (c, cb) => {
        const t = task(c.request['container_id'] as string);
        if (t.status !== 'RUNNING') throw err(grpc.status.FAILED_PRECONDITION, `task ${t.id} is not running`);
        t.status = 'PAUSED';
        cb(null, {});
      },
      Resume: (c, cb) => {
        const t = task(c.request['container_id'] as string);
        if (t.status !== 'PAUSED') throw err(grpc.status.FAILED_PRECONDITION, `task ${t.id} is not paused`);
        t.status = 'RUNNING';
        cb(null, {});
      },
      Delete: (c, cb) => {
        const t = task(c.request['container_id'] as string);
        if (t.status === 'RUNNING' || t.status === 'PAUSED')
          throw err(grpc.status.FAILED_PRECONDITION, `task ${t.id} must be stopped before deletion`);
        this.tasks.delete(t.id);
        cb(null, { id: t.id, pid: t.pid, exit_status: t.exit_status });
      },
      Metrics: (_c, cb) => {
        cb(null, { metrics: [] });
      },
    });

    const snapKey = (r: Obj): string => `${String(r['snapshotter'])}/${String(r['key'])}`;
    const mountsOf = (key: string): Obj[] => [
      {
        type: 'bind',
        source: path.join(this.dir, 'snapshots', key.replace(/[^A-Za-z0-9_.-]/g, '_')),
        target: '',
        options: ['rbind', 'rw'],
      },
    ];
    const snapshotList = ((st: grpc.ServerWritableStream<Obj, Obj>) => {
      const snapshotter = String(st.request['snapshotter']);
      this.calls.push('snapshots.List');
      const info = [...this.snapshots.entries()]
        .filter(([k]) => k.startsWith(`${snapshotter}/`))
        .map(([, v]) => ({ name: v.key, parent: v.parent, kind: v.kind, labels: v.labels, created_at: now(), updated_at: now() }));
      st.write({ info });
      st.end();
    }) as grpc.UntypedHandleCall;
    add(
      'snapshots',
      'Snapshots',
      {
        Prepare: (c, cb) => {
          const r = c.request;
          const k = snapKey(r);
          if (this.snapshots.has(k)) throw exists(`snapshot ${String(r['key'])}`);
          const parent = (r['parent'] as string | undefined) ?? '';
          if (parent !== '' && !this.snapshots.has(`${String(r['snapshotter'])}/${parent}`)) throw notFound(`parent snapshot ${parent}`);
          lease(c, `snapshots/${String(r['key'])}`);
          this.snapshots.set(k, {
            key: r['key'] as string,
            parent,
            kind: 'ACTIVE',
            labels: { ...(r['labels'] as Record<string, string> | undefined) },
          });
          cb(null, { mounts: mountsOf(r['key'] as string) });
        },
        Mounts: (c, cb) => {
          if (!this.snapshots.has(snapKey(c.request))) throw notFound(`snapshot ${String(c.request['key'])}`);
          cb(null, { mounts: mountsOf(c.request['key'] as string) });
        },
        Stat: (c, cb) => {
          const s = this.snapshots.get(snapKey(c.request));
          if (!s) throw notFound(`snapshot ${String(c.request['key'])}`);
          cb(null, { info: { name: s.key, parent: s.parent, kind: s.kind, labels: s.labels, created_at: now(), updated_at: now() } });
        },
        Remove: (c, cb) => {
          const k = snapKey(c.request);
          if (!this.snapshots.has(k)) throw notFound(`snapshot ${String(c.request['key'])}`);
          const key = c.request['key'] as string;
          if ([...this.snapshots.values()].some((s) => s.parent === key))
            throw err(grpc.status.FAILED_PRECONDITION, `snapshot ${key} has children`);
          this.snapshots.delete(k);
          cb(null, {});
        },
      },
      { List: snapshotList },
    );

    add('leases', 'Leases', {
      Create: (c, cb) => {
        const id = c.request['id'] as string;
        if (this.leases.has(id)) throw exists(`lease ${id}`);
        const l: FakeLease = { id, labels: { ...(c.request['labels'] as Record<string, string> | undefined) }, resources: [] };
        this.leases.set(id, l);
        cb(null, { lease: { id, labels: l.labels, created_at: now() } });
      },
      Delete: (c, cb) => {
        const id = c.request['id'] as string;
        if (!this.leases.delete(id)) throw notFound(`lease ${id}`);
        cb(null, {});
      },
      List: (_c, cb) => {
        cb(null, { leases: [...this.leases.values()].map((l) => ({ id: l.id, labels: l.labels, created_at: now() })) });
      },
      AddResource: (c, cb) => {
        const l = this.leases.get(c.request['id'] as string);
        if (!l) throw notFound(`lease ${String(c.request['id'])}`);
        const res = c.request['resource'] as Obj;
        l.resources.push(`${String(res['type'])}/${String(res['id'])}`);
        cb(null, {});
      },
    });

    add('images', 'Images', {
      Get: (c, cb) => {
        const img = this.images.get(c.request['name'] as string);
        if (!img) throw notFound(`image ${String(c.request['name'])}`);
        cb(null, { image: img });
      },
    });

    const contentImpl: grpc.UntypedServiceImplementation = {
      Info: ((c: grpc.ServerUnaryCall<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => {
        this.calls.push(`content.Info ${String(c.request['digest'])}`);
        const data = this.content.get(c.request['digest'] as string);
        if (!data) {
          cb(notFound(`content ${String(c.request['digest'])}`));
          return;
        }
        cb(null, { info: { digest: c.request['digest'], size: String(data.length), labels: {}, created_at: now(), updated_at: now() } });
      }) as grpc.UntypedHandleCall,
      Read: ((s: grpc.ServerWritableStream<Obj, Obj>) => {
        const digest = s.request['digest'] as string;
        this.calls.push(`content.Read ${digest}`);
        const data = this.content.get(digest);
        if (!data) {
          s.destroy(notFound(`content ${digest}`));
          return;
        }
        s.write({ offset: '0', data });
        s.end();
      }) as grpc.UntypedHandleCall,
    };
    this.#server.addService(svc('content', 'Content'), contentImpl);

    this.#server.addService(svc('events', 'Events'), {
      Subscribe: ((s: grpc.ServerWritableStream<Obj, Obj>) => {
        this.calls.push('events.Subscribe');
        this.#streams.add(s);
        s.on('cancelled', () => this.#streams.delete(s));
      }) as grpc.UntypedHandleCall,
    });
  }
}
