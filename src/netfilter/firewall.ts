/**
 * WorkerFirewall: installs, checks and removes the agent's chains for worker bridges (rules.ts
 * says which). Installation is idempotent and repairs: the current chains are read, and only
 * when they differ from the spec are they flushed and refilled (one iptables-restore per
 * family). Each bridge is checked once per agent process; later calls for it cost nothing, so
 * EnsureContainer can call `ensure` every time. The chains are never removed when the agent
 * stops: workers stay isolated while it restarts. Only `remove` (the uninstall path) does.
 */
import type { Logger } from '../log.js';
import {
  buildChains,
  countJumps,
  installScript,
  judge,
  parseChainListing,
  removeScript,
  type ChainCheck,
  type ChainSpec,
  type Family,
  type FirewallPolicy,
  type FirewallStatus,
  type WorkerNetwork,
} from './rules.js';
import { systemIptables, type Iptables } from './iptables.js';

export interface FirewallReport {
  readonly status: FirewallStatus;
  readonly problems: readonly string[];
  readonly chains: readonly string[];
}

export interface WorkerFirewallOptions {
  readonly policy: FirewallPolicy;
  readonly log: Logger;
  /** Called after every install or repair with what was found before it. */
  readonly onInstall?: (found: Exclude<FirewallStatus, 'present'>) => void;
  readonly iptables?: Iptables;
}

function byFamily(chains: readonly ChainSpec[]): Map<Family, ChainSpec[]> {
  const m = new Map<Family, ChainSpec[]>();
  for (const c of chains) m.set(c.family, [...(m.get(c.family) ?? []), c]);
  return m;
}

export class WorkerFirewall {
  readonly #policy: FirewallPolicy;
  readonly #log: Logger;
  readonly #ipt: Iptables;
  readonly #onInstall: WorkerFirewallOptions['onInstall'];
  /** Bridges checked (or being checked) by this process; a failed check is forgotten. */
  readonly #done = new Map<string, Promise<void>>();

  constructor(opts: WorkerFirewallOptions) {
    this.#policy = opts.policy;
    this.#log = opts.log.child({ module: 'netfilter' });
    this.#ipt = opts.iptables ?? systemIptables;
    this.#onInstall = opts.onInstall;
  }

  /**
   * Makes sure `net`'s chains are complete; at most one check per bridge and process. Throws
   * FAILED_PRECONDITION when iptables fails.
   */
  ensure(net: WorkerNetwork): Promise<void> {
    const key = `${net.bridge}/${net.ipv6 ? 6 : 4}`;
    let p = this.#done.get(key);
    if (p === undefined) {
      p = this.install(net).then(
        () => undefined,
        (err: unknown) => {
          this.#done.delete(key);
          throw err;
        },
      );
      this.#done.set(key, p);
    }
    return p;
  }

  /** Reads the chains of `net` and judges them against the spec. */
  async check(net: WorkerNetwork): Promise<FirewallReport & { checks: ChainCheck[] }> {
    const chains = buildChains(net, this.#policy);
    const checks: ChainCheck[] = [];
    const tables = new Map<Family, string>();
    for (const spec of chains) {
      let table = tables.get(spec.family);
      if (table === undefined) {
        table = await this.#ipt.listTable(spec.family);
        tables.set(spec.family, table);
      }
      const exists = table.split('\n').some((l) => l.trim() === `-N ${spec.chain}`);
      checks.push({
        spec,
        actualRules: exists ? parseChainListing(table, spec.chain) : undefined,
        jumps: countJumps(table, spec.parent, spec.jump),
      });
    }
    const verdict = judge(checks);
    return { ...verdict, chains: [...new Set(chains.map((c) => c.chain))], checks };
  }

  /** Checks `net`'s chains and, unless complete, flushes and refills them. Returns what it found. */
  async install(net: WorkerNetwork): Promise<FirewallStatus> {
    const found = await this.check(net);
    if (found.status === 'present') {
      this.#log.debug({ bridge: net.bridge, subnet: net.subnet, chains: found.chains }, 'worker firewall present');
      return 'present';
    }
    for (const [family, chains] of byFamily(found.checks.map((c) => c.spec))) {
      const jumps = new Map(found.checks.filter((c) => c.spec.family === family).map((c) => [c.spec.chain, c.jumps]));
      await this.#ipt.restore(family, installScript(chains, jumps));
    }
    const after = await this.check(net);
    if (after.status !== 'present') {
      throw new Error(`worker firewall for bridge ${net.bridge} is still incomplete after installing it: ${after.problems.join('; ')}`);
    }
    this.#onInstall?.(found.status);
    if (found.status === 'missing')
      this.#log.info({ bridge: net.bridge, subnet: net.subnet, chains: found.chains, ipv6: net.ipv6 }, 'worker firewall installed');
    else
      this.#log.warn(
        { bridge: net.bridge, subnet: net.subnet, chains: found.chains, problems: found.problems },
        'worker firewall was partly removed or changed; repaired',
      );
    return found.status;
  }

  /** Removes every jump to `net`'s chains and the chains themselves. Returns what it found. */
  async remove(net: WorkerNetwork): Promise<FirewallStatus> {
    // IPv6 chains too, whatever the network says now: it may have had IPv6 before. A host
    // without ip6tables has none to remove.
    const found = await this.check({ ...net, ipv6: true }).catch(() => this.check({ ...net, ipv6: false }));
    for (const family of byFamily(found.checks.map((c) => c.spec)).keys()) {
      const mine = found.checks.filter((c) => c.spec.family === family);
      const present = new Set(mine.filter((c) => c.actualRules !== undefined).map((c) => c.spec.chain));
      const jumps = new Map(mine.map((c) => [c.spec.chain, c.jumps]));
      if (present.size === 0 && [...jumps.values()].every((n) => n === 0)) continue;
      await this.#ipt.restore(
        family,
        removeScript(
          mine.map((c) => c.spec),
          jumps,
          present,
        ),
      );
    }
    this.#done.clear();
    this.#log.info({ bridge: net.bridge, found: found.status }, 'worker firewall removed');
    return found.status;
  }
}
