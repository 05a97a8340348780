/**
 * The result cache, in libcni's on-disk format (`cniCacheV1`): one JSON file per attachment at
 * `<cacheDir>/results/<network>-<containerId>-<ifName>`, written after ADD, read for CHECK and
 * DEL (the `prevResult` they need), removed after DEL. Because it survives agent restarts it is
 * also the list of attachments to reconcile after a crash (libcni's GCNetworkList model).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AgentError, errnoCode, errorText } from '../errors.js';
import { writeFileAtomic } from '../atomic-file.js';
import { isObject } from './result.js';

/** A cached attachment: everything needed to DEL it later, even after a restart. */
export interface CachedAttachment {
  readonly containerId: string;
  readonly ifName: string;
  readonly networkName: string;
  readonly netns: string;
  /** The network list the ADD used (libcni stores its bytes, base64 in JSON). */
  readonly config: Buffer;
  readonly cniArgs: readonly (readonly [string, string])[];
  readonly capabilityArgs: Readonly<Record<string, unknown>>;
  /** The final result of the ADD, as the last plugin printed it. */
  readonly result: unknown;
}

const CACHE_KIND = 'cniCacheV1';

/** The results directory under a cache dir. */
export function resultsDir(cacheDir: string): string {
  return path.join(cacheDir, 'results');
}

/** The cache file of one attachment (libcni's naming). */
export function cacheFile(cacheDir: string, networkName: string, containerId: string, ifName: string): string {
  return path.join(resultsDir(cacheDir), `${networkName}-${containerId}-${ifName}`);
}

/** Writes the cache entry atomically (a reader never sees half a file). Throws INTERNAL. */
export async function writeCache(cacheDir: string, entry: CachedAttachment): Promise<void> {
  const file = cacheFile(cacheDir, entry.networkName, entry.containerId, entry.ifName);
  const doc = {
    kind: CACHE_KIND,
    containerId: entry.containerId,
    config: entry.config.toString('base64'),
    ifName: entry.ifName,
    networkName: entry.networkName,
    netns: entry.netns,
    cniArgs: entry.cniArgs,
    capabilityArgs: entry.capabilityArgs,
    result: entry.result,
  };
  try {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    // No fsync (libcni does none either): a torn entry after a power cut reads as corrupt and
    // is DEL'd by reconciliation, while ADD stays off the disk-flush path.
    await writeFileAtomic(file, JSON.stringify(doc), { mode: 0o600, sync: false });
  } catch (err) {
    throw new AgentError('INTERNAL', `cannot write CNI cache entry ${path.basename(file)} (${errnoCode(err) ?? errorText(err)})`, {
      cause: err,
    });
  }
}

/** Reads one cache entry; undefined when there is none. Throws INTERNAL for an unreadable or corrupt file. */
export async function readCache(
  cacheDir: string,
  networkName: string,
  containerId: string,
  ifName: string,
): Promise<CachedAttachment | undefined> {
  const file = cacheFile(cacheDir, networkName, containerId, ifName);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new AgentError('INTERNAL', `cannot read CNI cache entry ${path.basename(file)} (${errnoCode(err) ?? errorText(err)})`, {
      cause: err,
    });
  }
  const entry = decodeCache(text);
  if (entry === undefined) throw new AgentError('INTERNAL', `CNI cache entry ${path.basename(file)} is not a ${CACHE_KIND} entry`);
  return entry;
}

/** Removes one cache entry; a missing file is fine. Throws INTERNAL otherwise. */
export async function removeCache(cacheDir: string, networkName: string, containerId: string, ifName: string): Promise<void> {
  const file = cacheFile(cacheDir, networkName, containerId, ifName);
  try {
    await fs.rm(file, { force: true });
  } catch (err) {
    throw new AgentError('INTERNAL', `cannot remove CNI cache entry ${path.basename(file)} (${errnoCode(err) ?? errorText(err)})`, {
      cause: err,
    });
  }
}

/**
 * Removes the temp files of cache writes that a killed process never finished (writes leave
 * none behind otherwise). Only safe while nothing writes the cache: at start-up. Returns the
 * names removed.
 */
export async function removeCacheTempFiles(cacheDir: string): Promise<string[]> {
  const dir = resultsDir(cacheDir);
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const temps = names.filter((n) => n.startsWith('.') && n.endsWith('.tmp'));
  for (const n of temps) await fs.rm(path.join(dir, n), { force: true });
  return temps;
}

/**
 * Every decodable entry in the cache dir (temp files and foreign files skipped; `bad` gets the
 * names of files that could not be decoded). [] when the directory does not exist.
 */
export async function listCache(cacheDir: string, bad?: (file: string) => void): Promise<CachedAttachment[]> {
  const dir = resultsDir(cacheDir);
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new AgentError('INTERNAL', `cannot list the CNI cache (${errnoCode(err) ?? errorText(err)})`, { cause: err });
  }
  const out: CachedAttachment[] = [];
  for (const name of names.sort()) {
    if (name.startsWith('.')) continue;
    const file = path.join(dir, name);
    let entry: CachedAttachment | undefined;
    try {
      entry = decodeCache(await fs.readFile(file, 'utf8'));
    } catch {
      entry = undefined; // vanished meanwhile, or unreadable
    }
    if (entry === undefined) bad?.(file);
    else out.push(entry);
  }
  return out;
}

function decodeCache(text: string): CachedAttachment | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(doc) || doc['kind'] !== CACHE_KIND) return undefined;
  const { containerId, ifName, networkName, netns, config, cniArgs, capabilityArgs } = doc;
  if (typeof containerId !== 'string' || typeof ifName !== 'string' || typeof networkName !== 'string') return undefined;
  return {
    containerId,
    ifName,
    networkName,
    netns: typeof netns === 'string' ? netns : '',
    config: typeof config === 'string' ? Buffer.from(config, 'base64') : Buffer.alloc(0),
    cniArgs: Array.isArray(cniArgs) ? cniArgs.filter(isStringPair) : [],
    capabilityArgs: isObject(capabilityArgs) ? capabilityArgs : {},
    result: doc['result'],
  };
}

function isStringPair(v: unknown): v is readonly [string, string] {
  return Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string';
}
