/**
 * Registry auth for tests.
 *
 * `startTokenServer` is a Docker token-auth server on 127.0.0.1 (the "realm" a registry's Bearer
 * challenge points to). It answers both forms a client may use:
 *   - GET  /token?service=…&scope=…  with optional HTTP Basic auth → {token, access_token, expires_in, issued_at}
 *   - POST /token  form grant_type=password&username&password&service&scope&client_id → {access_token, scope, expires_in, issued_at}
 * Tokens are ES256 JWTs whose `x5c` header carries the signing certificate (base64 DER), which is
 * also written to `rootCertBundle` for the registry's `auth.token.rootcertbundle` (distribution
 * 2.8 checks the x5c chain against that bundle). Valid users get the actions they ask for
 * (unless `authorize` says otherwise), anonymous callers get an empty `access` list, a wrong
 * password gets 401.
 *
 * `makeHtpasswd` writes a bcrypt htpasswd file for the registry's Basic auth, hashing with the
 * system's crypt(3) (libxcrypt, through perl from the essential perl-base package).
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomBytes, randomUUID, sign, timingSafeEqual, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface TokenScope {
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

export interface TokenServerOptions {
  /** username → password. */
  readonly users: Readonly<Record<string, string>>;
  /** The registry's service name (`auth.token.service`); default `esb-test-registry`. */
  readonly service?: string;
  /** Token issuer (`auth.token.issuer`); default `esb-test-token-issuer`. */
  readonly issuer?: string;
  /** Token lifetime in seconds (default 300). */
  readonly expiresIn?: number;
  /**
   * Actions granted for one requested scope. `user` is undefined for anonymous requests.
   * Default: a valid user gets every action asked for, anonymous gets none.
   */
  readonly authorize?: (user: string | undefined, scope: TokenScope) => readonly string[];
}

/** One request the token server answered, for tests that check how a client authenticated. */
export interface TokenRequestRecord {
  readonly method: string;
  /** The authenticated user; undefined for anonymous requests and refused ones. */
  readonly user: string | undefined;
  /** The username a refused request tried. */
  readonly triedUser: string | undefined;
  readonly grantType: string | undefined;
  readonly clientId: string | undefined;
  readonly service: string | undefined;
  readonly scopes: readonly string[];
  readonly status: number;
  readonly granted: readonly TokenScope[];
}

export interface TokenServer {
  /** `http://127.0.0.1:<port>/token` */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM file with the signing certificate (the registry's rootcertbundle). */
  readonly rootCertBundle: string;
  readonly requests: readonly TokenRequestRecord[];
  /** Signs a token directly (e.g. an expired one, or for another service), bypassing the HTTP API. */
  issue(claims: { sub: string; access: readonly TokenScope[]; expiresIn?: number; audience?: string }): string;
  /** Stops the server and removes the key and certificate. Idempotent. */
  stop(): Promise<void>;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/** Parses `repository:name:pull,push` (the name may contain `:` for a registry host with a port). */
export function parseScope(scope: string): TokenScope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const actions = scope
    .slice(last + 1)
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

function passwordMatches(expected: string | undefined, given: string): boolean {
  if (expected === undefined) return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

function readBody(req: http.IncomingMessage, limit = 64 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}

/** Starts the token server; register `t.after(() => ts.stop())` right after. */
export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const service = opts.service ?? 'esb-test-registry';
  const issuer = opts.issuer ?? 'esb-test-token-issuer';
  const lifetime = opts.expiresIn ?? 300;
  const authorize =
    opts.authorize ?? ((user: string | undefined, scope: TokenScope): readonly string[] => (user === undefined ? [] : scope.actions));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-token-'));
  let server: http.Server | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (server) {
      const s = server;
      await new Promise<void>((resolve) => {
        s.close(() => {
          resolve();
        });
        s.closeAllConnections();
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const keyPath = path.join(dir, 'signer.key');
    const certPath = path.join(dir, 'signer.crt');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyPath,
        '-out',
        certPath,
        '-days',
        '2',
        '-subj',
        '/CN=esb-test-token-signer',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const key: KeyObject = createPrivateKey(readFileSync(keyPath));
    const cert = new X509Certificate(readFileSync(certPath));
    const x5c = [cert.raw.toString('base64')];
    const requests: TokenRequestRecord[] = [];

    const issue = (claims: { sub: string; access: readonly TokenScope[]; expiresIn?: number; audience?: string }): string => {
      const now = Math.floor(Date.now() / 1000);
      const header = { typ: 'JWT', alg: 'ES256', x5c };
      const payload = {
        iss: issuer,
        sub: claims.sub,
        aud: claims.audience ?? service,
        exp: now + (claims.expiresIn ?? lifetime),
        nbf: now - 5,
        iat: now,
        jti: randomUUID(),
        access: claims.access.map((a) => ({ type: a.type, name: a.name, actions: [...a.actions] })),
      };
      const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
      const sig = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
      return `${signingInput}.${b64url(sig)}`;
    };

    const grant = (user: string | undefined, scopes: readonly string[]): TokenScope[] => {
      const out: TokenScope[] = [];
      for (const s of scopes) {
        const parsed = parseScope(s);
        if (!parsed) continue;
        const allowed = new Set(authorize(user, parsed));
        const actions = parsed.actions.filter((a) => allowed.has(a) || allowed.has('*'));
        if (actions.length > 0) out.push({ ...parsed, actions });
      }
      return out;
    };

    const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
      const data = JSON.stringify(body);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers });
      res.end(data);
    };

    const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const record = (r: Omit<TokenRequestRecord, 'method'>): void => {
        requests.push({ method: req.method ?? '', ...r });
      };
      if (url.pathname !== '/token') {
        send(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'use /token' }] });
        return;
      }
      const split = (values: readonly string[]): string[] => values.flatMap((v) => v.split(' ')).filter((s) => s !== '');
      const issuedAt = new Date().toISOString();

      if (req.method === 'GET') {
        const scopes = split(url.searchParams.getAll('scope'));
        const svc = url.searchParams.get('service') ?? undefined;
        const base = { grantType: undefined, clientId: url.searchParams.get('client_id') ?? undefined, service: svc, scopes };
        let user: string | undefined;
        const auth = req.headers.authorization;
        if (auth !== undefined) {
          const m = /^Basic\s+(\S+)$/i.exec(auth);
          const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
          const colon = decoded.indexOf(':');
          const name = colon >= 0 ? decoded.slice(0, colon) : decoded;
          const password = colon >= 0 ? decoded.slice(colon + 1) : '';
          if (!m || colon < 0 || !passwordMatches(opts.users[name], password)) {
            record({ ...base, user: undefined, triedUser: name || undefined, status: 401, granted: [] });
            send(
              res,
              401,
              { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] },
              { 'WWW-Authenticate': 'Basic realm="esb-test-token"' },
            );
            return;
          }
          user = name;
        }
        if (svc !== undefined && svc !== service) {
          record({ ...base, user, triedUser: user, status: 400, granted: [] });
          send(res, 400, { errors: [{ code: 'INVALID_REQUEST', message: `unknown service ${svc}` }] });
          return;
        }
        const granted = grant(user, scopes);
        const token = issue({ sub: user ?? '', access: granted });
        record({ ...base, user, triedUser: user, status: 200, granted });
        send(res, 200, { token, access_token: token, expires_in: lifetime, issued_at: issuedAt });
        return;
      }

      if (req.method === 'POST') {
        const form = new URLSearchParams(await readBody(req));
        const grantType = form.get('grant_type') ?? undefined;
        const scopes = split(form.getAll('scope'));
        const svc = form.get('service') ?? undefined;
        const clientId = form.get('client_id') ?? undefined;
        const username = form.get('username') ?? undefined;
        const base = { grantType, clientId, service: svc, scopes };
        if (grantType !== 'password') {
          // No refresh tokens are issued, so only the password grant makes sense here.
          record({ ...base, user: undefined, triedUser: username, status: 400, granted: [] });
          send(res, 400, { error: 'unsupported_grant_type', error_description: `grant_type ${grantType ?? '(missing)'} is not supported` });
          return;
        }
        if (!clientId || svc === undefined) {
          record({ ...base, user: undefined, triedUser: username, status: 400, granted: [] });
          send(res, 400, { error: 'invalid_request', error_description: 'client_id and service are required' });
          return;
        }
        if (svc !== service) {
          record({ ...base, user: undefined, triedUser: username, status: 400, granted: [] });
          send(res, 400, { error: 'invalid_request', error_description: `unknown service ${svc}` });
          return;
        }
        if (username === undefined || !passwordMatches(opts.users[username], form.get('password') ?? '')) {
          record({ ...base, user: undefined, triedUser: username, status: 401, granted: [] });
          send(res, 401, { error: 'invalid_grant', error_description: 'invalid username or password' });
          return;
        }
        const granted = grant(username, scopes);
        const token = issue({ sub: username, access: granted });
        record({ ...base, user: username, triedUser: username, status: 200, granted });
        send(res, 200, { access_token: token, scope: scopes.join(' '), expires_in: lifetime, issued_at: issuedAt });
        return;
      }

      send(res, 405, { errors: [{ code: 'UNSUPPORTED', message: 'GET or POST' }] }, { Allow: 'GET, POST' });
    };

    const srv = http.createServer((req, res) => {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, { errors: [{ code: 'UNKNOWN', message: err instanceof Error ? err.message : String(err) }] });
        else res.destroy();
      });
    });
    server = srv;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        resolve();
      });
    });
    const port = (srv.address() as AddressInfo).port;
    return { realm: `http://127.0.0.1:${port}/token`, service, issuer, rootCertBundle: certPath, requests, issue, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** bcrypt's base64 (its own alphabet, no padding). */
function bcryptBase64(data: Buffer): string {
  let out = '';
  for (let i = 0; i < data.length; i += 3) {
    const b0 = data[i]!;
    const b1 = data[i + 1];
    const b2 = data[i + 2];
    out += BCRYPT_ALPHABET.charAt(b0 >> 2);
    out += BCRYPT_ALPHABET.charAt(((b0 & 0x03) << 4) | ((b1 ?? 0) >> 4));
    if (b1 === undefined) break;
    out += BCRYPT_ALPHABET.charAt(((b1 & 0x0f) << 2) | ((b2 ?? 0) >> 6));
    if (b2 === undefined) break;
    out += BCRYPT_ALPHABET.charAt(b2 & 0x3f);
  }
  return out;
}

/** A bcrypt (`$2y$`, cost 5) hash of `password`, made by the system's crypt(3). */
export function bcryptHash(password: string, cost = 5): string {
  const salt = `$2y$${String(cost).padStart(2, '0')}$${bcryptBase64(randomBytes(16))}`;
  const hash = execFileSync('perl', ['-e', 'chomp(my $p = <STDIN>); my $h = crypt($p, $ARGV[0]); print defined $h ? $h : ""', salt], {
    input: `${password}\n`,
    encoding: 'utf8',
  });
  if (hash.length !== 60 || !hash.startsWith(salt)) {
    throw new Error(
      `crypt(3) did not produce a bcrypt hash (got ${JSON.stringify(hash.slice(0, 10))}); libxcrypt with bcrypt support is needed`,
    );
  }
  return hash;
}

/** Writes `<dir>/htpasswd` with bcrypt entries for `users` (name → password); returns its path. */
export function makeHtpasswd(dir: string, users: Readonly<Record<string, string>>): string {
  const file = path.join(dir, 'htpasswd');
  const lines = Object.entries(users).map(([name, password]) => {
    if (name.includes(':') || name.includes('\n') || password.includes('\n'))
      throw new Error(`unusable htpasswd user ${JSON.stringify(name)}`);
    return `${name}:${bcryptHash(password)}`;
  });
  writeFileSync(file, lines.join('\n') + '\n', { mode: 0o600 });
  return file;
}
