/**
 * The agent's configuration: every environment variable of the contract (docs/configuration.md#variables), parsed and
 * checked once at start-up. `loadConfig` throws a ConfigError naming the first bad variable;
 * nothing falls back silently. Only `main.ts` passes `process.env` in; tests pass objects.
 */
import os from 'node:os';
import { MAX_MEMORY_MB, MIN_MEMORY_MB } from '../worker/limits.js';
import { safeName } from '../worker/safe-name.js';
import path from 'node:path';
import {
  ConfigError,
  readBool,
  readEnum,
  readInt,
  isLoopbackAddress,
  readList,
  readListenAddress,
  readString,
  readUnixSocket,
  type Env,
} from './parse.js';
import { readCniConfig, readHostPorts, type CniConfig, type HostPort } from './network.js';
import { readDefaultRegistry, readRegistryConfig, type RegistryConfig } from './registry.js';

// The areas' own modules; their names stay importable from here.
export { readHostPorts, type CniConfig, type HostPort } from './network.js';
export type { RegistryConfig } from './registry.js';

export type RuntimeKind = 'containerd' | 'docker';
export type PullPolicy = 'if-not-present' | 'always' | 'never';
export type ShutdownPolicy = 'keep' | 'destroy';
export type LogFormat = 'json' | 'pretty';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface TlsConfig {
  readonly certPath: string;
  readonly keyPath: string;
  readonly caCertPath: string;
}

export interface Config {
  readonly port: number;
  /** The address gRPC binds (AGENT_GRPC_ADDRESS), an IP literal without brackets. */
  readonly grpcAddress: string;
  /** True when AGENT_GRPC_ADDRESS was set, false when the default applied. */
  readonly grpcAddressExplicit: boolean;
  /**
   * Client identities allowed to call (AGENT_GRPC_ALLOWED_CLIENTS), matched against the client
   * certificate's DNS/URI SANs, or its CN when it has neither. Empty: any certificate of the CA.
   */
  readonly allowedClients: readonly string[];
  /** Cap on RPCs being handled at once over every connection; health is not counted. */
  readonly grpcMaxInFlight: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may open at once. */
  readonly grpcMaxConcurrentStreams: number;
  readonly runtime: RuntimeKind;
  readonly env: string;
  readonly brand: string;
  readonly containerd: {
    readonly socket: string;
    readonly namespace: string;
    readonly runtime: string;
    readonly snapshotter: string;
    /** cgroupfs (runc writes the cgroup) or systemd (a scope unit per worker). */
    readonly cgroupDriver: 'cgroupfs' | 'systemd';
    /** The OCI runtime binary the runc shim runs (its `BinaryName` option); undefined = the shim's default, runc. */
    readonly runcBinary: string | undefined;
  };
  readonly cni: CniConfig;
  readonly stateDir: string;
  readonly registry: RegistryConfig;
  readonly tag: string;
  readonly pullPolicy: PullPolicy;
  /** Bounds on pulls and imports (AGENT_MAX_CONCURRENT_PULLS, AGENT_IMAGE_MAX_*). */
  readonly images: ImageBounds;
  readonly defaultMemoryMb: number;
  readonly invoke: {
    readonly maxResponseBytes: number;
    readonly defaultTimeoutMs: number;
    /** Calls that may wait behind the running one on a worker; more are refused at once. */
    readonly maxQueue: number;
  };
  /** undefined when TLS is disabled (AGENT_GRPC_TLS_DISABLED=1). */
  readonly tls: TlsConfig | undefined;
  readonly reflection: boolean;
  readonly metricsPort: number;
  /** The address /metrics binds (AGENT_METRICS_ADDRESS). */
  readonly metricsAddress: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly shutdownPolicy: ShutdownPolicy;
  /** How long SIGTERM waits for in-flight RPCs before cancelling them. */
  readonly shutdownGraceMs: number;
  /** 0 = off. Workers unused for longer are destroyed (issue 6). */
  readonly workerIdleTtlSeconds: number;
  /** Size cap of each worker's stdout/stderr log in bytes; 0 = no cap (issue 6 §5). */
  readonly workerLogMaxBytes: number;
  /** The worker's filesystem: a read-only image and a /tmp tmpfs of this many MiB. */
  readonly workerFs: {
    readonly readonlyRootfs: boolean;
    readonly tmpSizeMb: number;
  };
  /** Host-wide bounds on new workers; 0 = no limit. */
  readonly limits: {
    readonly maxWorkers: number;
    readonly maxTotalMemoryMb: number;
  };
  /** Network default-deny for workers (src/netfilter/). */
  readonly workerFirewall: {
    /** false when the operator runs their own filter (AGENT_WORKER_FIREWALL=false). */
    readonly enabled: boolean;
    /** Host ports workers may reach besides DNS (AGENT_WORKER_ALLOWED_HOST_PORTS). */
    readonly allowedHostPorts: readonly HostPort[];
  };
  readonly docker: {
    /** `unix:///path` or `tcp://host:port`, as given. */
    readonly host: string;
    readonly network: string;
  };
}

export interface ImageBounds {
  /** Pulls and unpacks running at once; more wait in a bounded queue. */
  readonly maxConcurrentPulls: number;
  readonly maxLayers: number;
  /** Compressed bytes of one layer, as declared and as streamed. */
  readonly maxLayerBytes: number;
  /** Compressed bytes of one image (config + layers). */
  readonly maxImageBytes: number;
}

/** gRPC with mTLS listens on every interface: the gateway is usually on another host. */
export const DEFAULT_TLS_GRPC_ADDRESS = '0.0.0.0';
/** Plaintext gRPC listens on loopback only unless AGENT_GRPC_ADDRESS says otherwise. */
export const DEFAULT_PLAINTEXT_GRPC_ADDRESS = '127.0.0.1';
/** /metrics has no authentication: loopback unless the operator opens it. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1';
/**
 * RPCs handled at once. Sized for a 2-vCPU/4 GiB host: each call holds at most one request
 * (≤ 17 MiB) and, for InvokeWorker, one response (≤ AGENT_INVOKE_MAX_RESPONSE_SIZE); typical
 * payloads are KiBs, so 512 calls stay within tens of MiB, while the largest ones are the
 * operator's call to budget.
 */
export const DEFAULT_GRPC_MAX_IN_FLIGHT = 512;
/**
 * Streams per connection. Above the in-flight cap, so a single gateway connection sees
 * RESOURCE_EXHAUSTED at once rather than HTTP/2 queueing on its side, yet a flood of streams
 * on one connection is still bounded.
 */
export const DEFAULT_GRPC_MAX_CONCURRENT_STREAMS = 1024;
/**
 * Invocations waiting behind the running one on a worker (the Lambda RIE runs one at a time).
 * With the 30 s default timeout and functions of about a second, a longer queue would mostly
 * hold calls that time out before their turn.
 */
export const DEFAULT_INVOKE_MAX_QUEUE = 32;

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIB = 1024 * 1024;
/** Lambda's default ephemeral storage (/tmp), in MiB. */
export const DEFAULT_WORKER_TMP_SIZE_MB = 512;
/** Shim runtimes containerd 2.0 removed: refused at start-up rather than at the first Ensure. */
const REMOVED_RUNTIMES: readonly string[] = ['io.containerd.runtime.v1.linux', 'io.containerd.runc.v1'];
/** Default AGENT_MAX_WORKERS: well above what the memory bound admits at the default 128 MiB on a small host. */
export const DEFAULT_MAX_WORKERS = 1000;

/**
 * Default AGENT_MAX_TOTAL_MEMORY_MB: the host's memory less a reserve for the kernel, the
 * page cache, containerd and its shims and the agent itself: 10 % of the host, at least 1 GiB
 * (a 4 GiB host keeps 1 GiB back, a 24 GiB host 2.4 GiB). Memory limits are not overcommitted,
 * so workers at their limits cannot push the host into its OOM killer.
 */
export function defaultMaxTotalMemoryMb(hostMemoryBytes: number): number {
  const hostMb = Math.floor(hostMemoryBytes / MIB);
  return Math.max(MIN_MEMORY_MB, hostMb - Math.max(1024, Math.floor(hostMb / 10)));
}

/** Parses and validates the whole configuration. Throws ConfigError on the first bad value. */
export function loadConfig(env: Env): Config {
  const brandRaw = readString(env, 'ESB_BRAND_SLUG') ?? 'esb';
  const brand = safeName(brandRaw);
  if (brand === '' || !/^[a-z0-9]/.test(brand))
    throw new ConfigError('ESB_BRAND_SLUG', `not usable as a name prefix: ${JSON.stringify(brandRaw)}`);
  const envName = readString(env, 'ENV') ?? 'default';
  if (safeName(envName) === '') throw new ConfigError('ENV', `must contain a letter or digit, got ${JSON.stringify(envName)}`);

  const cni = readCniConfig(env, brand);

  const tlsDisabled = readBool(env, 'AGENT_GRPC_TLS_DISABLED', false);
  const grpcAddressSet = readListenAddress(env, 'AGENT_GRPC_ADDRESS');
  // Plaintext means anyone who reaches the port runs containers as root: by default only this
  // host may. A wider address is the operator's explicit choice (and is logged as a warning).
  const grpcAddress = grpcAddressSet ?? (tlsDisabled ? DEFAULT_PLAINTEXT_GRPC_ADDRESS : DEFAULT_TLS_GRPC_ADDRESS);
  const allowedClients = readList(env, 'AGENT_GRPC_ALLOWED_CLIENTS');
  if (tlsDisabled && allowedClients.length > 0) {
    throw new ConfigError(
      'AGENT_GRPC_ALLOWED_CLIENTS',
      'needs TLS: without client certificates there is no identity to check; unset it or turn TLS on (unset AGENT_GRPC_TLS_DISABLED)',
    );
  }
  for (const c of allowedClients) {
    if (/[\s\p{Cc}]/u.test(c))
      throw new ConfigError(
        'AGENT_GRPC_ALLOWED_CLIENTS',
        `entries are DNS names, URIs or common names without spaces or control characters, got ${JSON.stringify(c)}`,
      );
  }
  const registry = readDefaultRegistry(env);

  const dockerHost = readString(env, 'DOCKER_HOST') ?? 'unix:///var/run/docker.sock';
  if (!/^(unix:\/\/\/.+|tcp:\/\/[^/]+:\d+\/?)$/.test(dockerHost))
    throw new ConfigError('DOCKER_HOST', `expected unix:///path or tcp://host:port, got ${JSON.stringify(dockerHost)}`);

  const containerdRuntime = readString(env, 'CONTAINERD_RUNTIME') ?? 'io.containerd.runc.v2';
  if (REMOVED_RUNTIMES.includes(containerdRuntime)) {
    throw new ConfigError(
      'CONTAINERD_RUNTIME',
      `${containerdRuntime} was removed in containerd 2.0 and cannot pause or report v2 metrics; use io.containerd.runc.v2`,
    );
  }

  const runcBinary = readString(env, 'CONTAINERD_RUNC_BINARY');
  if (runcBinary !== undefined && !(path.isAbsolute(runcBinary) || /^[A-Za-z0-9._-]+$/.test(runcBinary))) {
    throw new ConfigError(
      'CONTAINERD_RUNC_BINARY',
      `expected an absolute path or a command name found on the shim's PATH (runc, crun), got ${JSON.stringify(runcBinary)}`,
    );
  }

  return Object.freeze({
    port: readInt(env, 'PORT', 50051, 0, 65535),
    grpcAddress,
    grpcAddressExplicit: grpcAddressSet !== undefined,
    allowedClients: Object.freeze(allowedClients),
    grpcMaxInFlight: readInt(env, 'AGENT_GRPC_MAX_IN_FLIGHT', DEFAULT_GRPC_MAX_IN_FLIGHT, 1, 1_000_000),
    grpcMaxConcurrentStreams: readInt(env, 'AGENT_GRPC_MAX_CONCURRENT_STREAMS', DEFAULT_GRPC_MAX_CONCURRENT_STREAMS, 1, 1_000_000),
    runtime: readEnum<RuntimeKind>(env, 'AGENT_RUNTIME', 'containerd', ['containerd', 'docker']),
    env: envName,
    brand,
    containerd: Object.freeze({
      socket: readUnixSocket(env, 'CONTAINERD_SOCKET', '/run/containerd/containerd.sock'),
      namespace: readString(env, 'CONTAINERD_NAMESPACE') ?? brand,
      runtime: containerdRuntime,
      snapshotter: readString(env, 'CONTAINERD_SNAPSHOTTER') ?? 'overlayfs',
      cgroupDriver: readEnum<'cgroupfs' | 'systemd'>(env, 'AGENT_CGROUP_DRIVER', 'cgroupfs', ['cgroupfs', 'systemd']),
      runcBinary,
    }),
    cni,
    stateDir: readString(env, 'AGENT_STATE_DIR') ?? '/var/lib/esb-agent',
    registry: readRegistryConfig(env, registry),
    tag: readString(env, 'ESB_TAG') ?? 'latest',
    pullPolicy: readEnum<PullPolicy>(env, 'IMAGE_PULL_POLICY', 'if-not-present', ['if-not-present', 'always', 'never']),
    images: Object.freeze({
      maxConcurrentPulls: readInt(env, 'AGENT_MAX_CONCURRENT_PULLS', 2, 1, 64),
      maxLayers: readInt(env, 'AGENT_IMAGE_MAX_LAYERS', 128, 1, 4096),
      maxLayerBytes: readInt(env, 'AGENT_IMAGE_MAX_LAYER_BYTES', 2048 * MIB, 1, 1024 * 1024 * MIB),
      maxImageBytes: readInt(env, 'AGENT_IMAGE_MAX_BYTES', 4096 * MIB, 1, 1024 * 1024 * MIB),
    }),
    defaultMemoryMb: readInt(env, 'AGENT_DEFAULT_MEMORY_MB', 128, MIN_MEMORY_MB, MAX_MEMORY_MB),
    invoke: Object.freeze({
      maxResponseBytes: readInt(env, 'AGENT_INVOKE_MAX_RESPONSE_SIZE', 10 * MIB, 1, 512 * MIB),
      defaultTimeoutMs: readInt(env, 'AGENT_INVOKE_DEFAULT_TIMEOUT_MS', 30_000, 1, 15 * 60_000),
      maxQueue: readInt(env, 'AGENT_INVOKE_MAX_QUEUE', DEFAULT_INVOKE_MAX_QUEUE, 0, 100_000),
    }),
    tls: tlsDisabled
      ? undefined
      : Object.freeze({
          certPath: readString(env, 'AGENT_GRPC_CERT_PATH') ?? '/app/config/ssl/server.crt',
          keyPath: readString(env, 'AGENT_GRPC_KEY_PATH') ?? '/app/config/ssl/server.key',
          caCertPath: readString(env, 'AGENT_GRPC_CA_CERT_PATH') ?? '/usr/local/share/ca-certificates/rootCA.crt',
        }),
    reflection: readBool(env, 'AGENT_GRPC_REFLECTION', false),
    metricsPort: readInt(env, 'AGENT_METRICS_PORT', 9091, 0, 65535),
    metricsAddress: readListenAddress(env, 'AGENT_METRICS_ADDRESS') ?? DEFAULT_METRICS_ADDRESS,
    logLevel: readEnum<LogLevel>(env, 'AGENT_LOG_LEVEL', readEnum<LogLevel>(env, 'LOG_LEVEL', 'info', LOG_LEVELS), LOG_LEVELS),
    logFormat: readEnum<LogFormat>(env, 'AGENT_LOG_FORMAT', 'json', ['json', 'pretty']),
    shutdownPolicy: readEnum<ShutdownPolicy>(env, 'AGENT_SHUTDOWN_POLICY', 'keep', ['keep', 'destroy']),
    shutdownGraceMs: readInt(env, 'AGENT_SHUTDOWN_GRACE_MS', 30_000, 0, 10 * 60_000),
    workerIdleTtlSeconds: readInt(env, 'AGENT_WORKER_IDLE_TTL_SECONDS', 0, 0, 365 * 24 * 3600),
    workerLogMaxBytes: readInt(env, 'AGENT_WORKER_LOG_MAX_BYTES', 10 * MIB, 0, 64 * 1024 * MIB),
    workerFs: Object.freeze({
      readonlyRootfs: readBool(env, 'AGENT_WORKER_READONLY_ROOTFS', true),
      tmpSizeMb: readInt(env, 'AGENT_WORKER_TMP_SIZE_MB', DEFAULT_WORKER_TMP_SIZE_MB, 1, 10 * 1024),
    }),
    limits: Object.freeze({
      maxWorkers: readInt(env, 'AGENT_MAX_WORKERS', DEFAULT_MAX_WORKERS, 0, 1_000_000),
      maxTotalMemoryMb: readInt(env, 'AGENT_MAX_TOTAL_MEMORY_MB', defaultMaxTotalMemoryMb(os.totalmem()), 0, 1024 * 1024 * 1024),
    }),
    workerFirewall: Object.freeze({
      enabled: readBool(env, 'AGENT_WORKER_FIREWALL', true),
      allowedHostPorts: Object.freeze(readHostPorts(env, 'AGENT_WORKER_ALLOWED_HOST_PORTS')),
    }),
    docker: Object.freeze({
      host: dockerHost,
      network: readString(env, 'CONTAINERS_NETWORK') ?? 'bridge',
    }),
  });
}

/** Every variable `loadConfig` reads, for the docs/configuration.md check and `doctor`. */
export const CONFIG_VARIABLES = [
  'PORT',
  'AGENT_RUNTIME',
  'ENV',
  'ESB_BRAND_SLUG',
  'CONTAINERD_SOCKET',
  'CONTAINERD_NAMESPACE',
  'CONTAINERD_RUNTIME',
  'CONTAINERD_SNAPSHOTTER',
  'AGENT_CGROUP_DRIVER',
  'CONTAINERD_RUNC_BINARY',
  'CNI_CONF_DIR',
  'CNI_CONF_FILE',
  'CNI_BIN_DIR',
  'CNI_SUBNET',
  'CNI_BRIDGE',
  'CNI_GW_IP',
  'CNI_DNS_SERVER',
  'CNI_NET_DIR',
  'AGENT_STATE_DIR',
  'CONTAINER_REGISTRY',
  'CONTAINER_REGISTRY_INSECURE',
  'CONTAINER_REGISTRY_CA_FILE',
  'DOCKER_CONFIG',
  'AGENT_ALLOWED_REGISTRIES',
  'ESB_TAG',
  'IMAGE_PULL_POLICY',
  'AGENT_MAX_CONCURRENT_PULLS',
  'AGENT_IMAGE_MAX_LAYERS',
  'AGENT_IMAGE_MAX_LAYER_BYTES',
  'AGENT_IMAGE_MAX_BYTES',
  'AGENT_DEFAULT_MEMORY_MB',
  'AGENT_INVOKE_MAX_RESPONSE_SIZE',
  'AGENT_INVOKE_DEFAULT_TIMEOUT_MS',
  'AGENT_GRPC_TLS_DISABLED',
  'AGENT_GRPC_CERT_PATH',
  'AGENT_GRPC_KEY_PATH',
  'AGENT_GRPC_CA_CERT_PATH',
  'AGENT_GRPC_REFLECTION',
  'AGENT_METRICS_PORT',
  'AGENT_LOG_LEVEL',
  'LOG_LEVEL',
  'AGENT_LOG_FORMAT',
  'AGENT_SHUTDOWN_POLICY',
  'AGENT_SHUTDOWN_GRACE_MS',
  'AGENT_WORKER_IDLE_TTL_SECONDS',
  'AGENT_WORKER_LOG_MAX_BYTES',
  'AGENT_WORKER_READONLY_ROOTFS',
  'AGENT_WORKER_TMP_SIZE_MB',
  'AGENT_MAX_WORKERS',
  'AGENT_MAX_TOTAL_MEMORY_MB',
  'AGENT_WORKER_FIREWALL',
  'AGENT_WORKER_ALLOWED_HOST_PORTS',
  'DOCKER_HOST',
  'CONTAINERS_NETWORK',
  'AGENT_GRPC_ADDRESS',
  'AGENT_METRICS_ADDRESS',
  'AGENT_GRPC_ALLOWED_CLIENTS',
  'AGENT_GRPC_MAX_IN_FLIGHT',
  'AGENT_GRPC_MAX_CONCURRENT_STREAMS',
  'AGENT_INVOKE_MAX_QUEUE',
] as const;

/** True when gRPC is plaintext on an address other hosts can reach. */
export function plaintextExposed(config: Pick<Config, 'tls' | 'grpcAddress'>): boolean {
  return config.tls === undefined && !isLoopbackAddress(config.grpcAddress);
}
