/**
 * A typed promise client of our own AgentService for `esb-agent ctl`: plaintext or (m)TLS
 * credentials from PEM files, a per-call deadline, and no client-side message caps (the agent
 * enforces its own; an operator tool should show whatever the agent sends).
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { errnoCode } from '../errors.js';
import { loadAgentPackage } from '../api/proto.js';
import type { ProtoGrpcType } from '../gen/agent/agent.js';
import type { AgentServiceClient } from '../gen/agent/esb/agent/v1/AgentService.js';
import type { DestroyContainerRequest } from '../gen/agent/esb/agent/v1/DestroyContainerRequest.js';
import type { DestroyContainerResponse__Output } from '../gen/agent/esb/agent/v1/DestroyContainerResponse.js';
import type { EnsureContainerRequest } from '../gen/agent/esb/agent/v1/EnsureContainerRequest.js';
import type { GetContainerMetricsRequest } from '../gen/agent/esb/agent/v1/GetContainerMetricsRequest.js';
import type { GetContainerMetricsResponse__Output } from '../gen/agent/esb/agent/v1/GetContainerMetricsResponse.js';
import type { InvokeWorkerRequest } from '../gen/agent/esb/agent/v1/InvokeWorkerRequest.js';
import type { InvokeWorkerResponse__Output } from '../gen/agent/esb/agent/v1/InvokeWorkerResponse.js';
import type { ListContainersRequest } from '../gen/agent/esb/agent/v1/ListContainersRequest.js';
import type { ListContainersResponse__Output } from '../gen/agent/esb/agent/v1/ListContainersResponse.js';
import type { PauseContainerRequest } from '../gen/agent/esb/agent/v1/PauseContainerRequest.js';
import type { PauseContainerResponse__Output } from '../gen/agent/esb/agent/v1/PauseContainerResponse.js';
import type { ResumeContainerRequest } from '../gen/agent/esb/agent/v1/ResumeContainerRequest.js';
import type { ResumeContainerResponse__Output } from '../gen/agent/esb/agent/v1/ResumeContainerResponse.js';
import type { WorkerInfo__Output } from '../gen/agent/esb/agent/v1/WorkerInfo.js';

export type { ContainerMetrics__Output as ContainerMetrics } from '../gen/agent/esb/agent/v1/ContainerMetrics.js';
export type { ContainerState__Output as ContainerState } from '../gen/agent/esb/agent/v1/ContainerState.js';
export type {
  DestroyContainerResponse__Output as DestroyReply,
  GetContainerMetricsResponse__Output as MetricsReply,
  InvokeWorkerResponse__Output as InvokeReply,
  ListContainersResponse__Output as ListReply,
  WorkerInfo__Output as WorkerInfo,
};

/** How to reach the agent: plaintext, or TLS with a CA and (for mTLS) a client pair. */
export type AgentCredentials =
  | { readonly kind: 'insecure' }
  | {
      readonly kind: 'tls';
      readonly caPath: string;
      readonly certPath?: string | undefined;
      readonly keyPath?: string | undefined;
      /** Name to check the server certificate against, when it differs from the dialled host. */
      readonly serverName?: string | undefined;
    };

export interface AgentClientOptions {
  /** `host:port` (or any grpc-js target). */
  readonly address: string;
  readonly credentials: AgentCredentials;
  /** Per-call deadline in ms; 0 = none. */
  readonly deadlineMs: number;
}

/** A gRPC failure as the agent answered it (or as the channel reported it). */
export interface RpcFailure {
  /** grpc status code (5 = NOT_FOUND, …). */
  readonly code: number;
  /** Its name, e.g. `NOT_FOUND`. */
  readonly name: string;
  readonly details: string;
}

/** Reads a PEM file, or throws an Error naming the flag and the file. */
function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = errnoCode(err) ?? String(err);
    throw new Error(`${flag}: cannot read ${file} (${code})`, { cause: err });
  }
}

/** Builds channel credentials and options; throws Error when a PEM file cannot be read. */
function channel(creds: AgentCredentials): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const options: grpc.ChannelOptions = { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 };
  if (creds.kind === 'insecure') return { credentials: grpc.credentials.createInsecure(), options };
  if ((creds.certPath === undefined) !== (creds.keyPath === undefined)) throw new Error('--cert and --key go together');
  const ca = readPem('--ca', creds.caPath);
  const cert = creds.certPath === undefined ? undefined : readPem('--cert', creds.certPath);
  const key = creds.keyPath === undefined ? undefined : readPem('--key', creds.keyPath);
  if (creds.serverName !== undefined) {
    options['grpc.ssl_target_name_override'] = creds.serverName;
    options['grpc.default_authority'] = creds.serverName;
  }
  return { credentials: grpc.credentials.createSsl(ca, key ?? null, cert ?? null), options };
}

let agentProto: ProtoGrpcType | undefined;

/** Turns whatever a call rejected with into an RpcFailure. */
export function toRpcFailure(err: unknown): RpcFailure {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === 'number') {
    const name = (grpc.status as unknown as Record<number, string | undefined>)[e.code] ?? `CODE_${e.code}`;
    return { code: e.code, name, details: e.details ?? e.message ?? '' };
  }
  return { code: grpc.status.UNKNOWN, name: 'UNKNOWN', details: err instanceof Error ? err.message : String(err) };
}

/** True when `err` is a gRPC failure (as opposed to a local error). */
export function isRpcFailure(err: unknown): boolean {
  return typeof (err as Partial<grpc.ServiceError> | undefined)?.code === 'number';
}

/** AgentService over one channel. `close()` when done. */
export class AgentClient {
  readonly #client: AgentServiceClient;
  readonly #deadlineMs: number;

  /** @throws Error when a PEM file cannot be read. */
  constructor(opts: AgentClientOptions) {
    agentProto ??= grpc.loadPackageDefinition(loadAgentPackage()) as unknown as ProtoGrpcType;
    const { credentials, options } = channel(opts.credentials);
    this.#client = new agentProto.esb.agent.v1.AgentService(opts.address, credentials, options);
    this.#deadlineMs = opts.deadlineMs;
  }

  ensure(req: EnsureContainerRequest): Promise<WorkerInfo__Output> {
    return this.#unary((md, o, cb) => this.#client.EnsureContainer(req, md, o, cb));
  }

  list(req: ListContainersRequest): Promise<ListContainersResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.ListContainers(req, md, o, cb));
  }

  invoke(req: InvokeWorkerRequest): Promise<InvokeWorkerResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.InvokeWorker(req, md, o, cb));
  }

  pause(req: PauseContainerRequest): Promise<PauseContainerResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.PauseContainer(req, md, o, cb));
  }

  resume(req: ResumeContainerRequest): Promise<ResumeContainerResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.ResumeContainer(req, md, o, cb));
  }

  metrics(req: GetContainerMetricsRequest): Promise<GetContainerMetricsResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.GetContainerMetrics(req, md, o, cb));
  }

  destroy(req: DestroyContainerRequest): Promise<DestroyContainerResponse__Output> {
    return this.#unary((md, o, cb) => this.#client.DestroyContainer(req, md, o, cb));
  }

  close(): void {
    this.#client.close();
  }

  #unary<T>(invoke: (md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<T>) => grpc.ClientUnaryCall): Promise<T> {
    const opts: grpc.CallOptions = this.#deadlineMs > 0 ? { deadline: Date.now() + this.#deadlineMs } : {};
    return new Promise<T>((resolve, reject) => {
      invoke(new grpc.Metadata(), opts, (err, res) => {
        if (err) reject(err);
        else resolve(res as T);
      });
    });
  }
}
