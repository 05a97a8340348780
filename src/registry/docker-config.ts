/**
 * Registry credentials from a docker-style `config.json` (`DOCKER_CONFIG`, docs/configuration.md#variables). Only the
 * `auths` map is read; credential helpers (`credsStore`, `credHelpers`) would mean running
 * external programs and are not supported.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, errnoCode } from '../errors.js';

/** Credentials for one registry. */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
  /** OAuth refresh token (`identitytoken`), used instead of the password for a Bearer token. */
  readonly identityToken?: string | undefined;
}

/** docker.io is stored under several historic keys by `docker login`. */
const DOCKER_HUB_KEYS = ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'];

/**
 * The host[:port] an `auths` key stands for: keys may be `host`, `https://host`,
 * `http://host/v1/`, ... (docker's `ConvertToHostname`).
 */
export function normalizeAuthKey(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  const slash = k.indexOf('/');
  if (slash !== -1) k = k.slice(0, slash);
  return k;
}

function decodeEntry(entry: unknown): RegistryCredentials | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const e = entry as Record<string, unknown>;
  const identityToken = typeof e['identitytoken'] === 'string' && e['identitytoken'] !== '' ? e['identitytoken'] : undefined;
  if (typeof e['auth'] === 'string' && e['auth'] !== '') {
    const decoded = Buffer.from(e['auth'], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon === -1) {
      // No path and no key in the message: it reaches the gRPC caller.
      throw new AgentError('FAILED_PRECONDITION', `DOCKER_CONFIG/config.json: an auths entry's auth is not base64 of "user:password"`);
    }
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), identityToken };
  }
  if (typeof e['username'] === 'string' && typeof e['password'] === 'string') {
    return { username: e['username'], password: e['password'], identityToken };
  }
  if (identityToken !== undefined) {
    return { username: typeof e['username'] === 'string' ? e['username'] : '', password: '', identityToken };
  }
  return undefined;
}

/** The credentials of a docker config, looked up by registry. */
export class DockerCredentials {
  readonly #byHost: ReadonlyMap<string, RegistryCredentials>;
  /** The file they came from (for messages); '' when none was read. */
  readonly file: string;

  constructor(byHost: ReadonlyMap<string, RegistryCredentials>, file: string) {
    this.#byHost = byHost;
    this.file = file;
  }

  /** No credentials at all. */
  static empty(): DockerCredentials {
    return new DockerCredentials(new Map(), '');
  }

  /** Parses the text of a `config.json`. @throws AgentError FAILED_PRECONDITION on malformed JSON. */
  static parse(text: string, file: string): DockerCredentials {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (err) {
      throw new AgentError('FAILED_PRECONDITION', 'DOCKER_CONFIG/config.json is not valid JSON', { cause: err });
    }
    const byHost = new Map<string, RegistryCredentials>();
    const auths = typeof j === 'object' && j !== null ? (j as Record<string, unknown>)['auths'] : undefined;
    if (typeof auths === 'object' && auths !== null) {
      for (const [key, entry] of Object.entries(auths)) {
        const creds = decodeEntry(entry);
        if (creds) byHost.set(normalizeAuthKey(key), creds);
      }
    }
    return new DockerCredentials(byHost, file);
  }

  /**
   * Reads `<dir>/config.json`. A missing file means no credentials; an unreadable or
   * malformed one is an error (no silent fallback to anonymous).
   */
  static async load(dir: string): Promise<DockerCredentials> {
    const file = path.join(dir, 'config.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return new DockerCredentials(new Map(), file);
      throw new AgentError(
        'FAILED_PRECONDITION',
        `cannot read the registry credentials in DOCKER_CONFIG/config.json (${errnoCode(err) ?? 'read failed'})`,
        { cause: err },
      );
    }
    return DockerCredentials.parse(text, file);
  }

  /** Credentials for a registry as written in image references (`host[:port]`, `docker.io`). */
  lookup(registry: string): RegistryCredentials | undefined {
    const host = normalizeAuthKey(registry);
    const keys = DOCKER_HUB_KEYS.includes(host) ? DOCKER_HUB_KEYS : [host];
    for (const k of keys) {
      const c = this.#byHost.get(k);
      if (c) return c;
    }
    return undefined;
  }
}
