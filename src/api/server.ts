/**
 * The gRPC server: AgentService over mTLS (or plaintext when AGENT_GRPC_TLS_DISABLED=1),
 * explicit message and stream limits, admission (client allowlist, in-flight cap), health,
 * optional reflection, and graceful shutdown.
 *
 * What a client must set: a receive limit of at least AGENT_INVOKE_MAX_RESPONSE_SIZE + 64 KiB
 * for InvokeWorker (grpc's default is 4 MiB: docs/contract.md#gateway), and a client certificate with the clientAuth
 * usage signed by AGENT_GRPC_CA_CERT_PATH (and listed in AGENT_GRPC_ALLOWED_CLIENTS if set).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { protoPath as HEALTH_PROTO_PATH } from 'grpc-health-check';
import { plaintextExposed, type Config, type TlsConfig } from '../config/config.js';
import { ConfigError, hostPort } from '../config/parse.js';
import { errnoCode, errorText } from '../errors.js';
import type { ProtoGrpcType } from '../gen/agent/agent.js';
import type { AgentServiceHandlers } from '../gen/agent/esb/agent/v1/AgentService.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { PROTO_LOADER_OPTIONS } from '../proto-options.js';
import type { Runtime } from '../runtime/runtime.js';
import { Admission } from './admission.js';
import { loadAgentPackage } from './proto.js';
import { HealthMonitor } from './health.js';
import { createAgentService, type Invoker } from './service.js';
import { InflightTracker, unary, type UnaryDeps } from './status.js';
import { LIMITS } from './validate.js';

const KIB = 1024;
const MIB = 1024 * KIB;

/**
 * Receive limit: the largest InvokeWorker payload plus room for path, headers and ids (an
 * EnsureContainer with the largest env is far smaller). grpc's default of 4 MiB cannot carry a
 * 6 MB Lambda payload. grpc-js checks it while decoding, before any handler runs, and answers
 * RESOURCE_EXHAUSTED: this is what bounds the request one call can hold.
 */
export const MAX_RECEIVE_MESSAGE_BYTES = LIMITS.invokePayloadBytes + MIB;

/** Room for the status code, headers and framing of an InvokeWorker reply around its body. */
export const RESPONSE_OVERHEAD_BYTES = 64 * KIB;

/** The send limit never drops below this, so a large ListContainers fits whatever the invoke cap. */
export const MIN_SEND_MESSAGE_BYTES = 16 * MIB;

/**
 * Server keepalive: ping an idle connection every 5 minutes and drop it when the ping is not
 * answered in 20 s, so a vanished gateway does not leave half-open connections behind.
 */
export const KEEPALIVE_TIME_MS = 5 * 60_000;
export const KEEPALIVE_TIMEOUT_MS = 20_000;

/**
 * After the last in-flight RPC has answered, how long shutdown waits for connections to close
 * by themselves (so answers already written are flushed) before cutting the long-lived streams
 * (health Watch, reflection) that would otherwise hold it until the grace period ends.
 */
export const SHUTDOWN_FLUSH_MS = 1000;

/** After a forced shutdown, how long to wait for the cancelled handlers to finish their cleanup. */
export const HANDLER_SETTLE_MS = 10_000;

/** The send limit for a given InvokeWorker response cap. */
export function maxSendMessageBytes(maxResponseBytes: number): number {
  return Math.max(maxResponseBytes + RESPONSE_OVERHEAD_BYTES, MIN_SEND_MESSAGE_BYTES);
}

/** grpc-js server options: explicit message and stream limits, keepalive (docs/contract.md#message-limits). */
export function grpcServerOptions(config: Pick<Config, 'invoke' | 'grpcMaxConcurrentStreams'>): grpc.ServerOptions {
  return {
    'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
    'grpc.max_send_message_length': maxSendMessageBytes(config.invoke.maxResponseBytes),
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    'grpc.max_concurrent_streams': config.grpcMaxConcurrentStreams,
  };
}

/**
 * The one start-up warning about who can reach the API, or undefined when nothing is risky:
 * plaintext on loopback (any local process can run containers), plaintext on a wider address
 * (anyone who reaches it can), or mTLS without an allowlist (any certificate of the CA can).
 */
export function exposureWarning(config: Pick<Config, 'tls' | 'grpcAddress' | 'allowedClients'>): string | undefined {
  if (plaintextExposed(config)) {
    return `gRPC is plaintext (AGENT_GRPC_TLS_DISABLED=1) on ${config.grpcAddress}, which is not loopback (AGENT_GRPC_ADDRESS): anyone who can reach this port can run containers as root on this host; use mTLS, or a loopback address`;
  }
  if (config.tls === undefined) {
    return `gRPC is plaintext (AGENT_GRPC_TLS_DISABLED=1) on loopback ${config.grpcAddress}: any local process can run containers as root on this host`;
  }
  if (config.allowedClients.length === 0) {
    return "AGENT_GRPC_ALLOWED_CLIENTS is empty: any client certificate signed by AGENT_GRPC_CA_CERT_PATH may call the agent; list the gateway's certificate identities to narrow it";
  }
  return undefined;
}

/** PEM contents of the server's TLS files. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
  /** The server certificate's subject and expiry, for the start-up log. */
  readonly subject: string;
  readonly validTo: string;
}

function readPem(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = errnoCode(err);
    throw new ConfigError(variable, `cannot read ${file} (${code ?? errorText(err)}); it must be a readable PEM file`);
  }
}

function parseCert(variable: string, file: string, pem: Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(variable, `${file} is not a PEM certificate (${errorText(err)})`);
  }
}

/**
 * Reads and checks the TLS files at start-up, so a bad file stops the agent with a message
 * naming its variable instead of failing every handshake later: each must be readable PEM, and
 * the key must belong to the certificate. Throws ConfigError.
 */
export function loadTlsMaterial(config: TlsConfig): TlsMaterial {
  const cert = readPem('AGENT_GRPC_CERT_PATH', config.certPath);
  const key = readPem('AGENT_GRPC_KEY_PATH', config.keyPath);
  const ca = readPem('AGENT_GRPC_CA_CERT_PATH', config.caCertPath);
  const x509 = parseCert('AGENT_GRPC_CERT_PATH', config.certPath, cert);
  parseCert('AGENT_GRPC_CA_CERT_PATH', config.caCertPath, ca);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch (err) {
    throw new ConfigError('AGENT_GRPC_KEY_PATH', `${config.keyPath} is not a PEM private key (${errorText(err)})`);
  }
  if (!x509.checkPrivateKey(keyObject)) {
    throw new ConfigError('AGENT_GRPC_KEY_PATH', `${config.keyPath} does not belong to the certificate in ${config.certPath}`);
  }
  return { cert, key, ca, subject: x509.subject.replace(/\n/g, ', '), validTo: x509.validTo };
}

/**
 * Server credentials. With TLS: the client must present a certificate that chains to the
 * configured CA. grpc-js passes the CA as Node's `ca` option, which *replaces* the system
 * store, so a certificate from a public CA is refused. Without: plaintext (exposureWarning
 * says so once at start-up).
 */
export function serverCredentials(material: TlsMaterial | undefined, log: Logger): grpc.ServerCredentials {
  if (material === undefined) return grpc.ServerCredentials.createInsecure();
  // Node's default minimum is TLS 1.2; a `--tls-min-v1.0` flag could lower it for the whole
  // process, and grpc-js offers no per-server option, so hold the floor here (docs/contract.md#tls).
  if (tls.DEFAULT_MIN_VERSION === 'TLSv1' || tls.DEFAULT_MIN_VERSION === 'TLSv1.1') {
    log.warn({ was: tls.DEFAULT_MIN_VERSION }, 'raising the TLS minimum version to TLSv1.2');
    tls.DEFAULT_MIN_VERSION = 'TLSv1.2';
  }
  return grpc.ServerCredentials.createSsl(material.ca, [{ cert_chain: material.cert, private_key: material.key }], true);
}

/** grpc.health.v1, for reflection (grpc-health-check ships the proto). */
function loadHealthPackage(): protoLoader.PackageDefinition {
  return protoLoader.loadSync('health/v1/health.proto', {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: [path.resolve(HEALTH_PROTO_PATH, '../../..')],
  });
}

export interface AgentServerOptions {
  readonly config: Config;
  readonly runtime: Runtime;
  /** Absent: InvokeWorker answers UNIMPLEMENTED. */
  readonly invoker?: Invoker | undefined;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** TLS files already read; default: read from `config.tls` now (throws ConfigError). */
  readonly tls?: TlsMaterial | undefined;
  /** Health poll interval; default HEALTH_POLL_MS. */
  readonly healthPollMs?: number;
}

/** What `shutdown()` did. */
export interface ShutdownResult {
  /** True when in-flight RPCs were cancelled because the grace period ran out. */
  readonly forced: boolean;
  /** RPC handlers still running when shutdown returned (0 unless they ignored cancellation). */
  readonly stillRunning: number;
}

/** The agent's gRPC server. Create with `createAgentServer`, then `listen()`. */
export class AgentServer {
  /** The grpc-js server (AgentService, Health, and Reflection when enabled). */
  readonly server: grpc.Server;
  readonly health: HealthMonitor;
  /** RPC handlers that have not answered yet. */
  readonly inflight = new InflightTracker();
  /** Client allowlist and in-flight cap, ahead of every handler. */
  readonly admission: Admission;
  readonly #credentials: grpc.ServerCredentials;
  readonly #config: Config;
  readonly #log: Logger;
  #port: number | undefined;
  #shutdown: Promise<ShutdownResult> | undefined;

  constructor(opts: AgentServerOptions) {
    const { config, runtime, invoker, log, metrics } = opts;
    this.#config = config;
    this.#log = log.child({ module: 'grpc' });
    const material = opts.tls ?? (config.tls ? loadTlsMaterial(config.tls) : undefined);
    if (material) this.#log.info({ subject: material.subject, validTo: material.validTo }, 'mTLS enabled');
    this.#credentials = serverCredentials(material, this.#log);
    const warning = exposureWarning(config);
    if (warning !== undefined) this.#log.warn({ address: config.grpcAddress, tls: material !== undefined }, warning);
    this.admission = new Admission({ allowedClients: config.allowedClients, maxInFlight: config.grpcMaxInFlight, log: this.#log, metrics });
    this.server = new grpc.Server({ ...grpcServerOptions(config), interceptors: [this.admission.interceptor] });

    const agentPackage = loadAgentPackage();
    const proto = grpc.loadPackageDefinition(agentPackage) as unknown as ProtoGrpcType;
    const svc = createAgentService({ runtime, invoker, invokeDefaultTimeoutMs: config.invoke.defaultTimeoutMs });
    const deps: UnaryDeps = { log: log.child({ module: 'rpc' }), metrics, inflight: this.inflight };
    const handlers: AgentServiceHandlers = {
      EnsureContainer: unary('EnsureContainer', svc.ensureContainer, deps),
      DestroyContainer: unary('DestroyContainer', svc.destroyContainer, deps),
      PauseContainer: unary('PauseContainer', svc.pauseContainer, deps),
      ResumeContainer: unary('ResumeContainer', svc.resumeContainer, deps),
      ListContainers: unary('ListContainers', svc.listContainers, deps),
      GetContainerMetrics: unary('GetContainerMetrics', svc.getContainerMetrics, deps),
      InvokeWorker: unary('InvokeWorker', svc.invokeWorker, deps),
    };
    this.server.addService(proto.esb.agent.v1.AgentService.service, handlers);

    this.health = new HealthMonitor({ runtime, log: this.#log, ...(opts.healthPollMs === undefined ? {} : { pollMs: opts.healthPollMs }) });
    this.health.implementation.addToServer(this.server);

    if (config.reflection) {
      // Health is added to the reflected definition so tools can find it too (docs/design.md#reflection).
      new ReflectionService({ ...agentPackage, ...loadHealthPackage() }).addToServer(this.server);
      this.#log.info('gRPC reflection enabled (AGENT_GRPC_REFLECTION=1)');
    }
  }

  /** The bound port; throws before `listen()` resolved. */
  get port(): number {
    if (this.#port === undefined) throw new Error('the gRPC server is not listening yet');
    return this.#port;
  }

  /**
   * Checks the backend once (so health is right from the first request), binds
   * `<AGENT_GRPC_ADDRESS>:<PORT>` (0 = an ephemeral port) and starts health polling. Resolves
   * to the bound port; rejects when the address cannot be bound.
   */
  async listen(): Promise<number> {
    await this.health.check();
    const address = hostPort(this.#config.grpcAddress, this.#config.port);
    this.#port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, this.#credentials, (err, port) => {
        if (err) reject(new Error(`cannot listen on ${address} (AGENT_GRPC_ADDRESS, PORT): ${err.message}`, { cause: err }));
        else resolve(port);
      });
    });
    this.health.start();
    return this.#port;
  }

  /**
   * Graceful stop (docs/state-and-labels.md#shutdown): health goes NOT_SERVING, the listener closes and new calls are
   * refused, in-flight RPCs may finish until `graceMs` (default AGENT_SHUTDOWN_GRACE_MS); then
   * the rest are cancelled (their handlers see the abort) and awaited up to HANDLER_SETTLE_MS.
   * Idempotent: later calls return the first call's promise.
   */
  shutdown(graceMs: number = this.#config.shutdownGraceMs): Promise<ShutdownResult> {
    this.#shutdown ??= this.#stop(graceMs);
    return this.#shutdown;
  }

  async #stop(graceMs: number): Promise<ShutdownResult> {
    this.health.stop();
    const running = this.inflight.count;
    this.#log.info({ inflight: running, graceMs }, 'gRPC server draining');
    const closed = new Promise<'closed'>((resolve) => {
      this.server.tryShutdown(() => {
        resolve('closed');
      });
    });
    const timers: NodeJS.Timeout[] = [];
    let raced = false;
    const after = <T>(ms: number, value: T): Promise<T> =>
      new Promise((resolve) => {
        // A timer asked for after the race is over would only hold the process open.
        if (raced) resolve(value);
        else timers.push(setTimeout(resolve, ms, value));
      });
    const deadline = Date.now() + graceMs;
    // Once every RPC has answered, only long-lived streams (health Watch, reflection) can keep
    // tryShutdown waiting; give the answers a moment to flush, then stop waiting for streams.
    const drained = this.inflight
      .drained()
      .then(() => after(Math.min(SHUTDOWN_FLUSH_MS, Math.max(0, deadline - Date.now())), 'drained' as const));
    const outcome = await Promise.race([closed, drained, after(graceMs, 'grace' as const)]);
    raced = true;
    for (const t of timers) clearTimeout(t);
    let forced = false;
    if (outcome !== 'closed') {
      forced = outcome === 'grace' && this.inflight.count > 0;
      if (forced) this.#log.warn({ inflight: this.inflight.count }, 'grace period over: cancelling the RPCs still running');
      this.server.forceShutdown();
      // Cancelled handlers run their own cleanup (docs/contract.md#rules): wait for it, within bounds.
      const settleTimers: NodeJS.Timeout[] = [];
      await Promise.race([this.inflight.drained(), new Promise((resolve) => settleTimers.push(setTimeout(resolve, HANDLER_SETTLE_MS)))]);
      for (const t of settleTimers) clearTimeout(t);
    }
    this.#log.info({ forced, stillRunning: this.inflight.count }, 'gRPC server stopped');
    return { forced, stillRunning: this.inflight.count };
  }
}

/**
 * Builds the gRPC server (not yet listening). Reads the TLS files unless `tls` is given, so a
 * missing or bad file throws ConfigError naming AGENT_GRPC_CERT_PATH / _KEY_PATH / _CA_CERT_PATH.
 */
export function createAgentServer(opts: AgentServerOptions): AgentServer {
  return new AgentServer(opts);
}
