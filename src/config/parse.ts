/**
 * Parsers for environment values. Each throws a ConfigError naming the variable and the
 * accepted form; none falls back silently (reference weakness docs/go-agent.md#w24).
 */
import { isIP } from 'node:net';

/** A configuration value that cannot be used; start-up stops with its message. */
export class ConfigError extends Error {
  readonly variable: string;

  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

/** The trimmed value, or undefined when unset or blank. */
export function readString(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

/** An integer in [min, max]. */
export function readInt(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = readString(env, name);
  if (raw === undefined) return fallback;
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(name, `expected an integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw) + 0; // '-0' → 0
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${raw}`);
  }
  return n;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off']);

/** A boolean written 1/true/yes/on or 0/false/no/off (any case). */
export function readBool(env: Env, name: string, fallback: boolean): boolean {
  const raw = readString(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (TRUE.has(raw)) return true;
  if (FALSE.has(raw)) return false;
  throw new ConfigError(name, `expected 1/true/yes/on or 0/false/no/off, got ${JSON.stringify(raw)}`);
}

/** One of a fixed set of words. */
export function readEnum<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = readString(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `expected one of ${allowed.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

/** An IPv4 CIDR such as 10.88.0.0/16 with a prefix from 8 to 30. Returns its parts. */
export function parseIpv4Cidr(name: string, raw: string): { network: number; prefix: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(raw);
  const prefix = m ? Number(m[5]) : NaN;
  if (!m || prefix < 8 || prefix > 30)
    throw new ConfigError(name, `expected an IPv4 CIDR like 10.88.0.0/16 (prefix 8–30), got ${JSON.stringify(raw)}`);
  const octets = m.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) throw new ConfigError(name, `invalid IPv4 address in ${JSON.stringify(raw)}`);
  const addr = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { network: (addr & mask) >>> 0, prefix };
}

export function ipv4ToString(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** A dotted IPv4 address. */
export function readIpv4(env: Env, name: string): string | undefined {
  const raw = readString(env, name);
  if (raw === undefined) return undefined;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(raw);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255)) throw new ConfigError(name, `expected an IPv4 address, got ${JSON.stringify(raw)}`);
  return raw;
}

/** An IPv4 or IPv6 address literal to listen on (`0.0.0.0`, `127.0.0.1`, `::`, `::1`, `[::1]`). */
export function readListenAddress(env: Env, name: string): string | undefined {
  const raw = readString(env, name);
  if (raw === undefined) return undefined;
  const bare = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw;
  if (isIP(bare) === 0)
    throw new ConfigError(
      name,
      `expected an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::1 (no port, no host name), got ${JSON.stringify(raw)}`,
    );
  return bare;
}

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback: addresses no other host can reach. */
export function isLoopbackAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return address.startsWith('127.');
  if (family !== 6) return false;
  // The URL parser writes an IPv6 address in its one canonical form (::1, ::ffff:7f00:1).
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  if (canonical === '::1') return true;
  const mapped = /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(canonical);
  return mapped !== null && parseInt(mapped[1]!, 16) >> 8 === 127;
}

/** `host:port` for grpc-js and logs; IPv6 in brackets. */
export function hostPort(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Comma-separated list; blanks dropped, entries trimmed. */
export function readList(env: Env, name: string): string[] {
  return (readString(env, name) ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A `unix:///abs/path` (or bare absolute path) socket address, returned as an absolute path. */
export function readUnixSocket(env: Env, name: string, fallback: string): string {
  const raw = readString(env, name) ?? fallback;
  const p = raw.startsWith('unix://') ? raw.slice('unix://'.length) : raw;
  if (!p.startsWith('/')) throw new ConfigError(name, `expected an absolute socket path or unix:///path, got ${JSON.stringify(raw)}`);
  return p;
}
