/**
 * Small helpers for the test harness: child daemons with captured logs, free ports, polling.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import net from 'node:net';

/** A daemon started by a test; `exited` resolves with its exit code (or signal name). */
export interface Daemon {
  readonly child: ChildProcess;
  readonly logPath: string;
  readonly exited: Promise<number | string>;
}

/** Starts `cmd args` with stdout+stderr appended to `logPath`. */
export function startDaemon(cmd: string, args: readonly string[], logPath: string, env?: NodeJS.ProcessEnv): Daemon {
  const out = createWriteStream(logPath, { flags: 'a' });
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve(code ?? signal ?? -1);
    });
    child.once('error', () => {
      resolve(-1);
    });
  });
  return { child, logPath, exited };
}

/** Sends SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export async function stopDaemon(d: Daemon, graceMs = 5000): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill('SIGTERM');
  const t = setTimeout(() => d.child.kill('SIGKILL'), graceMs);
  await d.exited;
  clearTimeout(t);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => {
        resolve(port);
      });
    });
  });
}

/**
 * How much slower this machine is than the development host: ESB_TEST_SLOWDOWN (default 1),
 * set by scripts/vm/guest.sh in an emulated guest, which runs 5-20x slower. Waits for something
 * that will happen (a daemon answering, a state change) scale by it; assertions on what the
 * agent itself promises (deadlines, budgets) do not.
 */
export const SLOWDOWN = ((): number => {
  const v = Number(process.env['ESB_TEST_SLOWDOWN'] ?? '1');
  return Number.isFinite(v) && v >= 1 ? v : 1;
})();

/** `ms` scaled by SLOWDOWN. */
export function scaled(ms: number): number {
  return Math.round(ms * SLOWDOWN);
}

/** Polls `check` every `intervalMs` until it returns true or `timeoutMs` (scaled) passes. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000, intervalMs = 50): Promise<void> {
  timeoutMs = scaled(timeoutMs);
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr instanceof Error ? `: ${lastErr.message}` : ''}`);
}

/**
 * Polls `fn` every `intervalMs` until it returns a value (not undefined), retrying on errors;
 * after `timeoutMs` fails with the last error's message.
 */
export async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000, intervalMs = 100): Promise<T> {
  timeoutMs = scaled(timeoutMs);
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
