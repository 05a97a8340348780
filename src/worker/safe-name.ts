/**
 * The contract's `safe()` (docs/contract.md#worker-ids): the one place names become safe for
 * worker ids, image names and the brand/env prefix. A leaf: config, worker naming and the
 * registry's image references all import it from here.
 */

/** `safe()` of the contract: lower-case, keep [a-z0-9._-], fold separator runs to '-', trim them. */
export function safeName(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/[._-]{2,}/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '');
}
