/**
 * The worker firewall as data: which chains the agent owns for one worker bridge, which rules
 * they hold, and the iptables-restore scripts that install, repair and remove them. Pure: no
 * process is run here (iptables.ts runs them).
 *
 * Two chains per bridge and address family, in the filter table, each reached by exactly one
 * jump at the top of its built-in chain:
 *
 *   INPUT   -i <bridge> -j ESB-IN-<bridge>    traffic from a worker to any address of the host
 *   FORWARD -i <bridge> -j ESB-FWD-<bridge>   traffic from a worker routed or bridged elsewhere
 *
 * Matching the interface the packet came in on (not its destination) covers every address of
 * the host, whichever one the worker picks. Rules are written in the exact form `iptables -S`
 * prints them, so that a listing can be compared line by line with what should be there.
 */
import type { HostPort } from '../config/config.js';
import { AgentError } from '../errors.js';

export type Family = 'ipv4' | 'ipv6';

/** One worker network as the firewall sees it. */
export interface WorkerNetwork {
  /** The Linux bridge the workers' host-side veths are enslaved to. */
  readonly bridge: string;
  /** The workers' subnet, for logs and reports only: rules match the bridge, not addresses. */
  readonly subnet: string;
  /** True when the network hands out IPv6 addresses: ip6tables rules are installed as well. */
  readonly ipv6: boolean;
}

/** What workers may reach on the host. */
export interface FirewallPolicy {
  /** The workers' DNS server; port 53 udp+tcp of this address is open when it is the host's. */
  readonly dnsServer: string | undefined;
  /** Host ports open to workers on every host address (AGENT_WORKER_ALLOWED_HOST_PORTS). */
  readonly allowedHostPorts: readonly HostPort[];
}

/** One agent-owned chain: its rules and the jump to it from a built-in chain. */
export interface ChainSpec {
  readonly family: Family;
  readonly chain: string;
  /** The built-in chain holding the jump. */
  readonly parent: 'INPUT' | 'FORWARD';
  /** The jump's match and target, as `iptables -S` prints them after `-A <parent>`. */
  readonly jump: string;
  /** The chain's rules, as `iptables -S` prints them after `-A <chain>`. */
  readonly rules: readonly string[];
}

/** Prefixes of the agent's chains; the bridge name follows. */
export const INPUT_CHAIN_PREFIX = 'ESB-IN-';
export const FORWARD_CHAIN_PREFIX = 'ESB-FWD-';
/** iptables' limit on chain names (XT_EXTENSION_MAXNAMELEN - 1). */
export const MAX_CHAIN_NAME = 28;
/** Interface names usable in a rule: 1-15 characters, no '-' first (it would read as an option). */
const BRIDGE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

export const LINK_LOCAL: Record<Family, string> = { ipv4: '169.254.0.0/16', ipv6: 'fe80::/10' };
const PORT_UNREACHABLE: Record<Family, string> = { ipv4: 'icmp-port-unreachable', ipv6: 'icmp6-port-unreachable' };

/** Throws unless `bridge` can be an interface name (and so a part of a chain name). */
export function checkBridgeName(bridge: string): void {
  if (!BRIDGE_NAME.test(bridge))
    throw new AgentError('FAILED_PRECONDITION', `invalid bridge name ${JSON.stringify(bridge)} for the worker firewall`);
}

/** The two chain names of a bridge. Both fit iptables' 28-character limit. */
export function chainNames(bridge: string): { input: string; forward: string } {
  checkBridgeName(bridge);
  return { input: `${INPUT_CHAIN_PREFIX}${bridge}`, forward: `${FORWARD_CHAIN_PREFIX}${bridge}` };
}

/**
 * REJECT, not DROP: a refused worker learns it at once (a TCP reset, or ICMP port
 * unreachable for anything else) instead of waiting for its own timeout, and nothing about
 * the host is hidden by dropping that the worker could not learn from the reset anyway.
 */
function reject(family: Family, match: string): string[] {
  const m = match === '' ? '' : `${match} `;
  return [`${m}-p tcp -j REJECT --reject-with tcp-reset`, `${m}-j REJECT --reject-with ${PORT_UNREACHABLE[family]}`];
}

/**
 * INPUT: a worker may only answer connections the host opened (the agent's invocations of
 * worker:8080), ask the DNS server on port 53, and reach the ports the operator opened.
 * Everything else aimed at the host — the agent's gRPC and metrics ports included — is refused.
 */
export function inputRules(family: Family, policy: FirewallPolicy): string[] {
  const rules = ['-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'];
  if (family === 'ipv6') {
    // Without neighbour discovery a worker cannot even find the gateway's MAC address (IPv4
    // uses ARP, which iptables does not see).
    for (const type of [135, 136]) rules.push(`-p ipv6-icmp -m icmp6 --icmpv6-type ${type} -j ACCEPT`);
  }
  const dns = policy.dnsServer ?? '';
  if (dns !== '' && dns.includes(':') === (family === 'ipv6')) {
    const host = `${dns}/${family === 'ipv6' ? 128 : 32}`;
    for (const proto of ['udp', 'tcp']) rules.push(`-d ${host} -p ${proto} -m ${proto} --dport 53 -j ACCEPT`);
  }
  for (const { port, proto } of policy.allowedHostPorts) rules.push(`-p ${proto} -m ${proto} --dport ${port} -j ACCEPT`);
  rules.push(...reject(family, ''));
  return rules;
}

/**
 * FORWARD (only packets that came in on the bridge): one worker may not reach another on the
 * same bridge (they are different tenants; the gateway's owner checks must not be bypassed),
 * nor a link-local address (cloud metadata services live there). Anything else goes on to the
 * rest of FORWARD unchanged (masquerade to the outside, replies to the gateway).
 */
export function forwardRules(family: Family, bridge: string): string[] {
  return [...reject(family, `-o ${bridge}`), ...reject(family, `-d ${LINK_LOCAL[family]}`)];
}

/** Every chain the agent owns for `net`, IPv4 first. */
export function buildChains(net: WorkerNetwork, policy: FirewallPolicy): ChainSpec[] {
  const names = chainNames(net.bridge);
  const families: Family[] = net.ipv6 ? ['ipv4', 'ipv6'] : ['ipv4'];
  return families.flatMap((family): ChainSpec[] => [
    { family, chain: names.input, parent: 'INPUT', jump: `-i ${net.bridge} -j ${names.input}`, rules: inputRules(family, policy) },
    {
      family,
      chain: names.forward,
      parent: 'FORWARD',
      jump: `-i ${net.bridge} -j ${names.forward}`,
      rules: forwardRules(family, net.bridge),
    },
  ]);
}

/** How many times each chain's jump is in its parent chain now. */
export type JumpCounts = ReadonlyMap<string, number>;

/**
 * The iptables-restore (--noflush) script that makes `chains` (all of one family) exactly as
 * specified: each chain declared (created, or flushed if it exists) and refilled, and its jump
 * inserted at the top when missing or trimmed to one when duplicated. One transaction: a
 * worker never sees a half-filled chain.
 */
export function installScript(chains: readonly ChainSpec[], jumps: JumpCounts): string {
  const lines = ['*filter', ...chains.map((c) => `:${c.chain} - [0:0]`)];
  for (const c of chains) for (const r of c.rules) lines.push(`-A ${c.chain} ${r}`);
  for (const c of chains) {
    const n = jumps.get(c.chain) ?? 0;
    if (n === 0) lines.push(`-I ${c.parent} 1 ${c.jump}`);
    for (let i = 1; i < n; i++) lines.push(`-D ${c.parent} ${c.jump}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * The script removing `chains` (all of one family): every jump to them, then the chains.
 * `present` names the chains that exist now (declaring a missing one would create it).
 */
export function removeScript(chains: readonly ChainSpec[], jumps: JumpCounts, present: ReadonlySet<string>): string {
  const lines = ['*filter'];
  for (const c of chains) for (let i = 0; i < (jumps.get(c.chain) ?? 0); i++) lines.push(`-D ${c.parent} ${c.jump}`);
  for (const c of chains) if (present.has(c.chain)) lines.push(`:${c.chain} - [0:0]`, `-X ${c.chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** What an installed chain looks like compared with its spec. */
export interface ChainCheck {
  readonly spec: ChainSpec;
  /** undefined when the chain does not exist. */
  readonly actualRules: readonly string[] | undefined;
  readonly jumps: number;
}

export type FirewallStatus = 'present' | 'missing' | 'partial';

/** The verdict over every chain of a network, with one line per problem found. */
export function judge(checks: readonly ChainCheck[]): { status: FirewallStatus; problems: string[] } {
  const problems: string[] = [];
  let anything = false;
  for (const { spec, actualRules, jumps } of checks) {
    const tool = spec.family === 'ipv6' ? 'ip6tables' : 'iptables';
    if (actualRules !== undefined || jumps > 0) anything = true;
    if (actualRules === undefined) {
      problems.push(`${tool} chain ${spec.chain} is missing`);
    } else if (actualRules.join('\n') !== spec.rules.join('\n')) {
      const missing = spec.rules.filter((r) => !actualRules.includes(r)).length;
      const extra = actualRules.filter((r) => !spec.rules.includes(r)).length;
      problems.push(`${tool} chain ${spec.chain} differs: ${missing} rule(s) missing, ${extra} unexpected, of ${spec.rules.length}`);
    }
    if (jumps === 0) problems.push(`${tool} jump from ${spec.parent} to ${spec.chain} is missing`);
    if (jumps > 1) problems.push(`${tool} jump from ${spec.parent} to ${spec.chain} is there ${jumps} times`);
  }
  if (problems.length === 0) return { status: 'present', problems };
  return { status: anything ? 'partial' : 'missing', problems };
}

/**
 * The rules of `chain` in an `iptables -S <chain>` listing: the `-A <chain> ` lines, without
 * that prefix.
 */
export function parseChainListing(listing: string, chain: string): string[] {
  const prefix = `-A ${chain} `;
  return listing
    .split('\n')
    .filter((l) => l.startsWith(prefix))
    .map((l) => l.slice(prefix.length).trim());
}

/** How many times `-A <parent> <jump>` is in an `iptables -S <parent>` listing. */
export function countJumps(listing: string, parent: string, jump: string): number {
  const line = `-A ${parent} ${jump}`;
  return listing.split('\n').filter((l) => l.trim() === line).length;
}
