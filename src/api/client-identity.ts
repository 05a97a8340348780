/**
 * Who a TLS client is, from its certificate, and whether AGENT_GRPC_ALLOWED_CLIENTS lets it in.
 * A certificate's identities are its DNS and URI subject alternative names; only a certificate
 * with neither is known by its subject CN (the same precedence TLS host names use, so an
 * issuer that sets SANs decides the identity, not a free-text CN).
 */
import type { PeerCertificate } from 'node:tls';

/** The identities one client certificate claims. */
export interface ClientIdentity {
  readonly dns: readonly string[];
  readonly uris: readonly string[];
  /** The subject CN, or undefined when absent or given more than once. */
  readonly cn: string | undefined;
}

/**
 * Splits Node's `subjectaltname` text (`DNS:a, URI:spiffe://x, IP Address:1.2.3.4`). Node
 * writes a value holding a comma, quote or other special character as a JSON string, so a
 * crafted SAN cannot smuggle a second entry in.
 */
export function parseSubjectAltName(text: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  const entry = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/y;
  let m: RegExpExecArray | null;
  while (entry.lastIndex < text.length && (m = entry.exec(text)) !== null) {
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    out.push({ type: m[1]!, value });
    if (m[0] === '') break;
  }
  return out;
}

/** The identities of a peer certificate (as grpc-js's auth context gives it). */
export function clientIdentity(cert: Pick<PeerCertificate, 'subjectaltname' | 'subject'> | undefined): ClientIdentity {
  const sans = typeof cert?.subjectaltname === 'string' ? parseSubjectAltName(cert.subjectaltname) : [];
  const cnField: unknown = (cert?.subject as Record<string, unknown> | undefined)?.['CN'];
  return {
    dns: sans.filter((s) => s.type === 'DNS').map((s) => s.value),
    uris: sans.filter((s) => s.type === 'URI').map((s) => s.value),
    cn: typeof cnField === 'string' && cnField !== '' ? cnField : undefined,
  };
}

/** One line naming the identity, for the log: its SANs, or its CN. */
export function describeIdentity(id: ClientIdentity): string {
  const sans = [...id.dns.map((d) => `DNS:${d}`), ...id.uris.map((u) => `URI:${u}`)];
  if (sans.length > 0) return sans.join(', ');
  return id.cn === undefined ? '(no SAN, no CN)' : `CN=${id.cn}`;
}

/** Matches client identities against the configured list. */
export class ClientAllowlist {
  readonly #entries: ReadonlySet<string>;
  readonly #dnsEntries: ReadonlySet<string>;

  constructor(entries: readonly string[]) {
    this.#entries = new Set(entries);
    // DNS names compare case-insensitively; URIs and CNs exactly.
    this.#dnsEntries = new Set(entries.map((e) => e.toLowerCase()));
  }

  /** True when no list is configured: any certificate of the CA may call. */
  get open(): boolean {
    return this.#entries.size === 0;
  }

  allows(id: ClientIdentity): boolean {
    if (this.open) return true;
    if (id.dns.length > 0 || id.uris.length > 0) {
      return id.dns.some((d) => this.#dnsEntries.has(d.toLowerCase())) || id.uris.some((u) => this.#entries.has(u));
    }
    return id.cn !== undefined && this.#entries.has(id.cn);
  }
}
