/**
 * Runs iptables / ip6tables (and their -restore twins) for the worker firewall. Every call
 * passes `-w`, so the agent waits for the xtables lock instead of failing while the CNI bridge
 * plugin, dockerd or an operator holds it. Failures become AgentErrors naming the command.
 */
import { execFile, spawn } from 'node:child_process';
import { AgentError, errorText } from '../errors.js';
import type { Family } from './rules.js';

/** PATH for the iptables binaries (no process.env outside main.ts). */
export const IPTABLES_ENV_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Bound on one iptables run, lock wait included. */
const TIMEOUT_MS = 30_000;

/** What the firewall needs from iptables; tests of the firewall logic can give their own. */
export interface Iptables {
  /**
   * `iptables -S` of the filter table: every chain (`-N`) and rule (`-A`). The whole table,
   * because the nf_tables iptables cannot be asked about a single chain that does not exist
   * (it answers "incompatible, use 'nft' tool" instead of "no such chain").
   */
  listTable(family: Family): Promise<string>;
  /** Feeds `script` to `iptables-restore -w --noflush`. */
  restore(family: Family, script: string): Promise<void>;
}

const TOOL: Record<Family, string> = { ipv4: 'iptables', ipv6: 'ip6tables' };

interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child =
      input === undefined
        ? execFile(
            cmd,
            [...args],
            { env: { PATH: IPTABLES_ENV_PATH }, timeout: TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 },
            (err, stdout, stderr) => {
              const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null;
              if (code === null && err !== null)
                reject(new AgentError('FAILED_PRECONDITION', `cannot run ${cmd}: ${errorText(err)}`, { cause: err }));
              else resolve({ code, stdout, stderr });
            },
          )
        : spawn(cmd, [...args], { env: { PATH: IPTABLES_ENV_PATH }, timeout: TIMEOUT_MS, stdio: ['pipe', 'pipe', 'pipe'] });
    if (input === undefined) return;
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      reject(new AgentError('FAILED_PRECONDITION', `cannot run ${cmd}: ${errorText(err)}`, { cause: err }));
    });
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

/** The real binaries. */
export const systemIptables: Iptables = {
  async listTable(family) {
    const tool = TOOL[family];
    const r = await run(tool, ['-w', '-t', 'filter', '-S']);
    if (r.code !== 0)
      throw new AgentError('FAILED_PRECONDITION', `${tool} -S failed (exit ${r.code ?? 'signal'}): ${r.stderr.trim().slice(0, 300)}`);
    return r.stdout;
  },
  async restore(family, script) {
    const tool = `${TOOL[family]}-restore`;
    const r = await run(tool, ['-w', '--noflush'], script);
    if (r.code !== 0)
      throw new AgentError('FAILED_PRECONDITION', `${tool} failed (exit ${r.code ?? 'signal'}): ${r.stderr.trim().slice(0, 300)}`);
  },
};
