/**
 * CNI network configuration lists (CNI spec 1.0 §1): loading and checking an operator's
 * `.conflist` (or a single-plugin `.conf`), and generating the agent's default network when
 * the operator has none (docs/configuration.md#generated-conflist; docs/go-agent.md#cni-network for the shape).
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { AgentError, errnoCode, errorText } from '../errors.js';
import { ConfigError, ipv4ToString, parseIpv4Cidr } from '../config/parse.js';
import type { CniConfig } from '../config/config.js';
import { writeFileAtomic } from '../atomic-file.js';
import { isObject } from './result.js';

/** One plugin entry of a list, as written by the operator; `type` names the binary. */
export type CniPluginConf = Readonly<Record<string, unknown>> & { readonly type: string };

/** A checked network configuration list. */
export interface CniNetworkList {
  readonly name: string;
  readonly cniVersion: string;
  /** When true the runtime must not run CHECK for this network (spec 1.0 §1). */
  readonly disableCheck: boolean;
  readonly plugins: readonly CniPluginConf[];
  /** The list as JSON bytes: what libcni caches as `config` next to a result. */
  readonly bytes: Buffer;
  /** Where the list came from, for messages. */
  readonly source: string;
}

/**
 * Spec versions this library drives. 0.1.0/0.2.0 are left out: their results have another
 * shape (`ip4`/`ip6`), and no current plugin needs them. 1.1.0 adds only verbs the agent does
 * not call (STATUS and GC are optional for a runtime) and keeps 1.0.0's result format.
 */
export const SUPPORTED_CNI_VERSIONS: readonly string[] = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** Network names (spec 1.0 §1): alphanumeric first, then alphanumerics, `_`, `.` or `-`. */
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** True when semantic version `v` is ≥ `min` (both plain `x.y.z`). */
export function cniVersionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/**
 * Parses and checks a network configuration list from JSON text. A single-plugin network
 * config (`.conf`: an object with `type` and no `plugins`) is wrapped into a one-plugin list,
 * as libcni's `ConfListFromConf` does. Throws INVALID_ARGUMENT naming `source`.
 */
export function parseNetworkList(text: string | Buffer, source: string): CniNetworkList {
  const bad = (why: string): AgentError => new AgentError('INVALID_ARGUMENT', `CNI network config ${source}: ${why}`);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof text === 'string' ? text : text.toString('utf8'));
  } catch (err) {
    throw new AgentError('INVALID_ARGUMENT', `CNI network config ${source}: not valid JSON: ${errorText(err)}`, { cause: err });
  }
  if (!isObject(doc)) throw bad('expected a JSON object');

  const cniVersion = chooseCniVersion(doc['cniVersion'], doc['cniVersions'], bad);
  const name = doc['name'];
  if (typeof name !== 'string' || !NETWORK_NAME.test(name)) {
    throw bad(`name ${JSON.stringify(name)} is invalid (letters, digits, '_', '.', '-'; starting with a letter or digit)`);
  }
  const disableCheck = doc['disableCheck'] ?? false;
  if (typeof disableCheck !== 'boolean') throw bad(`disableCheck must be true or false, got ${JSON.stringify(disableCheck)}`);

  let rawPlugins: unknown;
  if (doc['plugins'] !== undefined) {
    rawPlugins = doc['plugins'];
  } else if (doc['type'] !== undefined) {
    rawPlugins = [doc];
  } else {
    throw bad('has neither "plugins" (a .conflist) nor "type" (a single-plugin .conf)');
  }
  if (!Array.isArray(rawPlugins) || rawPlugins.length === 0) throw bad('plugins must be a non-empty list');
  const plugins = (rawPlugins as unknown[]).map((p, i) => checkPlugin(p, `plugins[${i}]`, bad));

  const list = doc['plugins'] === undefined ? { cniVersion, name, plugins } : doc;
  return { name, cniVersion, disableCheck, plugins, bytes: Buffer.from(JSON.stringify(list)), source };
}

/**
 * The version to speak. CNI 1.1.0 lets a list name several (`cniVersions`); as libcni does, the
 * highest one this library supports wins, and `cniVersion` is then only a fallback for older
 * runtimes. Plugins are asked at load() whether they speak it.
 */
function chooseCniVersion(single: unknown, several: unknown, bad: (why: string) => AgentError): string {
  const supported = `supported: ${SUPPORTED_CNI_VERSIONS.join(', ')}`;
  if (several !== undefined) {
    if (!Array.isArray(several) || several.some((v) => typeof v !== 'string')) throw bad('cniVersions must be a list of version strings');
    const usable = (several as string[]).filter((v) => SUPPORTED_CNI_VERSIONS.includes(v));
    if (usable.length === 0) throw bad(`none of cniVersions is supported (${supported})`);
    return usable.reduce((best, v) => (cniVersionAtLeast(v, best) ? v : best));
  }
  if (typeof single !== 'string' || single === '') throw bad('cniVersion is missing');
  if (!SUPPORTED_CNI_VERSIONS.includes(single)) throw bad(`cniVersion ${JSON.stringify(single.slice(0, 32))} is not supported (${supported})`);
  return single;
}

function checkPlugin(p: unknown, at: string, bad: (why: string) => AgentError): CniPluginConf {
  if (!isObject(p)) throw bad(`${at} is not an object`);
  const type = p['type'];
  if (!isPluginType(type)) throw bad(`${at}.type ${JSON.stringify(type)} is not a plugin binary name`);
  const caps = p['capabilities'];
  if (caps !== undefined && (!isObject(caps) || Object.values(caps).some((v) => typeof v !== 'boolean'))) {
    throw bad(`${at} (${type}).capabilities must map capability names to true/false`);
  }
  const ipam = p['ipam'];
  if (ipam !== undefined && (!isObject(ipam) || !isPluginType(ipam['type']))) {
    throw bad(`${at} (${type}).ipam must be an object whose "type" names an IPAM plugin binary`);
  }
  return p as CniPluginConf;
}

/** A plugin type is a file name: no path separators (spec 1.0 §1), not `.`/`..`. */
function isPluginType(t: unknown): t is string {
  return typeof t === 'string' && t !== '' && t !== '.' && t !== '..' && !/[/\\\0]/.test(t);
}

/**
 * Reads and checks the list at `file`. A missing or unreadable file → FAILED_PRECONDITION;
 * bad content → INVALID_ARGUMENT. Both name the file.
 */
export async function loadNetworkList(file: string): Promise<CniNetworkList> {
  let text: Buffer;
  try {
    text = await fs.readFile(file);
  } catch (err) {
    const what = errnoCode(err) === 'ENOENT' ? 'does not exist' : `cannot be read: ${errorText(err)}`;
    throw new AgentError('FAILED_PRECONDITION', `CNI network config ${file} ${what}`, { cause: err });
  }
  return parseNetworkList(text, file);
}

/** What the default network is built from: the CNI slice of the config plus the network name. */
export type DefaultNetworkConfig = Pick<CniConfig, 'subnet' | 'bridge' | 'gatewayIp' | 'dnsServer' | 'netDir'> & {
  readonly name: string;
};

/** Choices for the generated network that are not in the agent's config. */
export interface DefaultConflistOptions {
  /**
   * Masquerade traffic from the subnet leaving the host (the bridge plugin's iptables rules).
   * Default true: workers need it to reach registries and APIs. Tests pass false so that
   * iptables stays untouched.
   */
  readonly ipMasq?: boolean;
}

/** The default network's name for a brand: `<brand>-net` (docs/go-agent.md#cni-network). */
export function defaultNetworkName(brand: string): string {
  return `${brand}-net`;
}

/**
 * The default network: cniVersion 1.0.0; `bridge` (gateway on the bridge, hairpin so a
 * worker can reach itself through its own IP, host-local IPAM over the subnet minus the
 * gateway, default route) then `portmap` with the `portMappings` capability. Throws
 * INVALID_ARGUMENT when the subnet or gateway cannot work.
 */
export function defaultConflist(cfg: DefaultNetworkConfig, opts: DefaultConflistOptions = {}): Record<string, unknown> {
  const { ipMasq = true } = opts;
  if (!NETWORK_NAME.test(cfg.name)) throw new AgentError('INVALID_ARGUMENT', `CNI network name ${JSON.stringify(cfg.name)} is invalid`);
  let subnet: { network: number; prefix: number };
  try {
    subnet = parseIpv4Cidr('CNI_SUBNET', cfg.subnet);
  } catch (err) {
    if (err instanceof ConfigError) throw new AgentError('INVALID_ARGUMENT', err.message, { cause: err });
    throw err;
  }
  const size = 2 ** (32 - subnet.prefix);
  const broadcast = subnet.network + size - 1;
  const gw = ipv4ToNumber(cfg.gatewayIp);
  if (gw === undefined || gw <= subnet.network || gw >= broadcast) {
    throw new AgentError('INVALID_ARGUMENT', `CNI gateway ${cfg.gatewayIp} is not a host address in ${cfg.subnet}`);
  }
  // host-local itself never hands out the gateway; trimming it off the ends keeps the range
  // honest in the file, and a gateway in the middle is skipped by host-local.
  let start = subnet.network + 1;
  let end = broadcast - 1;
  if (gw === start) start++;
  if (gw === end) end--;
  if (start > end) throw new AgentError('INVALID_ARGUMENT', `CNI subnet ${cfg.subnet} has no address left for workers`);

  return {
    cniVersion: '1.0.0',
    name: cfg.name,
    plugins: [
      {
        type: 'bridge',
        bridge: cfg.bridge,
        isGateway: true,
        ipMasq,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          subnet: `${ipv4ToString(subnet.network)}/${subnet.prefix}`,
          rangeStart: ipv4ToString(start),
          rangeEnd: ipv4ToString(end),
          gateway: cfg.gatewayIp,
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: cfg.netDir,
        },
        dns: { nameservers: [cfg.dnsServer] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
}

/**
 * Writes the default network to `cfg.confFile` when that file does not exist, creating its
 * directory. Never replaces an existing file, not even one created concurrently (the operator's
 * file wins). Returns true when it wrote the file. Throws INVALID_ARGUMENT (bad subnet) or
 * FAILED_PRECONDITION (cannot write), leaving no temp file.
 */
export async function ensureConflist(cfg: DefaultNetworkConfig & { readonly confFile: string }, opts: DefaultConflistOptions = {}): Promise<boolean> {
  const doc = defaultConflist(cfg, opts);
  try {
    await fs.access(cfg.confFile);
    return false;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new AgentError('FAILED_PRECONDITION', `CNI network config ${cfg.confFile} cannot be checked: ${errorText(err)}`, { cause: err });
  }
  try {
    await fs.mkdir(path.dirname(cfg.confFile), { recursive: true });
    return await writeFileAtomic(cfg.confFile, `${JSON.stringify(doc, null, 2)}\n`, { overwrite: false });
  } catch (err) {
    throw new AgentError('FAILED_PRECONDITION', `cannot write CNI network config ${cfg.confFile}: ${errorText(err)}`, { cause: err });
  }
}

function ipv4ToNumber(s: string): number | undefined {
  if (!net.isIPv4(s)) return undefined;
  return s.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}
