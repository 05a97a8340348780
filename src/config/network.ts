/**
 * The network part of the configuration: the CNI network workers join (CNI_*) and the host
 * ports the worker firewall lets them reach (AGENT_WORKER_ALLOWED_HOST_PORTS).
 */
import path from 'node:path';
import { ConfigError, ipv4ToString, parseIpv4Cidr, readIpv4, readString, type Env } from './parse.js';

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

/** One host port a worker may reach: `port` or `port/proto`. */
export interface HostPort {
  readonly port: number;
  readonly proto: 'tcp' | 'udp';
}

/** CNI_*: the conflist (generated from subnet, bridge and gateway when absent) and plugin dirs. */
export function readCniConfig(env: Env, brand: string): CniConfig {
  const subnetRaw = readString(env, 'CNI_SUBNET') ?? '10.88.0.0/16';
  const subnet = parseIpv4Cidr('CNI_SUBNET', subnetRaw);
  const gatewayIp = readIpv4(env, 'CNI_GW_IP') ?? ipv4ToString(subnet.network + 1);
  const confDir = readString(env, 'CNI_CONF_DIR') ?? '/etc/cni/net.d';
  const confFile = readString(env, 'CNI_CONF_FILE') ?? path.join(confDir, `10-${brand}-net.conflist`);
  const binDirs = (readString(env, 'CNI_BIN_DIR') ?? '/opt/cni/bin').split(':').filter((d) => d !== '');
  for (const d of binDirs)
    if (!path.isAbsolute(d)) throw new ConfigError('CNI_BIN_DIR', `expected absolute directories, got ${JSON.stringify(d)}`);
  const bridge = readString(env, 'CNI_BRIDGE') ?? `${brand}0`;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(bridge))
    throw new ConfigError('CNI_BRIDGE', `expected a Linux interface name of at most 15 characters, got ${JSON.stringify(bridge)}`);
  return Object.freeze({
    confDir,
    confFile,
    binDirs: Object.freeze(binDirs),
    subnet: `${ipv4ToString(subnet.network)}/${subnet.prefix}`,
    bridge,
    gatewayIp,
    dnsServer: readIpv4(env, 'CNI_DNS_SERVER') ?? gatewayIp,
    netDir: readString(env, 'CNI_NET_DIR') ?? '/var/lib/cni/networks',
  });
}

/**
 * A comma-separated list of `port` (tcp) or `port/tcp` / `port/udp`; blank = none. Duplicates
 * are dropped, the order kept.
 */
export function readHostPorts(env: Env, name: string): HostPort[] {
  const raw = readString(env, name);
  if (raw === undefined) return [];
  const out: HostPort[] = [];
  for (const item of raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')) {
    const m = /^(\d{1,5})(?:\/(tcp|udp))?$/i.exec(item);
    const port = m ? Number(m[1]) : NaN;
    if (!m || port < 1 || port > 65535)
      throw new ConfigError(
        name,
        `expected a comma-separated list of port or port/tcp or port/udp (ports 1-65535), got ${JSON.stringify(item)}`,
      );
    const proto = (m[2]?.toLowerCase() ?? 'tcp') as HostPort['proto'];
    if (!out.some((p) => p.port === port && p.proto === proto)) out.push({ port, proto });
  }
  return out;
}
