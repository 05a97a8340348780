/**
 * The host platform and the choice of one manifest from an index (docs/containerd.md#platform-manifest: the
 * Go client keeps only the best match, `LimitManifests(…, 1)`).
 */
import { AgentError } from '../errors.js';
import type { Descriptor, ImageIndex, Platform } from './oci.js';

/** Node's `process.arch` → OCI architecture (and default variant). */
const ARCH: Readonly<Record<string, Platform>> = {
  x64: { os: 'linux', architecture: 'amd64' },
  arm64: { os: 'linux', architecture: 'arm64', variant: 'v8' },
  arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
  ia32: { os: 'linux', architecture: '386' },
  ppc64: { os: 'linux', architecture: 'ppc64le' },
  s390x: { os: 'linux', architecture: 's390x' },
  riscv64: { os: 'linux', architecture: 'riscv64' },
};

/** The platform of this host, for an `arch` as Node names it (default `process.arch`). */
export function hostPlatform(arch: string = process.arch): Platform {
  return ARCH[arch] ?? { os: 'linux', architecture: arch };
}

/**
 * Normalises a platform as containerd's `platforms.Normalize` does for the cases we meet:
 * `x86_64`→`amd64`, `aarch64`→`arm64`; arm64 without variant means `v8`; amd64 `v1` is the
 * same as none.
 */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() ?? '';
  if (architecture === 'x86_64' || architecture === 'x86-64') architecture = 'amd64';
  if (architecture === 'aarch64') architecture = 'arm64';
  if (architecture === 'arm64' && (variant === '' || variant === '8')) variant = 'v8';
  if (architecture === 'amd64' && variant === 'v1') variant = '';
  if (architecture === 'arm' && /^\d$/.test(variant)) variant = `v${variant}`;
  return { os, architecture, variant: variant === '' ? undefined : variant };
}

/** `linux/arm64/v8` style text for messages. */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((s) => s !== undefined && s !== '').join('/');
}

/** True when an index entry's platform runs on `want`. */
export function platformMatches(entry: Platform, want: Platform): boolean {
  const a = normalizePlatform(entry);
  const b = normalizePlatform(want);
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
}

/**
 * Picks the host's manifest from an index: the first entry whose platform matches (registries
 * list at most one per platform; the Go client also takes the first best match).
 *
 * @throws AgentError NOT_FOUND `no manifest for linux/amd64 in <ref>` when none matches.
 */
export function selectManifest(index: ImageIndex, want: Platform, ref: string): Descriptor {
  const found = index.manifests.find((m) => m.platform !== undefined && platformMatches(m.platform, want));
  if (!found) {
    const have = index.manifests.flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : []));
    throw new AgentError(
      'NOT_FOUND',
      `no manifest for ${formatPlatform(normalizePlatform(want))} in ${ref}${have.length > 0 ? ` (it has ${have.join(', ')})` : ''}`,
    );
  }
  return found;
}
