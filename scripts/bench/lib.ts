// Shared helpers for the benchmarks in scripts/bench/: statistics, timing and table printing.
// Generic on purpose (used by several benches); no dependency on src/.

import { performance } from 'node:perf_hooks';

/** Sorted copy (ascending, numeric). */
export function sorted(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/**
 * Percentile with linear interpolation between closest ranks (same as numpy's default).
 * `p` in [0, 100]. Returns NaN for an empty input.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  if (p < 0 || p > 100 || Number.isNaN(p)) throw new RangeError(`percentile: p out of range: ${p}`);
  const s = sorted(values);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = s[lo]!;
  const b = s[hi]!;
  return a + (b - a) * (rank - lo);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(values: readonly number[]): Summary {
  const s = sorted(values);
  return {
    n: s.length,
    min: s[0] ?? Number.NaN,
    p50: percentile(s, 50),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? Number.NaN,
    mean: mean(s),
  };
}

/** Monotonic milliseconds. */
export function nowMs(): number {
  return performance.now();
}

/** Runs `fn` and returns its result with the elapsed wall time in milliseconds. */
export async function timeIt<T>(fn: () => T | Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

/** Formats milliseconds with a precision that suits the magnitude. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  return ms.toFixed(2);
}

export type Cell = string | number;

/**
 * Prints rows as an aligned text table. The first row is the header. Numbers are right-aligned
 * and formatted with fmtMs; strings are left-aligned.
 */
export function printTable(
  rows: readonly (readonly Cell[])[],
  out: (line: string) => void = (l) => {
    console.log(l);
  },
): void {
  if (rows.length === 0) return;
  const text = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmtMs(c) : c)));
  const numeric = rows.map((r) => r.map((c) => typeof c === 'number'));
  const cols = Math.max(...text.map((r) => r.length));
  const widths: number[] = [];
  for (let c = 0; c < cols; c++) widths.push(Math.max(...text.map((r) => (r[c] ?? '').length)));
  const line = (i: number): string =>
    text[i]!.map((cell, c) => (numeric[i]![c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  out(line(0));
  out(widths.map((w) => '-'.repeat(w)).join('  '));
  for (let i = 1; i < text.length; i++) out(line(i));
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` in flight; results in index order. */
export async function mapLimit<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (true) {
      const i = next++;
      if (i >= n) return;
      results[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return results;
}

/** Parses `--name value` / `--name=value` integer flags from argv. */
export function intFlag(argv: readonly string[], name: string, fallback: number): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    let raw: string | undefined;
    if (a === `--${name}`) raw = argv[i + 1];
    else if (a.startsWith(`--${name}=`)) raw = a.slice(name.length + 3);
    if (raw !== undefined) {
      const v = Number.parseInt(raw, 10);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive integer, got ${raw}`);
      return v;
    }
  }
  return fallback;
}
