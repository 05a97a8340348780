/**
 * Which registry hosts the agent may talk to, and how (the agent's `RegistryHosts`, named after
 * containerd's `remotes/docker` host configuration). An image reference is caller input, so
 * without a list any `host:port` in it would be contacted from the host's network.
 *
 * Patterns (AGENT_ALLOWED_REGISTRIES, CONTAINER_REGISTRY_INSECURE): comma-separated
 * - `host` or `host:port`: that host exactly; a pattern without a port matches only a reference
 *   without one (a different port is a different service);
 * - `*.example.com[:port]`: any sub-domain of example.com (not example.com itself);
 * - `*`: any host.
 * Hosts compare case-insensitively. `docker.io`, `index.docker.io` and `registry-1.docker.io`
 * are one registry: a reference without a registry (`busybox`) is `docker.io`, which is
 * served from `registry-1.docker.io`, and any of the three names in a list allows all three.
 */
import { AgentError } from '../errors.js';

/** The names Docker Hub goes by; all compare as `docker.io`. */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
const HOST_RE = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[a-f0-9:.]+\])(?::([0-9]{1,5}))?$/;

/** One parsed pattern. */
export type HostPattern =
  | { readonly kind: 'any' }
  | { readonly kind: 'exact'; readonly hostname: string; readonly port: string | undefined }
  | { readonly kind: 'suffix'; readonly suffix: string; readonly port: string | undefined };

/** Splits `host[:port]` (IPv6 in brackets) into a lower-case hostname and its port. */
export function splitHost(host: string): { hostname: string; port: string | undefined } {
  const h = host.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    const rest = h.slice(end + 1);
    return { hostname: h.slice(0, end + 1), port: rest.startsWith(':') ? rest.slice(1) : undefined };
  }
  const colon = h.lastIndexOf(':');
  return colon === -1 ? { hostname: h, port: undefined } : { hostname: h.slice(0, colon), port: h.slice(colon + 1) };
}

function canonicalHostname(hostname: string): string {
  return DOCKER_HUB_ALIASES.has(hostname) ? 'docker.io' : hostname;
}

/** Parses one pattern; throws an Error saying what is wrong (the caller names the variable). */
export function parseHostPattern(raw: string): HostPattern {
  const p = raw.trim().toLowerCase();
  if (p === '*') return { kind: 'any' };
  const wildcard = p.startsWith('*.');
  const body = wildcard ? p.slice(2) : p;
  const m = HOST_RE.exec(body);
  if (!m || (wildcard && body.startsWith('[')))
    throw new Error(`expected host[:port], *.domain[:port] or *, got ${JSON.stringify(raw.trim())}`);
  if (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535))
    throw new Error(`port out of range in ${JSON.stringify(raw.trim())}`);
  const { hostname, port } = splitHost(body);
  return wildcard ? { kind: 'suffix', suffix: `.${hostname}`, port } : { kind: 'exact', hostname: canonicalHostname(hostname), port };
}

/** Parses a comma-separated list (blank entries ignored). */
export function parseHostList(raw: string): HostPattern[] {
  return raw
    .split(',')
    .filter((s) => s.trim() !== '')
    .map(parseHostPattern);
}

/** True when `host` (`hostname[:port]`, as in a reference or a URL's `host`) matches a pattern. */
export function matchesHost(patterns: readonly HostPattern[], host: string): boolean {
  const { hostname, port } = splitHost(host);
  const canonical = canonicalHostname(hostname);
  return patterns.some((p) => {
    if (p.kind === 'any') return true;
    if (p.port !== port) return false;
    return p.kind === 'exact' ? p.hostname === canonical : hostname.endsWith(p.suffix);
  });
}

/** The host part of CONTAINER_REGISTRY (`host[:port][/prefix]`); `docker.io` when it is blank. */
export function defaultRegistryHost(containerRegistry: string): string {
  const host = containerRegistry.split('/')[0] ?? '';
  return host === '' ? 'docker.io' : host.toLowerCase();
}

/** The registry allowlist and the hosts reached over plain HTTP. */
export interface RegistryHostsOptions {
  /** AGENT_ALLOWED_REGISTRIES. */
  readonly allowed: readonly HostPattern[];
  /** CONTAINER_REGISTRY_INSECURE. */
  readonly insecure: readonly HostPattern[];
}

/** The variable that lists the allowed registries, for messages. */
export const ALLOWLIST_VARIABLE = 'AGENT_ALLOWED_REGISTRIES';

/** Answers "may this registry be contacted" and "over which scheme", from configuration only. */
export class RegistryHosts {
  readonly #allowed: readonly HostPattern[];
  readonly #insecure: readonly HostPattern[];

  constructor(opts: RegistryHostsOptions) {
    this.#allowed = opts.allowed;
    this.#insecure = opts.insecure;
  }

  /** True when `host` is in AGENT_ALLOWED_REGISTRIES. */
  isAllowed(host: string): boolean {
    return matchesHost(this.#allowed, host);
  }

  /** True when `host` is in CONTAINER_REGISTRY_INSECURE (plain HTTP). */
  isInsecure(host: string): boolean {
    return matchesHost(this.#insecure, host);
  }

  /**
   * Refuses a registry that is not in the allowlist, before anything is sent to it.
   *
   * @throws AgentError INVALID_ARGUMENT naming the registry and the variable.
   */
  assertAllowed(registry: string, image: string): void {
    if (!this.isAllowed(registry)) {
      throw new AgentError(
        'INVALID_ARGUMENT',
        `image ${image}: registry ${registry} is not in ${ALLOWLIST_VARIABLE}; the agent pulls only from the registries listed there`,
      );
    }
  }
}
