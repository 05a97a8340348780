/**
 * The registry part of the configuration: where blank images resolve (CONTAINER_REGISTRY),
 * which registries may be pulled from, which speak plain HTTP, and the credentials' home.
 */
import os from 'node:os';
import path from 'node:path';
import { defaultRegistryHost, parseHostList, parseHostPattern, type HostPattern } from '../registry/registry-hosts.js';
import { ConfigError, readString, type Env } from './parse.js';

export interface RegistryConfig {
  /** Host[:port][/path prefix] used to resolve a blank image; '' = none. */
  readonly defaultRegistry: string;
  /** Registries images may be pulled from (AGENT_ALLOWED_REGISTRIES). */
  readonly allowed: readonly HostPattern[];
  /** Registries reached over plain HTTP (CONTAINER_REGISTRY_INSECURE); empty = none. */
  readonly insecure: readonly HostPattern[];
  readonly caFile: string | undefined;
  /** Directory holding the docker-style config.json with `auths`. */
  readonly dockerConfigDir: string;
}

/** CONTAINER_REGISTRY alone, checked: host[:port][/path] without a scheme; set but blank = none. */
export function readDefaultRegistry(env: Env): string {
  // Set but blank means "no registry": a blank image then resolves to safe(fn):tag (docs/contract.md#ensurecontainer).
  const registry = env['CONTAINER_REGISTRY'] !== undefined ? env['CONTAINER_REGISTRY'].trim() : 'registry:5010';
  if (/\s|^[a-z]+:\/\//i.test(registry))
    throw new ConfigError('CONTAINER_REGISTRY', `expected host[:port][/path] without a scheme, got ${JSON.stringify(registry)}`);
  return registry;
}

/** The rest of the registry variables, around `registry` from readDefaultRegistry. */
export function readRegistryConfig(env: Env, registry: string): RegistryConfig {
  const registryHost = defaultRegistryHost(registry);
  const home = env['HOME'] ?? os.homedir();
  return Object.freeze({
    defaultRegistry: registry.replace(/\/+$/, ''),
    allowed: Object.freeze(readHostList(env, 'AGENT_ALLOWED_REGISTRIES', [registryHost], registryHost, false)),
    insecure: Object.freeze(readHostList(env, 'CONTAINER_REGISTRY_INSECURE', [], registryHost, true)),
    caFile: readString(env, 'CONTAINER_REGISTRY_CA_FILE'),
    dockerConfigDir: readString(env, 'DOCKER_CONFIG') ?? path.join(home, '.docker'),
  });
}

/**
 * A host list variable: comma-separated patterns. For CONTAINER_REGISTRY_INSECURE,
 * `1`/`true`/`yes`/`on` means the CONTAINER_REGISTRY host and `0`/`false`/`no`/`off` none.
 */
function readHostList(env: Env, name: string, fallback: readonly string[], registryHost: string, boolWords: boolean): HostPattern[] {
  const raw = readString(env, name);
  try {
    if (raw === undefined) return fallback.map((h) => parseHostPattern(h));
    if (boolWords) {
      const word = raw.toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(word)) return [parseHostPattern(registryHost)];
      if (['0', 'false', 'no', 'off'].includes(word)) return [];
    }
    return parseHostList(raw);
  } catch (err) {
    throw new ConfigError(name, (err as Error).message);
  }
}
