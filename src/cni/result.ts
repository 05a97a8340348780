/**
 * CNI results: what a plugin prints on stdout after a successful ADD (CNI spec 1.0 §5
 * "Success"), parsed into one shape whatever the spec version that produced it (1.0.0, or the
 * 0.3.x/0.4.0 shape whose `ips[]` entries also carry `version`). The worker's IP is read from
 * this result, never from host-local's files (reference weakness docs/go-agent.md#w1; docs/design.md#module-boundaries).
 */
import net from 'node:net';
import { AgentError } from '../errors.js';

/** One interface a plugin created or configured; `sandbox` is set for interfaces inside the netns. */
export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  readonly sandbox?: string;
}

/** One address; `interface` is an index into `CniResult.interfaces` (absent from IPAM results). */
export interface CniIpConfig {
  /** Address with prefix length, e.g. `10.88.0.5/16`. */
  readonly address: string;
  readonly gateway?: string;
  readonly interface?: number;
}

/** A route a plugin set up (0.3.x–1.0.0 fields; newer route attributes are not read). */
export interface CniRoute {
  /** Destination CIDR. */
  readonly dst: string;
  readonly gw?: string;
}

/** DNS settings from the result (spec 1.0 §5); plugins rarely fill them. */
export interface CniDns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}

/** A parsed CNI success result, normalised to the 1.0.0 shape (no `ips[].version`). */
export interface CniResult {
  /** The version the plugin answered in (the network's cniVersion for a conforming plugin). */
  readonly cniVersion: string;
  readonly interfaces: readonly CniInterface[];
  readonly ips: readonly CniIpConfig[];
  readonly routes: readonly CniRoute[];
  readonly dns: CniDns;
}

/** Spec versions whose result shape this module reads (0.1/0.2 used `ip4`/`ip6` objects). */
const RESULT_VERSION = /^(0\.3\.[01]|0\.4\.0|1\.0\.0)$/;

/**
 * Validates a decoded CNI result and returns it normalised. Unknown fields are dropped here;
 * callers that chain results (prevResult, the cache) keep the plugin's own JSON.
 * Throws INTERNAL naming `where` (e.g. "CNI plugin bridge ADD") when the shape is wrong.
 */
export function parseResult(value: unknown, where: string): CniResult {
  const bad = (why: string): AgentError => new AgentError('INTERNAL', `${where} returned an invalid CNI result: ${why}`);
  if (!isObject(value)) throw bad('not a JSON object');
  const cniVersion = value['cniVersion'];
  if (typeof cniVersion !== 'string') throw bad('cniVersion missing');
  if (!RESULT_VERSION.test(cniVersion)) throw bad('unsupported cniVersion (expected 0.3.x, 0.4.0 or 1.0.0)');
  const legacy = cniVersion !== '1.0.0';

  const interfaces = optionalArray(value['interfaces'], 'interfaces', bad).map((v, i): CniInterface => {
    if (!isObject(v)) throw bad(`interfaces[${i}] is not an object`);
    const name = v['name'];
    if (typeof name !== 'string' || name === '') throw bad(`interfaces[${i}].name missing`);
    return {
      name,
      ...optionalString(v, 'mac', `interfaces[${i}]`, bad),
      ...optionalString(v, 'sandbox', `interfaces[${i}]`, bad),
      ...(typeof v['mtu'] === 'number' ? { mtu: v['mtu'] } : {}),
    };
  });

  const ips = optionalArray(value['ips'], 'ips', bad).map((v, i): CniIpConfig => {
    if (!isObject(v)) throw bad(`ips[${i}] is not an object`);
    const address = v['address'];
    if (typeof address !== 'string' || !isCidr(address)) throw bad(`ips[${i}].address is not an IP/prefix`);
    // 0.3.x/0.4.0 carry `version` ("4"/"6"); when present it must agree with the address. 1.0.0
    // removed the field.
    if (legacy && v['version'] !== undefined && v['version'] !== (address.includes(':') ? '6' : '4')) {
      throw bad(`ips[${i}].version does not match its address`);
    }
    const gateway = optionalString(v, 'gateway', `ips[${i}]`, bad);
    if (gateway.gateway !== undefined && net.isIP(gateway.gateway) === 0) throw bad(`ips[${i}].gateway is not an IP`);
    const idx = v['interface'];
    if (idx !== undefined && (typeof idx !== 'number' || !Number.isInteger(idx) || idx < 0 || idx >= interfaces.length)) {
      throw bad(`ips[${i}].interface ${JSON.stringify(idx)} is not an index into interfaces (${interfaces.length})`);
    }
    return { address, ...gateway, ...(idx === undefined ? {} : { interface: idx }) };
  });

  const routes = optionalArray(value['routes'], 'routes', bad).map((v, i): CniRoute => {
    if (!isObject(v)) throw bad(`routes[${i}] is not an object`);
    const dst = v['dst'];
    if (typeof dst !== 'string' || !isCidr(dst)) throw bad(`routes[${i}].dst ${JSON.stringify(dst)} is not an IP/prefix`);
    return { dst, ...optionalString(v, 'gw', `routes[${i}]`, bad) };
  });

  const dnsRaw = value['dns'];
  if (dnsRaw !== undefined && !isObject(dnsRaw)) throw bad('dns is not an object');
  const dns: CniDns =
    dnsRaw === undefined
      ? {}
      : {
          ...optionalStrings(dnsRaw, 'nameservers', bad),
          ...optionalString(dnsRaw, 'domain', 'dns', bad),
          ...optionalStrings(dnsRaw, 'search', bad),
          ...optionalStrings(dnsRaw, 'options', bad),
        };

  return { cniVersion, interfaces, ips, routes, dns };
}

/**
 * The worker's IPv4 address (without prefix length): the first IPv4 `ips[]` entry whose
 * `interface` index points at an interface inside the sandbox (`sandbox` set) named `ifName`.
 * This is how go-cni maps IPs to interfaces; bridge returns `[bridge, host veth, eth0]` and
 * only the last one has `sandbox`. Throws INTERNAL when the result has no such address.
 */
export function containerIpv4(result: CniResult, ifName: string): string {
  for (const ip of result.ips) {
    if (ip.interface === undefined) continue;
    const iface = result.interfaces[ip.interface];
    if (iface?.sandbox === undefined || iface.sandbox === '' || iface.name !== ifName) continue;
    const addr = ip.address.split('/')[0] ?? '';
    if (net.isIPv4(addr)) return addr;
  }
  throw new AgentError('INTERNAL', `CNI result has no IPv4 address on sandbox interface ${ifName}`);
}

/** True for a plain JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCidr(s: string): boolean {
  const [addr, prefix, ...rest] = s.split('/');
  if (addr === undefined || prefix === undefined || rest.length > 0 || !/^\d{1,3}$/.test(prefix)) return false;
  const family = net.isIP(addr);
  return family !== 0 && Number(prefix) <= (family === 4 ? 32 : 128);
}

function optionalArray(v: unknown, key: string, bad: (why: string) => AgentError): readonly unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(`${key} is not an array`);
  return v as unknown[];
}

function optionalString<K extends string>(
  obj: Record<string, unknown>,
  key: K,
  at: string,
  bad: (why: string) => AgentError,
): Partial<Record<K, string>> {
  const v = obj[key];
  if (v === undefined || v === '') return {};
  if (typeof v !== 'string') throw bad(`${at}.${key} is not a string`);
  return { [key]: v } as Partial<Record<K, string>>;
}

function optionalStrings<K extends string>(
  obj: Record<string, unknown>,
  key: K,
  bad: (why: string) => AgentError,
): Partial<Record<K, string[]>> {
  const v = obj[key];
  if (v === undefined || v === null) return {};
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw bad(`dns.${key} is not a list of strings`);
  return { [key]: v as string[] } as Partial<Record<K, string[]>>;
}
