/**
 * Where the worker firewall learns a network's bridge from: the conflist itself when it uses
 * the `bridge` plugin (known at start-up), or the result of a CNI ADD (any conflist: the
 * result lists the host-side interfaces without `sandbox`, one of which is the bridge).
 */
import { promises as fs } from 'node:fs';
import type { CniNetworkList } from '../cni/conflist.js';
import { isObject, type CniResult } from '../cni/result.js';
import { AgentError } from '../errors.js';
import type { WorkerNetwork } from './rules.js';

/** The bridge plugin's default bridge name (containernetworking/plugins). */
const BRIDGE_PLUGIN_DEFAULT = 'cni0';

/** True when `name` is a Linux bridge on this host. */
export async function isLinuxBridge(name: string): Promise<boolean> {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/.test(name)) return false;
  try {
    return (await fs.stat(`/sys/class/net/${name}/bridge`)).isDirectory();
  } catch {
    return false;
  }
}

function ipamSubnets(ipam: unknown): string[] {
  if (!isObject(ipam)) return [];
  const out: string[] = [];
  if (typeof ipam['subnet'] === 'string') out.push(ipam['subnet']);
  const ranges = ipam['ranges'];
  if (Array.isArray(ranges)) {
    for (const set of ranges) {
      if (!Array.isArray(set)) continue;
      for (const r of set) if (isObject(r) && typeof r['subnet'] === 'string') out.push(r['subnet']);
    }
  }
  return out;
}

/**
 * The network of a conflist whose first `bridge` plugin names the bridge (or leaves the
 * plugin's default). undefined when the list has no bridge plugin: the bridge is then learned
 * from the first ADD.
 */
export function networkFromConflist(list: CniNetworkList): WorkerNetwork | undefined {
  const plugin = list.plugins.find((p) => p.type === 'bridge');
  if (plugin === undefined) return undefined;
  const bridge = typeof plugin['bridge'] === 'string' && plugin['bridge'] !== '' ? plugin['bridge'] : BRIDGE_PLUGIN_DEFAULT;
  const subnets = ipamSubnets(plugin['ipam']);
  return { bridge, subnet: subnets.join(',') || '(unknown)', ipv6: subnets.some((s) => s.includes(':')) };
}

/**
 * The network of an ADD result: the bridge is the host-side interface (no `sandbox`) that is a
 * Linux bridge; the subnet comes from the sandbox addresses. Throws FAILED_PRECONDITION when the
 * result names no bridge: the firewall cannot protect such a network.
 */
export async function networkFromResult(
  result: CniResult,
  networkName: string,
  isBridge: (name: string) => Promise<boolean> = isLinuxBridge,
): Promise<WorkerNetwork> {
  let bridge: string | undefined;
  for (const iface of result.interfaces) {
    if (iface.sandbox !== undefined && iface.sandbox !== '') continue;
    if (await isBridge(iface.name)) {
      bridge = iface.name;
      break;
    }
  }
  if (bridge === undefined) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `CNI network ${networkName} attached the worker without a Linux bridge on the host; the worker firewall cannot isolate it (use a bridge network, or set AGENT_WORKER_FIREWALL=false if you filter worker traffic yourself)`,
    );
  }
  const addresses = result.ips.map((ip) => ip.address);
  return { bridge, subnet: addresses.map(subnetOf).join(',') || '(unknown)', ipv6: addresses.some((a) => a.includes(':')) };
}

/** `10.88.0.5/16` → `10.88.0.0/16`; IPv6 addresses are returned as given. */
export function subnetOf(cidr: string): string {
  const [addr = '', prefixText = ''] = cidr.split('/');
  const prefix = Number(prefixText);
  const octets = addr.split('.').map(Number);
  if (octets.length !== 4 || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return cidr;
  const n = octets.reduce((a, o) => a * 256 + o, 0);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net = (n & mask) >>> 0;
  return `${[net >>> 24, (net >>> 16) & 255, (net >>> 8) & 255, net & 255].join('.')}/${prefix}`;
}
