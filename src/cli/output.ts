/**
 * How `esb-agent ctl` prints replies: `json` (the reply in proto3 JSON style: snake_case field
 * names, 64-bit integers as decimal strings, bytes as UTF-8 text when they are valid UTF-8 or
 * else `<field>_base64`) or `table` (aligned columns and key/value lines for people).
 */
import type { ContainerMetrics, ContainerState, InvokeReply, WorkerInfo } from './agent-client.js';

export type OutputFormat = 'json' | 'table';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['json', 'table'];

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes as text, or undefined when they are not valid UTF-8. */
export function utf8Text(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** A JSON-ready copy: Buffers become text (`field`) or base64 (`field_base64`). */
export function jsonReady(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(jsonReady);
  if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x instanceof Uint8Array) {
      const text = utf8Text(x);
      if (text === undefined) out[`${k}_base64`] = Buffer.from(x).toString('base64');
      else out[k] = text;
    } else {
      out[k] = jsonReady(x);
    }
  }
  return out;
}

/** Pretty JSON with a trailing newline. */
export function toJson(v: unknown): string {
  return `${JSON.stringify(jsonReady(v), null, 2)}\n`;
}

/** Columns padded to their widest cell, two spaces apart; no trailing blanks. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** `key: value` lines with the keys aligned. */
export function renderKeyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`.trimEnd()).join('\n') + '\n';
}

/** Unix seconds (int64 as a string) as an ISO time, `-` for 0/unset. */
export function formatUnixSeconds(s: string): string {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) return '-';
  return new Date(n * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/** A memory limit of 2^63 or more is cgroup's "no limit". */
const UNLIMITED_BYTES = 2n ** 63n;

/** A byte count (uint64 as a string) for people: `134217728 (128.0 MiB)`, `unlimited`. */
export function formatBytes(s: string): string {
  let n: bigint;
  try {
    n = BigInt(s);
  } catch {
    return s;
  }
  if (n >= UNLIMITED_BYTES) return 'unlimited';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let unit = '';
  for (const u of units) {
    if (v < 1024) break;
    v /= 1024;
    unit = u;
  }
  return unit === '' ? `${s} B` : `${s} (${v.toFixed(1)} ${unit})`;
}

/** Nanoseconds (uint64 as a string) as seconds for people. */
export function formatNs(s: string): string {
  const n = Number(s);
  return Number.isFinite(n) ? `${s} ns (${(n / 1e9).toFixed(3)} s)` : s;
}

export function workerTable(w: WorkerInfo): string {
  return renderKeyValues([
    ['id', w.id],
    ['name', w.name],
    ['ip_address', w.ip_address],
    ['port', String(w.port)],
  ]);
}

export function containersTable(list: readonly ContainerState[]): string {
  return renderTable(
    ['CONTAINER ID', 'FUNCTION', 'STATUS', 'CREATED', 'LAST USED', 'OWNER'],
    list.map((c) => [
      c.container_id,
      c.function_name,
      c.status,
      formatUnixSeconds(c.created_at),
      formatUnixSeconds(c.last_used_at),
      c.owner_id,
    ]),
  );
}

export function metricsTable(m: ContainerMetrics): string {
  const pairs: [string, string][] = [
    ['container_id', m.container_id],
    ['function_name', m.function_name],
    ['state', m.state],
    ['memory_current', formatBytes(m.memory_current)],
    ['memory_max', formatBytes(m.memory_max)],
    ['oom_events', m.oom_events],
    ['cpu_usage_ns', formatNs(m.cpu_usage_ns)],
  ];
  if (m.state === 'STOPPED') pairs.push(['exit_code', String(m.exit_code)], ['exit_time', formatUnixSeconds(m.exit_time)]);
  pairs.push(['collected_at', formatUnixSeconds(m.collected_at)]);
  return renderKeyValues(pairs);
}

/**
 * An invocation for people: the status, the headers (sorted), a blank line, then the body as
 * the worker sent it (bytes, unchanged) and a newline if it lacks one.
 */
export function invokeTable(r: InvokeReply): Uint8Array {
  const head = [
    `status_code: ${r.status_code}`,
    ...Object.keys(r.headers)
      .sort()
      .map((k) => `${k}: ${r.headers[k] ?? ''}`),
    '',
    '',
  ].join('\n');
  const tail = r.body.length > 0 && r.body[r.body.length - 1] !== 0x0a ? '\n' : '';
  return Buffer.concat([Buffer.from(head), r.body, Buffer.from(tail)]);
}
