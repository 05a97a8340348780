/**
 * The agent's configuration: every environment variable of the contract (spec §5), parsed and
 * checked once at start-up. `loadConfig` throws a ConfigError naming the first bad variable;
 * nothing falls back silently. Only `main.ts` passes `process.env` in; tests pass objects.
 */
import os from 'node:os';
import { MAX_MEMORY_MB, MIN_MEMORY_MB } from '../runtime/limits.js';
import { defaultRegistryHost, parseHostList, parseHostPattern, type HostPattern } from '../runtime/containerd/image/registry-hosts.js';
import path from 'node:path';
import {
  ConfigError,
  ipv4ToString,
  parseIpv4Cidr,
  readBool,
  readEnum,
  readInt,
  readIpv4,
  readString,
  readUnixSocket,
  type Env,
} from './parse.js';

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

export interface CniConfig {
  readonly confDir: string;
  readonly confFile: string;
  readonly binDirs: readonly string[];
  /** Used only when the conflist is generated. */
  readonly subnet: string;
  readonly bridge: string;
  readonly gatewayIp: string;
  readonly dnsServer: string;
  readonly netDir: string;
}

export interface Config {
  readonly port: number;
  readonly runtime: RuntimeKind;
  readonly env: string;
  readonly brand: string;
  readonly containerd: {
    readonly socket: string;
    readonly namespace: string;
    readonly runtime: string;
    readonly snapshotter: string;
  };
  readonly cni: CniConfig;
  readonly stateDir: string;
  readonly registry: {
    /** Host[:port][/path prefix] used to resolve a blank image; '' = none. */
    readonly defaultRegistry: string;
    /** Registries images may be pulled from (AGENT_ALLOWED_REGISTRIES). */
    readonly allowed: readonly HostPattern[];
    /** Registries reached over plain HTTP (CONTAINER_REGISTRY_INSECURE); empty = none. */
    readonly insecure: readonly HostPattern[];
    readonly caFile: string | undefined;
    /** Directory holding the docker-style config.json with `auths`. */
    readonly dockerConfigDir: string;
  };
  readonly tag: string;
  readonly pullPolicy: PullPolicy;
  /** Bounds on pulls and imports (AGENT_MAX_CONCURRENT_PULLS, AGENT_IMAGE_MAX_*). */
  readonly images: ImageBounds;
  readonly defaultMemoryMb: number;
  readonly invoke: {
    readonly maxResponseBytes: number;
    readonly defaultTimeoutMs: number;
  };
  /** undefined when TLS is disabled (AGENT_GRPC_TLS_DISABLED=1). */
  readonly tls: TlsConfig | undefined;
  readonly reflection: boolean;
  readonly metricsPort: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly shutdownPolicy: ShutdownPolicy;
  /** How long SIGTERM waits for in-flight RPCs before cancelling them. */
  readonly shutdownGraceMs: number;
  /** 0 = off. Workers unused for longer are destroyed (issue 6). */
  readonly workerIdleTtlSeconds: number;
  /** Size cap of each worker's stdout/stderr log in bytes; 0 = no cap (issue 6 §5). */
  readonly workerLogMaxBytes: number;
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

/**
 * A host list variable: comma-separated patterns. For CONTAINER_REGISTRY_INSECURE,
 * `1`/`true`/`yes`/`on` means the CONTAINER_REGISTRY host and `0`/`false`/`no`/`off` none.
 */
function readHostList(env: Env, name: string, fallback: readonly string[], registryHost: string, boolWords: boolean): HostPattern[] {
  const raw = readString(env, name);
  try {
    if (raw === undefined) return fallback.map((h) => parseHostPattern(h));
    if (boolWords) {
      const word = raw.toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(word)) return [parseHostPattern(registryHost)];
      if (['0', 'false', 'no', 'off'].includes(word)) return [];
    }
    return parseHostList(raw);
  } catch (err) {
    throw new ConfigError(name, (err as Error).message);
  }
}

/** `safe()` of the contract: lower-case, keep [a-z0-9._-], fold separator runs to '-', trim them. */
export function safeName(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/[._-]{2,}/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '');
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIB = 1024 * 1024;

/** Parses and validates the whole configuration. Throws ConfigError on the first bad value. */
export function loadConfig(env: Env): Config {
  const brandRaw = readString(env, 'ESB_BRAND_SLUG') ?? 'esb';
  const brand = safeName(brandRaw);
  if (brand === '' || !/^[a-z0-9]/.test(brand)) throw new ConfigError('ESB_BRAND_SLUG', `not usable as a name prefix: ${JSON.stringify(brandRaw)}`);
  const envName = readString(env, 'ENV') ?? 'default';
  if (safeName(envName) === '') throw new ConfigError('ENV', `must contain a letter or digit, got ${JSON.stringify(envName)}`);

  const subnetRaw = readString(env, 'CNI_SUBNET') ?? '10.88.0.0/16';
  const subnet = parseIpv4Cidr('CNI_SUBNET', subnetRaw);
  const gatewayIp = readIpv4(env, 'CNI_GW_IP') ?? ipv4ToString(subnet.network + 1);
  const confDir = readString(env, 'CNI_CONF_DIR') ?? '/etc/cni/net.d';
  const confFile = readString(env, 'CNI_CONF_FILE') ?? path.join(confDir, `10-${brand}-net.conflist`);
  const binDirs = (readString(env, 'CNI_BIN_DIR') ?? '/opt/cni/bin').split(':').filter((d) => d !== '');
  for (const d of binDirs) if (!path.isAbsolute(d)) throw new ConfigError('CNI_BIN_DIR', `expected absolute directories, got ${JSON.stringify(d)}`);
  const bridge = readString(env, 'CNI_BRIDGE') ?? `${brand}0`;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(bridge)) throw new ConfigError('CNI_BRIDGE', `expected a Linux interface name of at most 15 characters, got ${JSON.stringify(bridge)}`);

  const tlsDisabled = readBool(env, 'AGENT_GRPC_TLS_DISABLED', false);
  // Set but blank means "no registry": a blank image then resolves to safe(fn):tag (spec §3).
  const registry = env['CONTAINER_REGISTRY'] !== undefined ? env['CONTAINER_REGISTRY'].trim() : 'registry:5010';
  if (/\s|^[a-z]+:\/\//i.test(registry)) throw new ConfigError('CONTAINER_REGISTRY', `expected host[:port][/path] without a scheme, got ${JSON.stringify(registry)}`);

  const dockerHost = readString(env, 'DOCKER_HOST') ?? 'unix:///var/run/docker.sock';
  if (!/^(unix:\/\/\/.+|tcp:\/\/[^/]+:\d+\/?)$/.test(dockerHost)) throw new ConfigError('DOCKER_HOST', `expected unix:///path or tcp://host:port, got ${JSON.stringify(dockerHost)}`);

  const registryHost = defaultRegistryHost(registry);
  const home = env['HOME'] ?? os.homedir();
  return Object.freeze({
    port: readInt(env, 'PORT', 50051, 0, 65535),
    runtime: readEnum<RuntimeKind>(env, 'AGENT_RUNTIME', 'containerd', ['containerd', 'docker']),
    env: envName,
    brand,
    containerd: Object.freeze({
      socket: readUnixSocket(env, 'CONTAINERD_SOCKET', '/run/containerd/containerd.sock'),
      namespace: readString(env, 'CONTAINERD_NAMESPACE') ?? brand,
      runtime: readString(env, 'CONTAINERD_RUNTIME') ?? 'io.containerd.runc.v2',
      snapshotter: readString(env, 'CONTAINERD_SNAPSHOTTER') ?? 'overlayfs',
    }),
    cni: Object.freeze({
      confDir,
      confFile,
      binDirs: Object.freeze(binDirs),
      subnet: `${ipv4ToString(subnet.network)}/${subnet.prefix}`,
      bridge,
      gatewayIp,
      dnsServer: readIpv4(env, 'CNI_DNS_SERVER') ?? gatewayIp,
      netDir: readString(env, 'CNI_NET_DIR') ?? '/var/lib/cni/networks',
    }),
    stateDir: readString(env, 'AGENT_STATE_DIR') ?? '/var/lib/esb-agent',
    registry: Object.freeze({
      defaultRegistry: registry.replace(/\/+$/, ''),
      allowed: Object.freeze(readHostList(env, 'AGENT_ALLOWED_REGISTRIES', [registryHost], registryHost, false)),
      insecure: Object.freeze(readHostList(env, 'CONTAINER_REGISTRY_INSECURE', [], registryHost, true)),
      caFile: readString(env, 'CONTAINER_REGISTRY_CA_FILE'),
      dockerConfigDir: readString(env, 'DOCKER_CONFIG') ?? path.join(home, '.docker'),
    }),
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
    logLevel: readEnum<LogLevel>(env, 'AGENT_LOG_LEVEL', readEnum<LogLevel>(env, 'LOG_LEVEL', 'info', LOG_LEVELS), LOG_LEVELS),
    logFormat: readEnum<LogFormat>(env, 'AGENT_LOG_FORMAT', 'json', ['json', 'pretty']),
    shutdownPolicy: readEnum<ShutdownPolicy>(env, 'AGENT_SHUTDOWN_POLICY', 'keep', ['keep', 'destroy']),
    shutdownGraceMs: readInt(env, 'AGENT_SHUTDOWN_GRACE_MS', 30_000, 0, 10 * 60_000),
    workerIdleTtlSeconds: readInt(env, 'AGENT_WORKER_IDLE_TTL_SECONDS', 0, 0, 365 * 24 * 3600),
    workerLogMaxBytes: readInt(env, 'AGENT_WORKER_LOG_MAX_BYTES', 10 * MIB, 0, 64 * 1024 * MIB),
    docker: Object.freeze({
      host: dockerHost,
      network: readString(env, 'CONTAINERS_NETWORK') ?? 'bridge',
    }),
  });
}

/** Every variable `loadConfig` reads, for the README check and `doctor`. */
export const CONFIG_VARIABLES = [
  'PORT', 'AGENT_RUNTIME', 'ENV', 'ESB_BRAND_SLUG', 'CONTAINERD_SOCKET', 'CONTAINERD_NAMESPACE',
  'CONTAINERD_RUNTIME', 'CONTAINERD_SNAPSHOTTER', 'CNI_CONF_DIR', 'CNI_CONF_FILE', 'CNI_BIN_DIR',
  'CNI_SUBNET', 'CNI_BRIDGE', 'CNI_GW_IP', 'CNI_DNS_SERVER', 'CNI_NET_DIR', 'AGENT_STATE_DIR',
  'CONTAINER_REGISTRY', 'CONTAINER_REGISTRY_INSECURE', 'CONTAINER_REGISTRY_CA_FILE', 'DOCKER_CONFIG',
  'AGENT_ALLOWED_REGISTRIES', 'ESB_TAG', 'IMAGE_PULL_POLICY', 'AGENT_MAX_CONCURRENT_PULLS', 'AGENT_IMAGE_MAX_LAYERS',
  'AGENT_IMAGE_MAX_LAYER_BYTES', 'AGENT_IMAGE_MAX_BYTES', 'AGENT_DEFAULT_MEMORY_MB', 'AGENT_INVOKE_MAX_RESPONSE_SIZE',
  'AGENT_INVOKE_DEFAULT_TIMEOUT_MS', 'AGENT_GRPC_TLS_DISABLED', 'AGENT_GRPC_CERT_PATH',
  'AGENT_GRPC_KEY_PATH', 'AGENT_GRPC_CA_CERT_PATH', 'AGENT_GRPC_REFLECTION', 'AGENT_METRICS_PORT',
  'AGENT_LOG_LEVEL', 'LOG_LEVEL', 'AGENT_LOG_FORMAT', 'AGENT_SHUTDOWN_POLICY', 'AGENT_SHUTDOWN_GRACE_MS',
  'AGENT_WORKER_IDLE_TTL_SECONDS', 'AGENT_WORKER_LOG_MAX_BYTES', 'DOCKER_HOST', 'CONTAINERS_NETWORK',
] as const;
