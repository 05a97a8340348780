/**
 * Command-line parsing helpers on top of `node:util` parseArgs: its errors become UsageError
 * (exit 64), and values get checked conversions (durations, integers, KEY=VALUE pairs).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './io.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs in strict mode with positionals; a malformed command line throws UsageError. */
export function parseCommandLine<O extends Options>(
  args: readonly string[],
  options: O,
): ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs throws TypeErrors with ERR_PARSE_ARGS_* codes and a readable message.
    throw new UsageError(err instanceof Error ? err.message.replace(/\. To specify a positional argument.*$/s, '') : String(err));
  }
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a duration such as `500ms`, `30s`, `2m`, `1h` or a bare number of seconds into ms.
 * `0` means "no bound". Throws UsageError naming `flag`.
 */
export function parseDurationMs(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag}: expected a duration such as 30s, 2m or 500ms, got ${JSON.stringify(text)}`);
  const ms = Number(m[1]) * DURATION_UNITS_MS[m[2] ?? 's']!;
  if (!Number.isFinite(ms) || ms > 24 * 3_600_000) throw new UsageError(`${flag}: ${JSON.stringify(text)} is longer than 24h`);
  return Math.round(ms);
}

/** Parses a whole number in [min, max]; throws UsageError naming `flag`. */
export function parseIntFlag(flag: string, text: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(text.trim())) throw new UsageError(`${flag}: expected a whole number, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag}: expected a number from ${min} to ${max}, got ${text}`);
  return n;
}

/**
 * Turns `KEY=VALUE` (or `Name: value` with `separator` ':') items into a record; the first
 * separator splits, so values may contain it. Throws UsageError naming `flag`.
 */
export function parsePairs(flag: string, items: readonly string[], separator: '=' | ':'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf(separator);
    const key = at === -1 ? '' : item.slice(0, at).trim();
    if (key === '') throw new UsageError(`${flag}: expected KEY${separator}VALUE, got ${JSON.stringify(item)}`);
    out[key] = separator === ':' ? item.slice(at + 1).trim() : item.slice(at + 1);
  }
  return out;
}
