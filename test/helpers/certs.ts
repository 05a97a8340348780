/**
 * Test PKI made with the `openssl` CLI in a temp dir: a CA, a server certificate for
 * localhost/127.0.0.1 (serverAuth), client certificates (clientAuth) from that CA (one known
 * by its CN only, one by a URI SAN, one by another DNS SAN with the first one's CN), and a
 * second, "rogue" CA with its own client certificate. EC P-256 keys: fast to make.
 * `remove()` deletes the dir; register it with `t.after` before anything else can fail.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CertPair {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface TestCerts {
  readonly dir: string;
  readonly caPath: string;
  readonly ca: Buffer;
  readonly server: CertPair;
  /** CN esb-gateway, no SAN. */
  readonly client: CertPair;
  /** SAN URI:spiffe://esb.test/gateway, CN esb-gateway-uri. */
  readonly uriClient: CertPair;
  /** SAN DNS:other.esb.test, CN esb-gateway (the CN of `client`, which SANs override). */
  readonly otherClient: CertPair;
  readonly rogueCaPath: string;
  readonly rogueCa: Buffer;
  /** Signed by the rogue CA; it must be refused. */
  readonly rogueClient: CertPair;
  /** Deletes every file. Idempotent. */
  remove(): void;
}

function openssl(dir: string, args: readonly string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string, cn: string): void {
  openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

function makeLeaf(dir: string, name: string, ca: string, cn: string, extensions: string): CertPair {
  writeFileSync(path.join(dir, `${name}.ext`), extensions);
  openssl(dir, [
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${cn}`,
  ]);
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  ]);
  const certPath = path.join(dir, `${name}.crt`);
  const keyPath = path.join(dir, `${name}.key`);
  return { certPath, keyPath, cert: readFileSync(certPath), key: readFileSync(keyPath) };
}

/** Creates the PKI. Throws (after removing the dir) when openssl fails. */
export function createTestCerts(): TestCerts {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-certs-'));
  const remove = (): void => {
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    makeCa(dir, 'ca', 'esb-test-ca');
    makeCa(dir, 'rogue-ca', 'esb-rogue-ca');
    const server = makeLeaf(
      dir,
      'server',
      'ca',
      'localhost',
      [
        'basicConstraints=CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '',
      ].join('\n'),
    );
    const clientExt = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth', ''].join('\n');
    const client = makeLeaf(dir, 'client', 'ca', 'esb-gateway', clientExt);
    const uriClient = makeLeaf(dir, 'uri-client', 'ca', 'esb-gateway-uri', `${clientExt}subjectAltName=URI:spiffe://esb.test/gateway\n`);
    const otherClient = makeLeaf(dir, 'other-client', 'ca', 'esb-gateway', `${clientExt}subjectAltName=DNS:other.esb.test\n`);
    const rogueClient = makeLeaf(dir, 'rogue-client', 'rogue-ca', 'esb-gateway', clientExt);
    return {
      dir,
      caPath: path.join(dir, 'ca.crt'),
      ca: readFileSync(path.join(dir, 'ca.crt')),
      server,
      client,
      uriClient,
      otherClient,
      rogueCaPath: path.join(dir, 'rogue-ca.crt'),
      rogueCa: readFileSync(path.join(dir, 'rogue-ca.crt')),
      rogueClient,
      remove,
    };
  } catch (err) {
    remove();
    throw err;
  }
}
