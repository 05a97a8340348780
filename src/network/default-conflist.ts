/**
 * The agent's default CNI network, generated from its config when the operator has none
 * (docs/configuration.md#generated-conflist; docs/go-agent.md#cni-network for the shape).
 * Sits above cni/: it reads the agent's config (CNI_SUBNET, ...), cni/ only speaks CNI.
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { isNetworkName } from '../cni/conflist.js';
import type { CniConfig } from '../config/config.js';
import { ConfigError, ipv4ToString, parseIpv4Cidr } from '../config/parse.js';
import { AgentError, errnoCode, errorText } from '../errors.js';

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
  if (!isNetworkName(cfg.name)) throw new AgentError('INVALID_ARGUMENT', `CNI network name ${JSON.stringify(cfg.name)} is invalid`);
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
export async function ensureConflist(
  cfg: DefaultNetworkConfig & { readonly confFile: string },
  opts: DefaultConflistOptions = {},
): Promise<boolean> {
  const doc = defaultConflist(cfg, opts);
  try {
    await fs.access(cfg.confFile);
    return false;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT')
      throw new AgentError('FAILED_PRECONDITION', `CNI network config ${cfg.confFile} cannot be checked: ${errorText(err)}`, {
        cause: err,
      });
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
