/**
 * "Does this host name lead back into the agent's own machine?" A registry may send the agent
 * elsewhere (a blob redirect, a token realm); it must not be able to point it at services
 * that only the host can reach: loopback, link-local (cloud metadata), the unspecified
 * address, the host's own addresses and the networks its interfaces sit on (the CNI bridge
 * subnet with the other tenants' workers among them).
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import os from 'node:os';
import { AgentError, errnoCode } from '../errors.js';

const FIXED_V4 = [
  ['127.0.0.0', 8],
  ['0.0.0.0', 8],
  ['169.254.0.0', 16],
] as const;
const FIXED_V6 = [
  ['::1', 128],
  ['::', 128],
  ['fe80::', 10],
] as const;

/** The block list now (interfaces come and go: the CNI bridge appears with the first worker). */
function localBlockList(): BlockList {
  const list = new BlockList();
  for (const [net, prefix] of FIXED_V4) list.addSubnet(net, prefix, 'ipv4');
  for (const [net, prefix] of FIXED_V6) list.addSubnet(net, prefix, 'ipv6');
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) {
      const type = a.family === 'IPv4' ? 'ipv4' : 'ipv6';
      const [net, bits] = (a.cidr ?? `${a.address}/${type === 'ipv4' ? 32 : 128}`).split('/') as [string, string];
      const address = net.split('%')[0]!;
      list.addAddress(address, type);
      list.addSubnet(address, Number(bits), type);
    }
  }
  return list;
}

/** An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as its IPv4 form. */
function unmapped(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/** True when `ip` (a literal) is loopback, link-local, unspecified or one of the host's networks. */
export function isLocalAddress(ip: string, list: BlockList = localBlockList()): boolean {
  const a = unmapped(ip.replace(/^\[|\]$/g, '').split('%')[0]!);
  const family = isIP(a);
  if (family === 0) return false;
  return list.check(a, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * Refuses a host name that is, or resolves to, a local address.
 *
 * @throws AgentError FAILED_PRECONDITION saying `what` was refused; UNAVAILABLE when the
 *   name does not resolve.
 */
export async function assertNotLocal(hostname: string, what: string): Promise<void> {
  const bare = hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  if (isIP(bare) !== 0) addresses = [bare];
  else {
    try {
      addresses = (await lookup(bare, { all: true, verbatim: true })).map((a) => a.address);
    } catch (err) {
      throw new AgentError('UNAVAILABLE', `${what}: the host name does not resolve (${errnoCode(err) ?? 'lookup failed'})`, { cause: err });
    }
  }
  const list = localBlockList();
  if (addresses.some((a) => isLocalAddress(a, list))) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `${what}: refused, it leads to a loopback, link-local or host-local address that is not in AGENT_ALLOWED_REGISTRIES`,
    );
  }
}
