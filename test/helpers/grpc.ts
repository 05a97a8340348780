/**
 * gRPC clients for tests: the agent's own service, health (grpc.health.v1) and server reflection
 * (grpc.reflection.v1), with promise wrappers. Clients get no size caps, so a test sees the
 * server's limits, not the client's. Close every client (`client.close()`) in `t.after`.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO_PATH } from 'grpc-health-check';
import { loadAgentPackage } from '../../src/api/proto.js';
import type { ProtoGrpcType } from '../../src/gen/agent/agent.js';
import type { AgentServiceClient } from '../../src/gen/agent/esb/agent/v1/AgentService.js';
import { PROTO_LOADER_OPTIONS } from '../../src/proto-options.js';
import type { CertPair, TestCerts } from './certs.js';

export type { AgentServiceClient };

/** Client channel options: no message caps, quick reconnects. */
export const CLIENT_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 500,
};

/** TLS client credentials trusting `certs.ca`, presenting `pair` (or no certificate). */
export function tlsCredentials(certs: TestCerts, pair: CertPair | undefined): grpc.ChannelCredentials {
  return pair ? grpc.credentials.createSsl(certs.ca, pair.key, pair.cert) : grpc.credentials.createSsl(certs.ca);
}

const agentProto = grpc.loadPackageDefinition(loadAgentPackage()) as unknown as ProtoGrpcType;

/** An AgentService client for `address` (dial `localhost:<port>` with TLS: no DEP0123). */
export function agentClient(address: string, creds: grpc.ChannelCredentials): AgentServiceClient {
  return new agentProto.esb.agent.v1.AgentService(address, creds, CLIENT_OPTIONS);
}

export type AgentMethod =
  'EnsureContainer' | 'DestroyContainer' | 'PauseContainer' | 'ResumeContainer' | 'ListContainers' | 'GetContainerMetrics' | 'InvokeWorker';

type Callback = (err: grpc.ServiceError | null, res?: unknown) => void;
type UnaryFn = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

/** Calls a unary method; resolves with the reply, rejects with the grpc ServiceError. */
export function unaryCall<Res = Record<string, unknown>>(
  client: grpc.Client,
  method: string,
  req: object,
  opts: { deadlineMs?: number } = {},
): Promise<Res> {
  const fn = (client as unknown as Record<string, UnaryFn | undefined>)[method];
  if (fn === undefined) throw new Error(`no method ${method}`);
  const callOpts: grpc.CallOptions = opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs };
  return new Promise((resolve, reject) => {
    fn.call(client, req, new grpc.Metadata(), callOpts, (err, res) => {
      if (err) reject(err);
      else resolve(res as Res);
    });
  });
}

/** Calls a unary method that must fail; resolves with its `{ code, details }`. */
export async function callError(
  client: grpc.Client,
  method: string,
  req: object,
  opts: { deadlineMs?: number } = {},
): Promise<{ code: grpc.status; name: string; details: string }> {
  try {
    const res = await unaryCall(client, method, req, opts);
    throw new Error(`${method} succeeded unexpectedly: ${JSON.stringify(res)}`);
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, name: grpc.status[e.code], details: e.details };
  }
}

interface HealthProto {
  grpc: { health: { v1: { Health: typeof grpc.Client } } };
}

const healthProto = grpc.loadPackageDefinition(
  protoLoader.loadSync('health/v1/health.proto', { ...PROTO_LOADER_OPTIONS, includeDirs: [path.resolve(HEALTH_PROTO_PATH, '../../..')] }),
) as unknown as HealthProto;

/** A grpc.health.v1.Health client. */
export function healthClient(address: string, creds: grpc.ChannelCredentials): grpc.Client {
  return new healthProto.grpc.health.v1.Health(address, creds, CLIENT_OPTIONS);
}

/** Health.Check for `service`; resolves with 'SERVING' / 'NOT_SERVING' / …, rejects on error. */
export async function checkHealth(client: grpc.Client, service: string, deadlineMs = 2000): Promise<string> {
  const res = await unaryCall<{ status: string }>(client, 'Check', { service }, { deadlineMs });
  return res.status;
}

/** Health.Watch for `service`: every status the server sends, and the stream for cancel(). */
export function watchHealth(
  client: grpc.Client,
  service: string,
): { statuses: string[]; stream: grpc.ClientReadableStream<unknown>; ended: Promise<void> } {
  const fn = (client as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<{ status: string }>>)['Watch']!;
  const stream = fn.call(client, { service });
  const statuses: string[] = [];
  stream.on('data', (m: { status: string }) => statuses.push(m.status));
  const ended = new Promise<void>((resolve) => {
    stream.on('error', () => {
      resolve();
    });
    stream.on('end', () => {
      resolve();
    });
  });
  return { statuses, stream, ended };
}

interface ReflectionProto {
  grpc: { reflection: { v1: { ServerReflection: typeof grpc.Client } } };
}

const reflectionDir = path.resolve(path.dirname(createRequire(import.meta.url).resolve('@grpc/reflection')), '../proto');
const reflectionProto = grpc.loadPackageDefinition(
  protoLoader.loadSync('grpc/reflection/v1/reflection.proto', { ...PROTO_LOADER_OPTIONS, includeDirs: [reflectionDir] }),
) as unknown as ReflectionProto;

/** A grpc.reflection.v1.ServerReflection client. */
export function reflectionClient(address: string, creds: grpc.ChannelCredentials): grpc.Client {
  return new reflectionProto.grpc.reflection.v1.ServerReflection(address, creds, CLIENT_OPTIONS);
}

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] } | null;
  error_response?: { error_code: number; error_message: string } | null;
}

/** Asks the server for its service list over the reflection stream; rejects with the stream's error. */
export function listServices(client: grpc.Client, deadlineMs = 5000): Promise<string[]> {
  const fn = (
    client as unknown as Record<string, (md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientDuplexStream<object, ReflectionResponse>>
  )['ServerReflectionInfo']!;
  return new Promise((resolve, reject) => {
    const stream = fn.call(client, new grpc.Metadata(), { deadline: Date.now() + deadlineMs });
    stream.on('data', (res: ReflectionResponse) => {
      if (res.list_services_response) resolve(res.list_services_response.service.map((s) => s.name));
      else reject(new Error(`unexpected reflection answer: ${JSON.stringify(res)}`));
      stream.end();
    });
    stream.on('error', reject);
    stream.write({ host: '', list_services: '*' });
  });
}
