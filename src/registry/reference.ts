/**
 * Image references, normalised the way docker and containerd do it (distribution/reference's
 * `ParseNormalizedNamed` + `TagNameOnly`): no registry → `docker.io`, `library/` before
 * single-component names on docker.io, tag `latest` when neither tag nor digest is given. The
 * normalised `name` is what the containerd image record is called (docs/containerd.md#image-records).
 */
import { AgentError } from '../errors.js';
import { safeName } from '../worker/safe-name.js';

/** A parsed, normalised image reference. */
export interface ImageReference {
  /** Registry as written in the reference, lower-cased host part: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  readonly registry: string;
  /** Repository path inside the registry: `library/busybox`, `esb/fn`. */
  readonly repository: string;
  /** Tag, when given or defaulted (`latest` only when there is no digest either). */
  readonly tag?: string | undefined;
  /** `sha256:<hex>` when the reference pins a digest. */
  readonly digest?: string | undefined;
  /** The full normalised reference: `registry/repository[:tag][@digest]`. */
  readonly name: string;
}

/** Registry used when a reference names none (docker's default). */
export const DEFAULT_REGISTRY = 'docker.io';
/** Old spelling of docker.io that docker folds into it. */
const LEGACY_DEFAULT_REGISTRY = 'index.docker.io';
/** Namespace of docker's official images. */
const OFFICIAL_REPO_PREFIX = 'library/';
/** Tag assumed when a reference has neither tag nor digest. */
export const DEFAULT_TAG = 'latest';
/** distribution/reference NameTotalLengthMax. */
const MAX_NAME_LENGTH = 255;

// Grammar of distribution/reference (regexp.go), anchored.
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^\w[\w.-]{0,127}$/;
const DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const SHA256_DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

function invalid(ref: string, why: string): AgentError {
  return new AgentError('INVALID_ARGUMENT', `invalid image reference ${JSON.stringify(ref)}: ${why}`);
}

/**
 * Parses and normalises an image reference.
 *
 * @throws AgentError INVALID_ARGUMENT naming the reference and what is wrong with it.
 */
export function parseReference(ref: string): ImageReference {
  if (ref === '') throw invalid(ref, 'empty');
  if (/\s/.test(ref)) throw invalid(ref, 'contains white space');
  // docker refuses a bare 64-hex string: it would be ambiguous with an image id.
  if (HEX64_RE.test(ref)) throw invalid(ref, 'a 64-character hexadecimal string is an image id, not a reference');

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw invalid(ref, `malformed digest ${JSON.stringify(digest)}`);
    if (!SHA256_DIGEST_RE.test(digest))
      throw invalid(ref, `unsupported digest ${JSON.stringify(digest)} (only sha256 with 64 lower-case hex digits)`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/') && colon > rest.lastIndexOf(']')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(ref, `malformed tag ${JSON.stringify(tag)}`);
  }
  if (rest === '') throw invalid(ref, 'missing repository name');

  // splitDockerDomain: the first component is a registry when it has a '.' or ':', is
  // "localhost", or has upper-case letters (repository paths are lower-case only).
  let registry = DEFAULT_REGISTRY;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (/[.:]/.test(first) || first.startsWith('[') || first === 'localhost' || first.toLowerCase() !== first) {
      registry = first;
      repository = rest.slice(slash + 1);
    }
  }
  if (!DOMAIN_RE.test(registry)) throw invalid(ref, `malformed registry ${JSON.stringify(registry)}`);
  registry = registry.toLowerCase();
  if (registry === LEGACY_DEFAULT_REGISTRY) registry = DEFAULT_REGISTRY;
  if (registry === DEFAULT_REGISTRY && !repository.includes('/')) repository = OFFICIAL_REPO_PREFIX + repository;

  if (repository.toLowerCase() !== repository) throw invalid(ref, 'repository name must be lower-case');
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) {
      throw invalid(ref, component === '' ? 'empty path component' : `malformed path component ${JSON.stringify(component)}`);
    }
  }
  const base = `${registry}/${repository}`;
  if (base.length > MAX_NAME_LENGTH) throw invalid(ref, `name longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const name = base + (tag !== undefined ? `:${tag}` : '') + (digest !== undefined ? `@${digest}` : '');
  return { registry, repository, tag, digest, name };
}

/**
 * The image of a function whose request gave none (docs/contract.md#ensurecontainer):
 * `${registry}/${safe(functionName)}:${tag}`, the registry omitted when it is ''.
 * The result still has to go through parseReference (a blank safe name is invalid there).
 */
export function defaultImageRef(functionName: string, registry: string, tag: string): string {
  const repo = `${safeName(functionName)}:${tag}`;
  const prefix = registry.replace(/\/+$/, '');
  return prefix === '' ? repo : `${prefix}/${repo}`;
}

/**
 * The image an EnsureContainer asks for: the request's `image` (trimmed), or for a blank one
 * `defaultImageRef`. Checked with parseReference, so a bad reference is INVALID_ARGUMENT
 * before any work starts.
 */
export function requestedImageRef(image: string, functionName: string, registry: string, tag: string): string {
  const ref = image.trim() === '' ? defaultImageRef(functionName, registry, tag) : image.trim();
  parseReference(ref);
  return ref;
}

/**
 * The host name of a registry without its port (and without IPv6 brackets' port): the key of
 * the `containerd.io/distribution.source.<host>` label drops the port (docs/containerd.md#gc-labels).
 */
export function registryHostname(registry: string): string {
  if (registry.startsWith('[')) {
    const end = registry.indexOf(']');
    return end === -1 ? registry : registry.slice(0, end + 1);
  }
  const colon = registry.indexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}
