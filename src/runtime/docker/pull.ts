/**
 * Images on the docker runtime, with the same IMAGE_PULL_POLICY as containerd (docs/contract.md#ensurecontainer):
 * `if-not-present` uses a local image (`GET /images/{name}/json`), `always` pulls every time
 * (dockerd only downloads what changed), `never` never pulls (missing → NOT_FOUND).
 *
 * A pull is `POST /images/create` with `X-Registry-Auth` from the same docker `config.json` the
 * containerd runtime reads (DOCKER_CONFIG). Its answer is a progress stream whose `error` lines
 * are failures (docs/go-agent.md#w14); they map to NOT_FOUND / PERMISSION_DENIED / UNAVAILABLE like containerd's.
 * dockerd's text may quote what the registry answered, so it goes to the log only; the caller
 * gets the class, the HTTP status and the distribution error codes it names (errors.ts).
 * Only registries in AGENT_ALLOWED_REGISTRIES are pulled from, checked before dockerd is
 * asked; pulls are bounded by AGENT_MAX_CONCURRENT_PULLS. Concurrent pulls of one reference
 * share one run with its own timeout (docs/go-agent.md#w15). Layer count and size bounds do not apply: dockerd
 * downloads, and it does not expose the manifest before it does.
 */
import type { PullPolicy } from '../../config/config.js';
import type { RegistryHosts } from '../../registry/registry-hosts.js';
import { DEFAULT_PULL_TIMEOUT_MS, PullLimiter } from '../pull-limiter.js';
import { AgentError, abortError, hasCode } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { AgentMetrics } from '../../metrics.js';
import { DockerCredentials, type RegistryCredentials } from '../../registry/docker-config.js';
import { parseReference, type ImageReference } from '../../registry/reference.js';
import { SingleFlight } from '../../concurrency/single-flight.js';
import type { DockerEngineClient } from './engine-client.js';
import { engineError, engineMessage, pullError } from './errors.js';
import { jsonLines, progressError, progressStatus } from './json-stream.js';

export interface DockerImagesOptions {
  readonly client: DockerEngineClient;
  readonly pullPolicy: PullPolicy;
  /** DOCKER_CONFIG: the directory of `config.json`. */
  readonly dockerConfigDir: string;
  /** AGENT_ALLOWED_REGISTRIES (CONTAINER_REGISTRY_INSECURE is dockerd's own setting here). */
  readonly hosts: RegistryHosts;
  readonly maxConcurrentPulls: number;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly pullTimeoutMs?: number;
}

/** The name dockerd knows an image by: `registry/repo:tag`, or `registry/repo@digest` when pinned. */
export function dockerImageName(ref: ImageReference): string {
  const base = `${ref.registry}/${ref.repository}`;
  return ref.digest !== undefined ? `${base}@${ref.digest}` : `${base}:${ref.tag ?? 'latest'}`;
}

/**
 * The `X-Registry-Auth` header value: base64url of `{username, password, serveraddress}` (or
 * `identitytoken`), as the Engine API documents for `/images/create`.
 */
export function registryAuthHeader(registry: string, creds: RegistryCredentials): string {
  const auth =
    creds.identityToken !== undefined
      ? { identitytoken: creds.identityToken, serveraddress: registry }
      : { username: creds.username, password: creds.password, serveraddress: registry };
  return Buffer.from(JSON.stringify(auth)).toString('base64url');
}

export class DockerImages {
  readonly #o: DockerImagesOptions;
  readonly #log: Logger;
  readonly #flights: SingleFlight<string>;
  readonly #limiter: PullLimiter;

  constructor(o: DockerImagesOptions) {
    this.#o = o;
    this.#log = o.log.child({ module: 'docker-image' });
    this.#flights = new SingleFlight(o.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS);
    this.#limiter = new PullLimiter({
      max: o.maxConcurrentPulls,
      onChange: (running, queued) => {
        o.metrics.pullsRunning.set(running);
        o.metrics.pullsQueued.set(queued);
      },
      onRefused: () => {
        o.metrics.imageRefusals.inc({ reason: 'busy' });
      },
    });
  }

  /**
   * Makes `ref` available in dockerd per the pull policy; returns the name to create from.
   *
   * @throws AgentError INVALID_ARGUMENT (bad reference); NOT_FOUND (not in the registry, or
   *   missing with `never`); PERMISSION_DENIED (credentials refused); UNAVAILABLE (registry or
   *   dockerd down); CANCELLED / DEADLINE_EXCEEDED from `signal`.
   */
  async ensureImage(refText: string, signal: AbortSignal): Promise<string> {
    const ref = parseReference(refText);
    const name = dockerImageName(ref);
    const policy = this.#o.pullPolicy;
    if (policy !== 'always' && (await this.#present(name, signal))) return name;
    if (policy === 'never') {
      throw new AgentError(
        'NOT_FOUND',
        `image ${name} is not in dockerd and IMAGE_PULL_POLICY=never forbids pulling it; load it first (docker pull/load)`,
      );
    }
    try {
      this.#o.hosts.assertAllowed(ref.registry, name);
    } catch (err) {
      this.#o.metrics.imageRefusals.inc({ reason: 'registry_not_allowed' });
      throw err;
    }
    return this.#flights.run(name, (s) => this.#limiter.run(`pull ${name}`, s, () => this.#pull(ref, name, s)), signal, `pull ${name}`);
  }

  async #present(name: string, signal: AbortSignal): Promise<boolean> {
    const res = await this.#o.client.request({ method: 'GET', path: `/images/${name}/json`, signal, what: `inspect image ${name}` });
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw engineError(`inspect image ${name}`, res.status, res.body);
  }

  async #pull(ref: ImageReference, name: string, signal: AbortSignal): Promise<string> {
    const t0 = performance.now();
    const { metrics } = this.#o;
    try {
      const creds = (await DockerCredentials.load(this.#o.dockerConfigDir)).lookup(ref.registry);
      const headers: Record<string, string> = creds ? { 'X-Registry-Auth': registryAuthHeader(ref.registry, creds) } : {};
      const res = await this.#o.client.stream({
        method: 'POST',
        path: '/images/create',
        query: { fromImage: `${ref.registry}/${ref.repository}`, tag: ref.digest ?? ref.tag ?? 'latest' },
        headers,
        signal,
        what: `pull ${name}`,
        timeoutMs: 0,
      });
      if (!res.ok) {
        const message = engineMessage(res.body);
        this.#log.debug({ ref: name, status: res.status, message }, 'dockerd refused the pull');
        throw pullError(`pull ${name}`, res.status, message);
      }
      let last = '';
      for await (const msg of jsonLines(res.body)) {
        const error = progressError(msg);
        if (error !== undefined) {
          res.body.destroy();
          this.#log.debug({ ref: name, message: error }, 'dockerd pull failed');
          throw pullError(`pull ${name}`, 0, error);
        }
        last = progressStatus(msg) || last;
      }
      const ms = performance.now() - t0;
      metrics.pulls.inc({ result: 'ok' });
      metrics.coldStartPhase.observe({ phase: 'pull' }, ms / 1000);
      this.#log.info({ ref: name, ms: Math.round(ms), status: last, authenticated: creds !== undefined }, 'image pulled');
      return name;
    } catch (err) {
      const e = signal.aborted && !(err instanceof AgentError) ? abortError(signal, `pull ${name}`) : err;
      const code = e instanceof AgentError ? e.code : 'INTERNAL';
      metrics.pulls.inc({ result: code.toLowerCase() });
      this.#log[hasCode(e, 'CANCELLED') ? 'info' : 'warn'](
        { ref: name, code, ms: Math.round(performance.now() - t0), err: e },
        'image pull failed',
      );
      throw e instanceof AgentError ? e : new AgentError('INTERNAL', `pull ${name}: ${String(e)}`, { cause: e });
    }
  }
}
