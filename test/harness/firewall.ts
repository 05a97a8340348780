/**
 * The worker firewall chains of a test stack's bridge, seen and removed with iptables itself
 * (not with the agent's code): the agent keeps its chains when it stops, so every stack
 * removes them in stop(), and tests check that nothing of them is left.
 */
import { execFileSync } from 'node:child_process';

const TOOLS = ['iptables', 'ip6tables'] as const;

function chainsOf(bridge: string): string[] {
  return [`ESB-IN-${bridge}`, `ESB-FWD-${bridge}`];
}

function listing(tool: string): string[] {
  try {
    return execFileSync(tool, ['-w', '-t', 'filter', '-S'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n');
  } catch {
    return []; // no such family on this host
  }
}

function mentions(line: string, chains: readonly string[]): boolean {
  return chains.some((c) => line.split(' ').includes(c));
}

/** Every chain and rule of `bridge`'s firewall still there, as `<tool> <iptables -S line>`. */
export function firewallLeftovers(bridge: string): string[] {
  const chains = chainsOf(bridge);
  return TOOLS.flatMap((tool) =>
    listing(tool)
      .filter((l) => mentions(l, chains))
      .map((l) => `${tool} ${l}`),
  );
}

/** Removes every jump to `bridge`'s chains and the chains. Safe when there are none. */
export function removeFirewall(bridge: string): void {
  const chains = chainsOf(bridge);
  for (const tool of TOOLS) {
    const lines = listing(tool).filter((l) => mentions(l, chains));
    // Jumps from other chains first, then flush and delete ours.
    for (const l of lines) {
      const m = /^-A (\S+) (.*)$/.exec(l);
      if (m && !chains.includes(m[1]!)) execFileSync(tool, ['-w', '-D', m[1]!, ...m[2]!.split(' ')], { stdio: 'ignore' });
    }
    for (const c of chains) {
      if (!lines.includes(`-N ${c}`)) continue;
      execFileSync(tool, ['-w', '-F', c], { stdio: 'ignore' });
      execFileSync(tool, ['-w', '-X', c], { stdio: 'ignore' });
    }
  }
}

/**
 * A clean-up step for a test file that starts agents on `bridge` itself (not through a stack):
 * removes the chains they installed and kept, then fails if any is still there.
 */
export function firewallCleanup(bridge: string): () => void {
  return () => {
    removeFirewall(bridge);
    const left = firewallLeftovers(bridge);
    if (left.length > 0) throw new Error(`firewall rules of bridge ${bridge} left behind:\n${left.join('\n')}`);
  };
}
