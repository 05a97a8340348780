/**
 * ContainerdRuntime: the product runtime. Talks to containerd over its gRPC API (client.ts).
 */
import { AgentError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import type { Config } from '../../config/config.js';
import type { CallOptions, EnsureRequest, Runtime, WorkerInfo, WorkerMetrics, WorkerState } from '../runtime.js';
import { ContainerdClient } from './client.js';

export interface ContainerdRuntimeDeps {
  readonly log: Logger;
  readonly metrics: AgentMetrics;
}

export class ContainerdRuntime implements Runtime {
  readonly kind = 'containerd' as const;
  readonly client: ContainerdClient;
  readonly #log: Logger;

  constructor(config: Config, deps: ContainerdRuntimeDeps) {
    this.client = new ContainerdClient({ socket: config.containerd.socket, namespace: config.containerd.namespace });
    this.#log = deps.log.child({ module: 'containerd' });
  }

  async start(): Promise<void> {
    await this.client.waitForReady(10_000);
    const v = await this.client.getVersion();
    const created = await this.client.ensureNamespace();
    this.#log.info({ containerdVersion: v.version, revision: v.revision, namespace: this.client.namespace, namespaceCreated: created, socket: this.client.socket }, 'connected to containerd');
  }

  ensure(_req: EnsureRequest, _opts: CallOptions): Promise<WorkerInfo> {
    return Promise.reject(new AgentError('UNIMPLEMENTED', 'EnsureContainer is not implemented yet on containerd'));
  }

  destroy(_id: string, _opts: CallOptions): Promise<void> {
    return Promise.reject(new AgentError('UNIMPLEMENTED', 'DestroyContainer is not implemented yet on containerd'));
  }

  pause(_id: string, _opts: CallOptions): Promise<void> {
    return Promise.reject(new AgentError('UNIMPLEMENTED', 'PauseContainer is not implemented yet on containerd'));
  }

  resume(_id: string, _opts: CallOptions): Promise<void> {
    return Promise.reject(new AgentError('UNIMPLEMENTED', 'ResumeContainer is not implemented yet on containerd'));
  }

  get(_id: string): WorkerState | undefined {
    return undefined;
  }

  list(): WorkerState[] {
    return [];
  }

  metrics(_id: string, _opts: CallOptions): Promise<WorkerMetrics> {
    return Promise.reject(new AgentError('UNIMPLEMENTED', 'metrics not implemented yet on containerd'));
  }

  touch(_id: string): void {
    // no workers yet
  }

  async ping(opts: CallOptions): Promise<boolean> {
    try {
      await this.client.getVersion({ signal: opts.signal, deadlineMs: 2000 });
      return true;
    } catch {
      return false;
    }
  }

  destroyAll(_opts: CallOptions): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.client.close();
    return Promise.resolve();
  }
}
