/**
 * Content digests: format checks, streaming sha256 verification of downloaded bytes, and the
 * chainID computation that names unpacked snapshots (docs/containerd.md#platform-manifest, docs/containerd.md#unpack).
 */
import { createHash, type Hash } from 'node:crypto';
import { AgentError } from '../errors.js';

/** The only digest algorithm the agent accepts; registries and containerd default to it. */
export const SHA256_PREFIX = 'sha256:';

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

/** True for a well-formed `sha256:<64 lower-case hex>` digest. */
export function isSha256Digest(s: string): boolean {
  return SHA256_RE.test(s);
}

/**
 * Checks that `digest` is a sha256 digest, else throws FAILED_PRECONDITION naming `what`
 * (a registry or manifest gave us something we cannot verify).
 */
export function assertSha256Digest(digest: string, what: string): void {
  if (!isSha256Digest(digest)) {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `${what}: unsupported or malformed digest ${JSON.stringify(digest)} (only sha256 is supported)`,
    );
  }
}

/** sha256 of a whole buffer, as `sha256:<hex>`. */
export function sha256Digest(data: Uint8Array | string): string {
  return SHA256_PREFIX + createHash('sha256').update(data).digest('hex');
}

/**
 * Hashes and counts bytes as they stream by, then checks them against an expected descriptor.
 * Every downloaded body goes through one before it is committed (docs/containerd.md#platform-manifest:
 * "Verify sha256 and size of every body before committing").
 */
export class DigestVerifier {
  readonly expectedDigest: string;
  readonly expectedSize: number;
  readonly #what: string;
  #hash: Hash = createHash('sha256');
  #size = 0;

  constructor(expectedDigest: string, expectedSize: number, what: string) {
    assertSha256Digest(expectedDigest, what);
    this.expectedDigest = expectedDigest;
    this.expectedSize = expectedSize;
    this.#what = what;
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.#size;
  }

  /** Adds a chunk; throws FAILED_PRECONDITION as soon as the body grows past the expected size. */
  update(chunk: Uint8Array): void {
    this.#size += chunk.byteLength;
    if (this.#size > this.expectedSize) {
      throw new AgentError(
        'FAILED_PRECONDITION',
        `${this.#what}: body is larger than the ${this.expectedSize} bytes its descriptor declares`,
      );
    }
    this.#hash.update(chunk);
  }

  /** Throws FAILED_PRECONDITION when the size or the digest differs from the descriptor. */
  verify(): void {
    if (this.#size !== this.expectedSize) {
      throw new AgentError('FAILED_PRECONDITION', `${this.#what}: got ${this.#size} bytes, descriptor declares ${this.expectedSize}`);
    }
    const got = SHA256_PREFIX + this.#hash.digest('hex');
    // A Hash cannot be digested twice; keep a fresh one so a second verify() fails cleanly.
    this.#hash = createHash('sha256');
    if (got !== this.expectedDigest) {
      throw new AgentError('FAILED_PRECONDITION', `${this.#what}: digest mismatch, got ${got}, expected ${this.expectedDigest}`);
    }
  }
}

/** Verifies a complete in-memory body against its descriptor (manifests, indexes, configs). */
export function verifyBytes(data: Uint8Array, digest: string, size: number, what: string): void {
  const v = new DigestVerifier(digest, size, what);
  v.update(data);
  v.verify();
}

/**
 * chainIDs of a layer stack (docs/containerd.md#unpack): `chain[0] = diffID[0]`,
 * `chain[i] = sha256(chain[i-1] + " " + diffID[i])`. The last one names the top snapshot.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? diffId : sha256Digest(`${prev} ${diffId}`));
  }
  return out;
}
