/**
 * The image service: turns an image reference into an unpacked local image the runtime can
 * start containers from, following IMAGE_PULL_POLICY (docs/contract.md#ensurecontainer, §5):
 *
 * - `if-not-present`: a local image whose content is readable and whose snapshot chain is
 *   unpacked is used as is; otherwise it is pulled (only missing blobs are downloaded).
 * - `always`: the tag is resolved again every time (one HEAD); when the registry's digest equals
 *   the local record's target nothing is downloaded.
 * - `never`: no registry access; a missing image is NOT_FOUND.
 *
 * Concurrent calls for one reference share one run (single-flight with its own timeout,
 * reference weakness docs/go-agent.md#w15). Runs
 * for different references are bounded by a PullLimiter (AGENT_MAX_CONCURRENT_PULLS and a
 * bounded queue), which also bounds the single-flight map. Only registries in
 * AGENT_ALLOWED_REGISTRIES are contacted. How a pull talks to containerd and the registry:
 * pull.ts and docs/containerd.md#pulling, docs/containerd.md#unpack.
 */
import type { ImageBounds, PullPolicy } from '../../../config/config.js';
import { AgentError, hasCode } from '../../../errors.js';
import type { Logger } from '../../../log.js';
import type { AgentMetrics } from '../../../metrics.js';
import { DEFAULT_PULL_TIMEOUT_MS, PullLimiter } from '../../pull-limiter.js';
import type { ContainerdClient } from '../client.js';
import { ImageLimitError } from './image-limits.js';
import type { Descriptor, Platform } from '../../../registry/oci.js';
import { hostPlatform } from '../../../registry/platform.js';
import { pullImage, unpackLocal, type PullStats } from './pull.js';
import { parseReference, type ImageReference } from '../../../registry/reference.js';
import { RegistryClient, type RegistryClientOptions } from '../../../registry/registry-client.js';
import { loadLocalImage, type LocalImage, type ResolvedImage } from './resolved-image.js';
import { SingleFlight } from '../../../concurrency/single-flight.js';

/** Types callers of the service need, re-exported so they import one module. */
export type { ResolvedImage, LocalImage, ImageContent } from './resolved-image.js';
export type { Descriptor, OciImageConfig, OciProcessConfig, Platform } from '../../../registry/oci.js';

/** Construction options; only `main.ts`/the runtime builds these from Config. */
export interface ImageServiceOptions {
  readonly client: ContainerdClient;
  /** containerd snapshotter that unpacked layers go into (CONTAINERD_SNAPSHOTTER). */
  readonly snapshotter: string;
  readonly registry: RegistryClientOptions;
  readonly pullPolicy: PullPolicy;
  /** Concurrency and size bounds (AGENT_MAX_CONCURRENT_PULLS, AGENT_IMAGE_MAX_*). */
  readonly bounds: ImageBounds;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** Default DEFAULT_PULL_TIMEOUT_MS. */
  readonly pullTimeoutMs?: number | undefined;
  /** Platform to select from indexes; default the host's. */
  readonly platform?: Platform | undefined;
}

/**
 * Resolves, pulls and unpacks images into containerd for the runtime. One per agent.
 */
export class ImageService {
  readonly #client: ContainerdClient;
  readonly #snapshotter: string;
  readonly #policy: PullPolicy;
  readonly #log: Logger;
  readonly #metrics: AgentMetrics;
  readonly #platform: Platform;
  readonly #registry: RegistryClient;
  readonly #flights: SingleFlight<ResolvedImage>;
  readonly #limiter: PullLimiter;
  readonly #bounds: ImageBounds;
  readonly #hosts: ImageServiceOptions['registry']['hosts'];

  /** @throws AgentError FAILED_PRECONDITION when the registry CA file is unreadable. */
  constructor(opts: ImageServiceOptions) {
    this.#client = opts.client;
    this.#snapshotter = opts.snapshotter;
    this.#policy = opts.pullPolicy;
    this.#log = opts.log.child({ module: 'image' });
    this.#metrics = opts.metrics;
    this.#platform = opts.platform ?? hostPlatform();
    this.#registry = new RegistryClient({ ...opts.registry, log: this.#log });
    this.#hosts = opts.registry.hosts;
    this.#bounds = opts.bounds;
    this.#flights = new SingleFlight(opts.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS);
    this.#limiter = new PullLimiter({
      max: opts.bounds.maxConcurrentPulls,
      onChange: (running, queued) => {
        this.#metrics.pullsRunning.set(running);
        this.#metrics.pullsQueued.set(queued);
      },
      onRefused: () => {
        this.#metrics.imageRefusals.inc({ reason: 'busy' });
      },
    });
  }

  /** Refuses a registry outside AGENT_ALLOWED_REGISTRIES before anything is sent to it. */
  #assertAllowed(ref: ImageReference): void {
    try {
      this.#hosts.assertAllowed(ref.registry, ref.name);
    } catch (err) {
      this.#metrics.imageRefusals.inc({ reason: 'registry_not_allowed' });
      throw err;
    }
  }

  /**
   * Makes `ref` available locally and unpacked, per the pull policy, and describes it.
   * Concurrent calls for the same normalised reference share one pull; `signal` only stops
   * this caller's wait (the pull is cancelled when every caller has given up).
   *
   * @throws AgentError INVALID_ARGUMENT (bad reference); NOT_FOUND (not in the registry, no
   *   manifest for this platform, or missing with IMAGE_PULL_POLICY=never); PERMISSION_DENIED
   *   (registry refused); UNAVAILABLE (registry or containerd unreachable); FAILED_PRECONDITION
   *   (schema 1, oversized or corrupt content); CANCELLED / DEADLINE_EXCEEDED. A failed pull
   *   leaves no lease and no image record behind.
   */
  async ensureImage(ref: string, opts: { signal: AbortSignal }): Promise<ResolvedImage> {
    const parsed = parseReference(ref);
    return this.#flights.run(parsed.name, (signal) => this.#ensure(parsed, signal), opts.signal, `ensure image ${parsed.name}`);
  }

  /**
   * Reads a local image from containerd (record, index, host manifest, config from the content
   * store, and whether it is unpacked) without touching the registry. undefined when there is
   * no image record of that name.
   */
  async getLocalImage(ref: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<LocalImage | undefined> {
    const parsed = parseReference(ref);
    return loadLocalImage(this.#client, parsed.name, { snapshotter: this.#snapshotter, platform: this.#platform, signal: opts.signal });
  }

  /** Pulls in flight (for tests and shutdown logs). */
  get pullsInFlight(): number {
    return this.#flights.size;
  }

  /** Cancels pulls in flight and closes registry connections. */
  async close(): Promise<void> {
    this.#flights.abortAll(new AgentError('CANCELLED', 'image service closed'));
    await this.#registry.close();
  }

  async #ensure(ref: ImageReference, signal: AbortSignal): Promise<ResolvedImage> {
    const local = await loadLocalImage(this.#client, ref.name, { snapshotter: this.#snapshotter, platform: this.#platform, signal });
    const content = local?.content;
    switch (this.#policy) {
      case 'never': {
        if (!local || !content) throw new AgentError('NOT_FOUND', `image ${ref.name} is not present locally and IMAGE_PULL_POLICY=never`);
        if (!local.unpacked) await this.#unpackLocal(content.image, content.manifest.layers, signal);
        return content.image;
      }
      case 'if-not-present': {
        if (local && content && local.unpacked) {
          this.#log.debug({ ref: ref.name, digest: local.target.digest }, 'image present locally');
          return content.image;
        }
        // Local content without its snapshots: re-run the pull on the recorded target, which
        // downloads only what is missing.
        return this.#pull(ref, local?.content ? local.target : undefined, undefined, signal);
      }
      case 'always': {
        this.#assertAllowed(ref);
        const t0 = performance.now();
        const resolved = await this.#registry.resolve(ref, signal);
        const resolveMs = performance.now() - t0;
        if (local && content && local.target.digest === resolved.descriptor.digest) {
          this.#log.debug(
            { ref: ref.name, digest: local.target.digest, resolveMs: Math.round(resolveMs) },
            'image up to date with the registry',
          );
          if (local.unpacked) return content.image;
          return this.#pull(ref, local.target, undefined, signal);
        }
        return this.#pull(ref, resolved.descriptor, resolved.body, signal);
      }
    }
  }

  async #pull(
    ref: ImageReference,
    target: Descriptor | undefined,
    targetBody: Buffer | undefined,
    signal: AbortSignal,
  ): Promise<ResolvedImage> {
    this.#assertAllowed(ref);
    return this.#limiter.run(`pull ${ref.name}`, signal, () => this.#pullNow(ref, target, targetBody, signal));
  }

  async #pullNow(
    ref: ImageReference,
    target: Descriptor | undefined,
    targetBody: Buffer | undefined,
    signal: AbortSignal,
  ): Promise<ResolvedImage> {
    const deps = {
      limits: this.#bounds,
      client: this.#client,
      registry: this.#registry,
      snapshotter: this.#snapshotter,
      platform: this.#platform,
      log: this.#log,
      onBytes: (n: number) => {
        this.#metrics.pulledBytes.inc(n);
      },
    };
    const t0 = performance.now();
    try {
      const { image, stats } = await pullImage(deps, { ref, target, targetBody, signal });
      this.#metrics.pulls.inc({ result: 'ok' });
      this.#metrics.coldStartPhase.observe({ phase: 'pull' }, (stats.resolveMs + stats.fetchMs) / 1000);
      this.#metrics.coldStartPhase.observe({ phase: 'unpack' }, stats.unpackMs / 1000);
      this.#log.info(
        { ref: ref.name, digest: image.target.digest, manifest: image.manifestDigest, chainId: image.chainId, ...rounded(stats) },
        'image pulled',
      );
      return image;
    } catch (err) {
      const code = err instanceof AgentError ? err.code : 'INTERNAL';
      this.#metrics.pulls.inc({ result: code.toLowerCase() });
      if (err instanceof ImageLimitError) this.#metrics.imageRefusals.inc({ reason: err.reason });
      const level = hasCode(err, 'CANCELLED') ? 'info' : 'warn';
      this.#log[level]({ ref: ref.name, code, ms: Math.round(performance.now() - t0), err }, 'image pull failed');
      throw err;
    }
  }

  async #unpackLocal(image: ResolvedImage, layers: readonly Descriptor[], signal: AbortSignal): Promise<void> {
    const t0 = performance.now();
    const applied = await this.#limiter.run(`unpack ${image.name}`, signal, () =>
      unpackLocal({ client: this.#client, snapshotter: this.#snapshotter }, image, layers, signal),
    );
    const ms = performance.now() - t0;
    this.#metrics.coldStartPhase.observe({ phase: 'unpack' }, ms / 1000);
    this.#log.info(
      { ref: image.name, chainId: image.chainId, layersApplied: applied, unpackMs: Math.round(ms) },
      'image unpacked from local content',
    );
  }
}

function rounded(s: PullStats): Record<string, number> {
  return {
    resolveMs: Math.round(s.resolveMs),
    fetchMs: Math.round(s.fetchMs),
    unpackMs: Math.round(s.unpackMs),
    bytes: s.bytes,
    blobsFetched: s.blobsFetched,
    blobsPresent: s.blobsPresent,
    layersApplied: s.layersApplied,
  };
}
