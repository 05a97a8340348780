/**
 * CNI network configuration lists (CNI spec 1.0 §1): loading and checking an operator's
 * `.conflist` (or a single-plugin `.conf`). The agent's own default network, generated from
 * its config when the operator has none, is network/default-conflist.ts (cni/ knows no config).
 */
import { promises as fs } from 'node:fs';
import { AgentError, errnoCode, errorText } from '../errors.js';
import { isObject } from './result.js';

/** One plugin entry of a list, as written by the operator; `type` names the binary. */
export type CniPluginConf = Readonly<Record<string, unknown>> & { readonly type: string };

/** A checked network configuration list. */
export interface CniNetworkList {
  readonly name: string;
  readonly cniVersion: string;
  /** When true the runtime must not run CHECK for this network (spec 1.0 §1). */
  readonly disableCheck: boolean;
  readonly plugins: readonly CniPluginConf[];
  /** The list as JSON bytes: what libcni caches as `config` next to a result. */
  readonly bytes: Buffer;
  /** Where the list came from, for messages. */
  readonly source: string;
}

/**
 * Spec versions this library drives. 0.1.0/0.2.0 are left out: their results have another
 * shape (`ip4`/`ip6`), and no current plugin needs them. 1.1.0 adds only verbs the agent does
 * not call (STATUS and GC are optional for a runtime) and keeps 1.0.0's result format.
 */
export const SUPPORTED_CNI_VERSIONS: readonly string[] = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** Network names (spec 1.0 §1): alphanumeric first, then alphanumerics, `_`, `.` or `-`. */
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** True when `name` is a valid CNI network name (spec 1.0 §1). */
export function isNetworkName(name: string): boolean {
  return NETWORK_NAME.test(name);
}

/** True when semantic version `v` is ≥ `min` (both plain `x.y.z`). */
export function cniVersionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/**
 * Parses and checks a network configuration list from JSON text. A single-plugin network
 * config (`.conf`: an object with `type` and no `plugins`) is wrapped into a one-plugin list,
 * as libcni's `ConfListFromConf` does. Throws INVALID_ARGUMENT naming `source`.
 */
export function parseNetworkList(text: string | Buffer, source: string): CniNetworkList {
  const bad = (why: string): AgentError => new AgentError('INVALID_ARGUMENT', `CNI network config ${source}: ${why}`);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof text === 'string' ? text : text.toString('utf8'));
  } catch (err) {
    throw new AgentError('INVALID_ARGUMENT', `CNI network config ${source}: not valid JSON: ${errorText(err)}`, { cause: err });
  }
  if (!isObject(doc)) throw bad('expected a JSON object');

  const cniVersion = chooseCniVersion(doc['cniVersion'], doc['cniVersions'], bad);
  const name = doc['name'];
  if (typeof name !== 'string' || !NETWORK_NAME.test(name)) {
    throw bad(`name ${JSON.stringify(name)} is invalid (letters, digits, '_', '.', '-'; starting with a letter or digit)`);
  }
  const disableCheck = doc['disableCheck'] ?? false;
  if (typeof disableCheck !== 'boolean') throw bad(`disableCheck must be true or false, got ${JSON.stringify(disableCheck)}`);

  let rawPlugins: unknown;
  if (doc['plugins'] !== undefined) {
    rawPlugins = doc['plugins'];
  } else if (doc['type'] !== undefined) {
    rawPlugins = [doc];
  } else {
    throw bad('has neither "plugins" (a .conflist) nor "type" (a single-plugin .conf)');
  }
  if (!Array.isArray(rawPlugins) || rawPlugins.length === 0) throw bad('plugins must be a non-empty list');
  const plugins = (rawPlugins as unknown[]).map((p, i) => checkPlugin(p, `plugins[${i}]`, bad));

  const list = doc['plugins'] === undefined ? { cniVersion, name, plugins } : doc;
  return { name, cniVersion, disableCheck, plugins, bytes: Buffer.from(JSON.stringify(list)), source };
}

/**
 * The version to speak. CNI 1.1.0 lets a list name several (`cniVersions`); as libcni does, the
 * highest one this library supports wins, and `cniVersion` is then only a fallback for older
 * runtimes. Plugins are asked at load() whether they speak it.
 */
function chooseCniVersion(single: unknown, several: unknown, bad: (why: string) => AgentError): string {
  const supported = `supported: ${SUPPORTED_CNI_VERSIONS.join(', ')}`;
  if (several !== undefined) {
    if (!Array.isArray(several) || several.some((v) => typeof v !== 'string')) throw bad('cniVersions must be a list of version strings');
    const usable = (several as string[]).filter((v) => SUPPORTED_CNI_VERSIONS.includes(v));
    if (usable.length === 0) throw bad(`none of cniVersions is supported (${supported})`);
    return usable.reduce((best, v) => (cniVersionAtLeast(v, best) ? v : best));
  }
  if (typeof single !== 'string' || single === '') throw bad('cniVersion is missing');
  if (!SUPPORTED_CNI_VERSIONS.includes(single))
    throw bad(`cniVersion ${JSON.stringify(single.slice(0, 32))} is not supported (${supported})`);
  return single;
}

function checkPlugin(p: unknown, at: string, bad: (why: string) => AgentError): CniPluginConf {
  if (!isObject(p)) throw bad(`${at} is not an object`);
  const type = p['type'];
  if (!isPluginType(type)) throw bad(`${at}.type ${JSON.stringify(type)} is not a plugin binary name`);
  const caps = p['capabilities'];
  if (caps !== undefined && (!isObject(caps) || Object.values(caps).some((v) => typeof v !== 'boolean'))) {
    throw bad(`${at} (${type}).capabilities must map capability names to true/false`);
  }
  const ipam = p['ipam'];
  if (ipam !== undefined && (!isObject(ipam) || !isPluginType(ipam['type']))) {
    throw bad(`${at} (${type}).ipam must be an object whose "type" names an IPAM plugin binary`);
  }
  return p as CniPluginConf;
}

/** A plugin type is a file name: no path separators (spec 1.0 §1), not `.`/`..`. */
function isPluginType(t: unknown): t is string {
  return typeof t === 'string' && t !== '' && t !== '.' && t !== '..' && !/[/\\\0]/.test(t);
}

/**
 * Reads and checks the list at `file`. A missing or unreadable file → FAILED_PRECONDITION;
 * bad content → INVALID_ARGUMENT. Both name the file.
 */
export async function loadNetworkList(file: string): Promise<CniNetworkList> {
  let text: Buffer;
  try {
    text = await fs.readFile(file);
  } catch (err) {
    const what = errnoCode(err) === 'ENOENT' ? 'does not exist' : `cannot be read: ${errorText(err)}`;
    throw new AgentError('FAILED_PRECONDITION', `CNI network config ${file} ${what}`, { cause: err });
  }
  return parseNetworkList(text, file);
}
