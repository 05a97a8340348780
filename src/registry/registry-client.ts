/**
 * A Docker Registry v2 / OCI distribution client over undici, just enough to pull: resolve a
 * reference to a descriptor, fetch manifests and configs whole (verified), and open layer
 * blobs as streams (verified by the content writer while they are written).
 *
 * Which hosts: only registries in AGENT_ALLOWED_REGISTRIES are contacted (the reference is
 * caller input). A registry may send the agent on (blob redirects, token realms): those may go
 * to other hosts, but not to the host's own or link-local addresses unless listed, and never
 * with the registry's credentials attached (local-addresses.ts, registry-hosts.ts).
 * Transport: HTTPS with the system CAs plus CONTAINER_REGISTRY_CA_FILE; plain HTTP only for
 * the hosts in CONTAINER_REGISTRY_INSECURE (loopback included: it is not implicitly plain).
 * Auth: auth.ts. Behaviour mirrors containerd's `remotes/docker` resolver and fetcher
 * (docs/containerd.md#resolve, docs/containerd.md#registry-auth, docs/containerd.md#platform-manifest).
 */
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import tls from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import { Authorizer, bearerError, parseWwwAuthenticate, pullScope, type TokenHttp } from './auth.js';
import { sha256Digest, verifyBytes } from './digest.js';
import { DockerCredentials } from './docker-config.js';
import {
  MANIFEST_ACCEPT,
  assertNotSchema1,
  detectManifestType,
  isIndexType,
  isManifestType,
  parseJsonObject,
  type Descriptor,
} from './oci.js';
import { assertNotLocal } from './local-addresses.js';
import type { ImageReference } from './reference.js';
import { networkError, readCapped, statusError } from './registry-errors.js';
import { RegistryHosts, splitHost } from './registry-hosts.js';

/** containerd's `MaxManifestSize` (4·1048·1048 bytes, docs/containerd.md#resolve). */
export const MAX_MANIFEST_BYTES = 4 * 1048 * 1048;
/** Image configs are read whole too; long histories stay far below this. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
/** Token responses are small JSON documents. */
const MAX_TOKEN_BYTES = 1024 * 1024;
const MAX_REDIRECTS = 5;
const USER_AGENT = 'esb-agent (containerd-api)';
/** Connection set-up bound; a dead host should fail the pull well before its own timeout. */
const CONNECT_TIMEOUT_MS = 10_000;
/** undici's own timers are coarse (~1 s, docs/design.md#undici); the pull's signal is the precise bound. */
const HEADERS_TIMEOUT_MS = 60_000;
const BODY_IDLE_TIMEOUT_MS = 60_000;
/** Where distributions keep the system CA bundle (Debian/Ubuntu, RHEL/Fedora, Alpine/SUSE). */
const SYSTEM_CA_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

/** Transport and credential settings (docs/configuration.md#variables CONTAINER_REGISTRY_*, DOCKER_CONFIG). */
export interface RegistryClientOptions {
  /** Allowed registries and the plain-HTTP ones. */
  readonly hosts: RegistryHosts;
  /** Extra CA bundle (PEM) trusted besides the system CAs (CONTAINER_REGISTRY_CA_FILE). */
  readonly caFile?: string | undefined;
  /** Directory of the docker-style config.json (DOCKER_CONFIG). */
  readonly dockerConfigDir: string;
  readonly log?: Logger | undefined;
}

/** A resolved reference: its top descriptor, and the body when resolving had to GET it. */
export interface ResolvedDescriptor {
  readonly descriptor: Descriptor;
  readonly body?: Buffer | undefined;
}

/** An open blob download, starting at `offset` (0 when the registry ignored a Range). */
export interface BlobStream {
  readonly offset: number;
  readonly body: AsyncIterable<Buffer>;
  /** Frees the connection when the stream is abandoned early. */
  destroy(): void;
}

type Headers = Record<string, string>;

function header(res: Dispatcher.ResponseData, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Trust store: Node's bundled roots, the distribution's bundle, and the configured extra CA. */
function trustedCas(caFile: string | undefined): string[] {
  const cas = [...tls.rootCertificates];
  for (const f of SYSTEM_CA_BUNDLES) {
    try {
      cas.push(readFileSync(f, 'utf8'));
      break;
    } catch {
      // not this distribution's path
    }
  }
  if (caFile !== undefined && caFile !== '') {
    try {
      cas.push(readFileSync(caFile, 'utf8'));
    } catch (err) {
      throw new AgentError('FAILED_PRECONDITION', `CONTAINER_REGISTRY_CA_FILE ${caFile} is not readable: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  return cas;
}

/**
 * Registry access for pulls. One instance per agent: it keeps connections and auth tokens.
 * Every method honours its AbortSignal and throws AgentError only.
 */
export class RegistryClient {
  readonly #hosts: RegistryHosts;
  readonly #dispatcher: Agent;
  readonly #auth: Authorizer;

  /** @throws AgentError FAILED_PRECONDITION when the CA file is unreadable. */
  constructor({ hosts, caFile, dockerConfigDir, log }: RegistryClientOptions) {
    this.#hosts = hosts;
    this.#dispatcher = new Agent({
      connect: { ca: trustedCas(caFile), timeout: CONNECT_TIMEOUT_MS },
      headersTimeout: HEADERS_TIMEOUT_MS,
      bodyTimeout: BODY_IDLE_TIMEOUT_MS,
    });
    const http: TokenHttp = async (url, init) => {
      const host = new URL(url).host;
      const res = await this.#send(url, init, host, `get a token from ${host}`, init.signal);
      return { status: res.statusCode, body: await readCapped(res.body, MAX_TOKEN_BYTES, `token response of ${host}`) };
    };
    this.#auth = new Authorizer({
      credentials: () => DockerCredentials.load(dockerConfigDir),
      http,
      log,
      checkRealm: (registry, realm, withCredentials) => this.#checkRealm(registry, realm, withCredentials),
    });
  }

  /** Base URL of a registry's API: docker.io lives at registry-1.docker.io; plain HTTP only for insecure hosts. */
  baseUrl(registry: string): string {
    const host = registry === 'docker.io' ? 'registry-1.docker.io' : registry;
    return `${this.#hosts.isInsecure(host) ? 'http' : 'https'}://${host}`;
  }

  /**
   * A token realm may receive the docker config's credentials only over https, or over plain
   * http on the registry's own host name when that realm host is listed as insecure; with or
   * without credentials it may not lead to a local address unless it is an allowed registry.
   */
  async #checkRealm(registry: string, realm: URL, withCredentials: boolean): Promise<void> {
    const registryHost = splitHost(new URL(this.baseUrl(registry)).host).hostname;
    if (withCredentials && realm.protocol !== 'https:' && !(realm.hostname === registryHost && this.#hosts.isInsecure(realm.host))) {
      throw new AgentError(
        'PERMISSION_DENIED',
        `registry ${registry} asks for a token from a plain-http realm on another host; credentials are sent only over https, or over http to the registry's own host listed in CONTAINER_REGISTRY_INSECURE`,
      );
    }
    if (!this.#hosts.isAllowed(realm.host)) await assertNotLocal(realm.hostname, `token realm of registry ${registry}`);
  }

  /** A redirect may go to another host, but not to a local address unless that host is allowed. */
  async #checkRedirect(registry: string, target: URL, what: string): Promise<void> {
    if (target.protocol !== 'https:' && target.protocol !== 'http:') {
      throw new AgentError('FAILED_PRECONDITION', `${what}: registry ${registry} redirected to a non-http(s) location`);
    }
    if (!this.#hosts.isAllowed(target.host)) await assertNotLocal(target.hostname, `${what}: redirect from registry ${registry}`);
  }

  /**
   * Resolves a reference to its top descriptor: HEAD the manifest with the Go client's Accept
   * list, falling back to GET (and hashing the body) when HEAD is refused or lacks the digest,
   * length or a specific media type. A digest in the reference is authoritative.
   *
   * @throws AgentError NOT_FOUND `image <ref> not found in <registry>`; PERMISSION_DENIED;
   *   UNAVAILABLE; FAILED_PRECONDITION for schema 1 or an oversized manifest.
   */
  async resolve(ref: ImageReference, signal: AbortSignal): Promise<ResolvedDescriptor> {
    const what = `resolve ${ref.name}`;
    const path = `/v2/${ref.repository}/manifests/${ref.digest ?? ref.tag ?? 'latest'}`;
    const notFound = `image ${ref.name} not found in ${ref.registry}`;
    const head = await this.#request(ref, path, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT }, signal, what });
    await head.body.dump();
    if (head.statusCode === 200) {
      const type = header(head, 'content-type')?.split(';')[0]?.trim();
      const digest = ref.digest ?? header(head, 'docker-content-digest');
      const size = Number(header(head, 'content-length') ?? NaN);
      if (type !== undefined) assertNotSchema1(type, ref.name);
      if (Number.isSafeInteger(size) && size > MAX_MANIFEST_BYTES) {
        throw new AgentError('FAILED_PRECONDITION', `${what}: manifest of ${size} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);
      }
      const specific = type !== undefined && (isIndexType(type) || isManifestType(type));
      if (digest !== undefined && specific && Number.isSafeInteger(size) && size > 0) {
        return { descriptor: { mediaType: type, digest, size } };
      }
    } else if (head.statusCode === 404) {
      // A digest reference may name content some registries serve only under blobs/
      // (docs/containerd.md#resolve); the digest check below keeps that safe.
      if (ref.digest === undefined) throw statusError(404, undefined, ref.registry, what, notFound);
      return this.#resolveFromGet(ref, `/v2/${ref.repository}/blobs/${ref.digest}`, what, notFound, signal);
    } else if (head.statusCode !== 405 && head.statusCode !== 400) {
      // HEAD responses have no body to explain themselves; 400/405 mean "HEAD unsupported".
      throw statusError(head.statusCode, undefined, ref.registry, what, notFound);
    }
    return this.#resolveFromGet(ref, path, what, notFound, signal);
  }

  /** Resolves by GETting the manifest and hashing it (HEAD refused or incomplete). */
  async #resolveFromGet(
    ref: ImageReference,
    path: string,
    what: string,
    notFound: string,
    signal: AbortSignal,
  ): Promise<ResolvedDescriptor> {
    const get = await this.#request(ref, path, { method: 'GET', headers: { accept: MANIFEST_ACCEPT }, signal, what });
    const body = await this.#body(get, ref, what, notFound, MAX_MANIFEST_BYTES, signal);
    const computed = sha256Digest(body);
    if (ref.digest !== undefined && computed !== ref.digest) {
      throw new AgentError(
        'FAILED_PRECONDITION',
        `${what}: registry returned content with digest ${computed}, the reference pins ${ref.digest}`,
      );
    }
    const mediaType = detectManifestType(parseJsonObject(body, `manifest of ${ref.name}`), header(get, 'content-type'));
    assertNotSchema1(mediaType, ref.name);
    return { descriptor: { mediaType, digest: computed, size: body.length }, body };
  }

  /** Fetches a manifest or index by digest and verifies it. */
  async fetchManifest(ref: ImageReference, desc: Descriptor, signal: AbortSignal): Promise<Buffer> {
    const what = `fetch manifest ${desc.digest} of ${ref.name}`;
    const res = await this.#request(ref, `/v2/${ref.repository}/manifests/${desc.digest}`, {
      method: 'GET',
      headers: { accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` },
      signal,
      what,
    });
    const body = await this.#body(
      res,
      ref,
      what,
      `manifest ${desc.digest} of image ${ref.name} not found in ${ref.registry}`,
      MAX_MANIFEST_BYTES,
      signal,
    );
    verifyBytes(body, desc.digest, desc.size, what);
    return body;
  }

  /** Fetches a small blob (an image config) whole and verifies it. */
  async fetchBlobBytes(ref: ImageReference, desc: Descriptor, signal: AbortSignal): Promise<Buffer> {
    const what = `fetch blob ${desc.digest} of ${ref.name}`;
    if (desc.size > MAX_CONFIG_BYTES)
      throw new AgentError('FAILED_PRECONDITION', `${what}: ${desc.size} bytes is over the ${MAX_CONFIG_BYTES}-byte limit`);
    const res = await this.#request(ref, `/v2/${ref.repository}/blobs/${desc.digest}`, {
      method: 'GET',
      headers: { accept: `${desc.mediaType}, */*` },
      signal,
      what,
    });
    const body = await this.#body(
      res,
      ref,
      what,
      `blob ${desc.digest} of image ${ref.name} not found in ${ref.registry}`,
      MAX_CONFIG_BYTES,
      signal,
    );
    verifyBytes(body, desc.digest, desc.size, what);
    return body;
  }

  /**
   * Opens a blob download, from `offset` when the registry honours a Range request (resuming a
   * partial ingest, docs/containerd.md#content-write); the caller verifies digest and size, and stops at the declared size.
   */
  async openBlob(ref: ImageReference, desc: Descriptor, offset: number, signal: AbortSignal): Promise<BlobStream> {
    const what = `fetch blob ${desc.digest} of ${ref.name}`;
    const headers: Headers = { accept: `${desc.mediaType}, */*` };
    if (offset > 0) headers['range'] = `bytes=${offset}-`;
    const res = await this.#request(ref, `/v2/${ref.repository}/blobs/${desc.digest}`, { method: 'GET', headers, signal, what });
    let start = 0;
    if (res.statusCode === 206 && offset > 0) {
      const m = /^bytes (\d+)-/.exec(header(res, 'content-range') ?? '');
      if (m?.[1] === String(offset)) start = offset;
      else {
        await res.body.dump();
        return this.openBlob(ref, desc, 0, signal);
      }
    } else if (res.statusCode !== 200) {
      const body = await readCapped(res.body, 64 * 1024, what).catch(() => undefined);
      throw statusError(res.statusCode, body, ref.registry, what, `blob ${desc.digest} of image ${ref.name} not found in ${ref.registry}`);
    }
    const stream: Readable = res.body;
    const registry = ref.registry;
    const mapped = async function* (): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) yield chunk;
      } catch (err) {
        throw networkError(err, registry, what, signal);
      }
    };
    return { offset: start, body: mapped(), destroy: () => stream.destroy() };
  }

  /** Closes pooled connections. */
  async close(): Promise<void> {
    await this.#dispatcher.close();
  }

  async #body(
    res: Dispatcher.ResponseData,
    ref: ImageReference,
    what: string,
    notFound: string,
    max: number,
    signal: AbortSignal,
  ): Promise<Buffer> {
    if (res.statusCode !== 200) {
      const body = await readCapped(res.body, 64 * 1024, what).catch(() => undefined);
      throw statusError(res.statusCode, body, ref.registry, what, notFound);
    }
    const len = Number(header(res, 'content-length') ?? NaN);
    if (Number.isSafeInteger(len) && len > max) {
      res.body.destroy();
      throw new AgentError('FAILED_PRECONDITION', `${what}: ${len} bytes is over the ${max}-byte limit`);
    }
    try {
      return await readCapped(res.body, max, what);
    } catch (err) {
      throw networkError(err, ref.registry, what, signal);
    }
  }

  /** One request with auth challenges and redirects handled (credentials never leave the registry's origin). */
  async #request(
    ref: ImageReference,
    path: string,
    init: { method: 'GET' | 'HEAD'; headers: Headers; signal: AbortSignal; what: string },
  ): Promise<Dispatcher.ResponseData> {
    this.#hosts.assertAllowed(ref.registry, ref.name);
    const scope = pullScope(ref.repository);
    let url = this.baseUrl(ref.registry) + path;
    const origin = new URL(url).origin;
    let freshAuth = false;
    for (let redirects = 0; ;) {
      const sameOrigin = new URL(url).origin === origin;
      const headers: Headers = { ...init.headers };
      const auth = sameOrigin ? this.#auth.authorization(ref.registry, scope) : undefined;
      if (auth !== undefined) headers['authorization'] = auth;
      const res = await this.#send(url, { method: init.method, headers }, ref.registry, init.what, init.signal);
      if (res.statusCode === 401 && sameOrigin) {
        const challenges = parseWwwAuthenticate(res.headers['www-authenticate']);
        await res.body.dump();
        if (freshAuth) {
          // A 401 right after fresh credentials or a fresh token is a refusal, not a stale
          // token: stop here instead of looping (docs/containerd.md#registry-auth step 4).
          const why = bearerError(challenges);
          throw new AgentError(
            'PERMISSION_DENIED',
            `registry ${ref.registry} denied access to ${ref.name}${why !== undefined ? ` (${why})` : ''}`,
          );
        }
        await this.#auth.handleChallenge(ref.registry, scope, challenges, init.signal);
        freshAuth = true;
        continue;
      }
      const location = header(res, 'location');
      if ([301, 302, 303, 307, 308].includes(res.statusCode) && location !== undefined) {
        await res.body.dump();
        if (++redirects > MAX_REDIRECTS)
          throw new AgentError('UNAVAILABLE', `${init.what}: more than ${MAX_REDIRECTS} redirects from ${ref.registry}`);
        let target: URL;
        try {
          target = new URL(location, url);
        } catch {
          throw new AgentError('FAILED_PRECONDITION', `${init.what}: registry ${ref.registry} redirected to an invalid location`);
        }
        await this.#checkRedirect(ref.registry, target, init.what);
        url = target.toString();
        continue;
      }
      return res;
    }
  }

  async #send(
    url: string,
    init: { method: 'GET' | 'HEAD' | 'POST'; headers: Headers; body?: string },
    registry: string,
    what: string,
    signal: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await request(url, {
        dispatcher: this.#dispatcher,
        method: init.method,
        headers: { 'user-agent': USER_AGENT, ...init.headers },
        body: init.body ?? null,
        signal,
      });
    } catch (err) {
      throw networkError(err, registry, what, signal);
    }
  }
}
