/**
 * RegistryClient against fake registries on 127.0.0.1 (node:http): resolve (HEAD, GET fallback),
 * error mapping, Bearer/Basic auth without loops, size caps, redirects, Range, abort.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { AgentError } from '../../../src/errors.js';
import { sha256Digest } from '../../../src/registry/digest.js';
import { MediaType } from '../../../src/registry/oci.js';
import { parseReference } from '../../../src/registry/reference.js';
import { RegistryClient } from '../../../src/registry/registry-client.js';
import { RegistryHosts, parseHostList } from '../../../src/registry/registry-hosts.js';

/** Every host allowed and plain HTTP, unless a test narrows it. */
const ANY = (): RegistryHosts => new RegistryHosts({ allowed: parseHostList('*'), insecure: parseHostList('*') });
const hostsOf = (allowed: string, insecure: string): RegistryHosts =>
  new RegistryHosts({ allowed: parseHostList(allowed), insecure: parseHostList(insecure) });

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

interface Fake {
  readonly host: string;
  readonly requests: { method: string; url: string; auth: string | undefined; range: string | undefined }[];
}

async function fakeServer(t: TestContext, handler: Handler): Promise<Fake> {
  const requests: Fake['requests'] = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, range: req.headers.range });
      handler(req, res, body);
    });
  });
  t.after(
    () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => {
          resolve();
        });
      }),
  );
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${(srv.address() as AddressInfo).port}`, requests };
}

function client(t: TestContext, auths: Record<string, unknown> = {}, hosts: RegistryHosts = ANY()): RegistryClient {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-regtest-'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths }));
  const c = new RegistryClient({ hosts, dockerConfigDir: dir });
  t.after(async () => {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return c;
}

const MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: 'sha256:' + 'c'.repeat(64), size: 2 },
    layers: [],
  }),
);
const MDIGEST = sha256Digest(MANIFEST);
const signal = (): AbortSignal => new AbortController().signal;
const isCode =
  (code: string, re?: RegExp) =>
  (e: unknown): boolean =>
    e instanceof AgentError && e.code === code && (re === undefined || re.test(e.message));

function sendManifest(req: http.IncomingMessage, res: http.ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(200, {
    'content-type': MediaType.ociManifest,
    'docker-content-digest': MDIGEST,
    'content-length': String(MANIFEST.length),
    ...headers,
  });
  res.end(req.method === 'HEAD' ? undefined : MANIFEST);
}

test('resolve uses HEAD only when it carries digest, length and a manifest type', async (t) => {
  const fake = await fakeServer(t, (req, res) => {
    sendManifest(req, res);
  });
  const r = await client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), signal());
  assert.deepEqual(r.descriptor, { mediaType: MediaType.ociManifest, digest: MDIGEST, size: MANIFEST.length });
  assert.equal(r.body, undefined);
  assert.deepEqual(
    fake.requests.map((q) => `${q.method} ${q.url}`),
    ['HEAD /v2/esb/fn/manifests/v1'],
  );
});

test('resolve falls back to GET when HEAD is refused or incomplete, and hashes the body', async (t) => {
  for (const headAnswer of ['405', 'no-digest', 'generic-type'] as const) {
    const fake = await fakeServer(t, (req, res) => {
      if (req.method === 'HEAD' && headAnswer === '405') {
        res.writeHead(405).end();
        return;
      }
      if (req.method === 'HEAD') {
        res
          .writeHead(200, {
            'content-type': headAnswer === 'generic-type' ? 'application/octet-stream' : MediaType.ociManifest,
            ...(headAnswer === 'generic-type' ? { 'docker-content-digest': MDIGEST } : {}),
          })
          .end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(MANIFEST);
    });
    const r = await client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), signal());
    assert.equal(r.descriptor.digest, MDIGEST, headAnswer);
    assert.equal(r.descriptor.mediaType, MediaType.ociManifest, 'sniffed from the body');
    assert.deepEqual(r.body, MANIFEST);
    assert.deepEqual(
      fake.requests.map((q) => q.method),
      ['HEAD', 'GET'],
    );
  }
});

test('resolve: 404 → NOT_FOUND "image <ref> not found in <registry>"', async (t) => {
  const fake = await fakeServer(t, (_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
  });
  await assert.rejects(client(t).resolve(parseReference(`${fake.host}/esb/fn:nope`), signal()), (e: unknown) => {
    return (
      e instanceof AgentError &&
      e.code === 'NOT_FOUND' &&
      e.message === `image ${fake.host}/esb/fn:nope not found in ${fake.host} (HTTP 404)`
    );
  });
});

test('resolve: 5xx → UNAVAILABLE, 403 → PERMISSION_DENIED, 429 → UNAVAILABLE', async (t) => {
  for (const [status, code] of [
    [503, 'UNAVAILABLE'],
    [403, 'PERMISSION_DENIED'],
    [429, 'UNAVAILABLE'],
  ] as const) {
    const fake = await fakeServer(t, (_req, res) => {
      res.writeHead(status).end();
    });
    await assert.rejects(client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), signal()), isCode(code, new RegExp(`HTTP ${status}`)));
  }
});

test('schema 1 manifests are refused with a clear message', async (t) => {
  const fake = await fakeServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MediaType.dockerSchema1Signed, 'docker-content-digest': MDIGEST, 'content-length': '10' }).end();
  });
  await assert.rejects(client(t).resolve(parseReference(`${fake.host}/old/img:v1`), signal()), isCode('FAILED_PRECONDITION', /schema 1/));
});

test('manifests over ~4 MiB are refused', async (t) => {
  const fake = await fakeServer(t, (req, res) => {
    sendManifest(req, res, { 'content-length': String(5 * 1024 * 1024) });
  });
  await assert.rejects(client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), signal()), isCode('FAILED_PRECONDITION', /limit/));
});

test('fetchManifest verifies the digest', async (t) => {
  const fake = await fakeServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MediaType.ociManifest }).end(Buffer.from(MANIFEST.toString().replace('"layers"', '"layers" ')));
  });
  const desc = { mediaType: MediaType.ociManifest, digest: MDIGEST, size: MANIFEST.length + 1 };
  await assert.rejects(
    client(t).fetchManifest(parseReference(`${fake.host}/esb/fn:v1`), desc, signal()),
    isCode('FAILED_PRECONDITION', /digest mismatch/),
  );
});

test('connection refused → UNAVAILABLE naming the registry and the cause', async (t) => {
  // A port that was just freed: nothing listens there.
  const dead = http.createServer();
  await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
  const deadHost = `127.0.0.1:${(dead.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) =>
    dead.close(() => {
      resolve();
    }),
  );
  await assert.rejects(
    client(t).resolve(parseReference(`${deadHost}/esb/fn:v1`), signal()),
    isCode('UNAVAILABLE', new RegExp(`${deadHost}.*ECONNREFUSED`)),
  );
});

test('abort while the registry stalls → CANCELLED at once', async (t) => {
  const fake = await fakeServer(t, () => {
    // never answers
  });
  const ac = new AbortController();
  const p = client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), ac.signal);
  setTimeout(() => {
    ac.abort();
  }, 50);
  const t0 = Date.now();
  await assert.rejects(p, isCode('CANCELLED'));
  assert.ok(Date.now() - t0 < 2000);
});

test('Bearer: token fetched (POST password grant) with config.json credentials, then reused', async (t) => {
  let tokenCalls = 0;
  const fake: Fake = await fakeServer(t, (req, res, body) => {
    if (req.url?.startsWith('/token')) {
      tokenCalls++;
      const form = new URLSearchParams(body);
      if (req.method === 'POST' && form.get('username') === 'alice' && form.get('password') === 'pw') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 'GOOD', expires_in: 300 }));
      } else res.writeHead(401).end();
      return;
    }
    if (req.headers.authorization !== 'Bearer GOOD') {
      res
        .writeHead(401, { 'www-authenticate': `Bearer realm="http://${fake.host}/token",service="fake",scope="repository:esb/fn:pull"` })
        .end();
      return;
    }
    sendManifest(req, res);
  });
  const c = client(t, { [fake.host]: { auth: Buffer.from('alice:pw').toString('base64') } });
  const ref = parseReference(`${fake.host}/esb/fn:v1`);
  await c.resolve(ref, signal());
  await c.resolve(ref, signal());
  assert.equal(tokenCalls, 1, 'token cached for the scope');
  assert.deepEqual(
    fake.requests.map((q) => `${q.method} ${q.url.split('?')[0]} ${q.auth ?? '-'}`),
    [
      'HEAD /v2/esb/fn/manifests/v1 -',
      'POST /token -',
      'HEAD /v2/esb/fn/manifests/v1 Bearer GOOD',
      'HEAD /v2/esb/fn/manifests/v1 Bearer GOOD',
    ],
  );
});

test('Bearer: a 401 after a fresh token → PERMISSION_DENIED, no loop', async (t) => {
  const fake: Fake = await fakeServer(t, (req, res) => {
    if (req.url?.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'ANON' }));
      return;
    }
    res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${fake.host}/token",service="fake",error="insufficient_scope"` }).end();
  });
  await assert.rejects(
    client(t).resolve(parseReference(`${fake.host}/esb/fn:v1`), signal()),
    isCode('PERMISSION_DENIED', /insufficient_scope/),
  );
  assert.deepEqual(
    fake.requests.map((q) => q.method),
    ['HEAD', 'GET', 'HEAD'],
  );
});

test('Basic: no credentials → PERMISSION_DENIED; with credentials → Basic header', async (t) => {
  const good = 'Basic ' + Buffer.from('u:p').toString('base64');
  const fake = await fakeServer(t, (req, res) => {
    if (req.headers.authorization !== good) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
      return;
    }
    sendManifest(req, res);
  });
  const ref = parseReference(`${fake.host}/esb/fn:v1`);
  await assert.rejects(client(t).resolve(ref, signal()), isCode('PERMISSION_DENIED', /no credentials/));
  await client(t, { [`http://${fake.host}`]: { username: 'u', password: 'p' } }).resolve(ref, signal());
  await assert.rejects(
    client(t, { [fake.host]: { username: 'u', password: 'wrong' } }).resolve(ref, signal()),
    isCode('PERMISSION_DENIED'),
  );
});

test('openBlob: Range honoured (206) resumes; ignored (200) restarts at 0; redirects drop credentials off-origin', async (t) => {
  const blob = Buffer.from('0123456789');
  const storage = await fakeServer(t, (req, res) => {
    res.writeHead(200).end(blob);
  });
  const fake = await fakeServer(t, (req, res) => {
    if (req.headers.authorization === undefined) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
      return;
    }
    if (req.url?.includes('redirect')) {
      res.writeHead(307, { location: `http://${storage.host}/bucket/blob` }).end();
      return;
    }
    const m = /bytes=(\d+)-/.exec(req.headers.range ?? '');
    if (m) {
      const from = Number(m[1]);
      res.writeHead(206, { 'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}` }).end(blob.subarray(from));
    } else res.writeHead(200).end(blob);
  });
  const c = client(t, { [fake.host]: { username: 'u', password: 'p' } });
  const read = async (s: AsyncIterable<Buffer>): Promise<string> => {
    let out = '';
    for await (const chunk of s) out += chunk.toString();
    return out;
  };
  const ref = parseReference(`${fake.host}/esb/fn:v1`);
  const desc = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(blob), size: blob.length };
  const resumed = await c.openBlob(ref, desc, 4, signal());
  assert.equal(resumed.offset, 4);
  assert.equal(await read(resumed.body), '456789');
  const full = await c.openBlob(ref, desc, 0, signal());
  assert.equal(full.offset, 0);
  assert.equal(await read(full.body), '0123456789');
  const redirected = await c.openBlob(parseReference(`${fake.host}/esb/redirect:v1`), desc, 0, signal());
  assert.equal(await read(redirected.body), '0123456789');
  assert.equal(storage.requests[0]?.auth, undefined, 'no Authorization sent to another origin');
  assert.equal(storage.requests[0]?.url, '/bucket/blob');
});

test('baseUrl: plain HTTP only for hosts in the insecure list (loopback included); docker.io maps to registry-1', (t) => {
  const c = client(t, {}, hostsOf('*', '127.0.0.1:5000,*.lan'));
  assert.equal(c.baseUrl('127.0.0.1:5000'), 'http://127.0.0.1:5000');
  assert.equal(c.baseUrl('127.0.0.1:5001'), 'https://127.0.0.1:5001');
  assert.equal(c.baseUrl('localhost:5000'), 'https://localhost:5000');
  assert.equal(c.baseUrl('[::1]:5000'), 'https://[::1]:5000');
  assert.equal(c.baseUrl('reg.lan'), 'http://reg.lan');
  assert.equal(c.baseUrl('registry:5010'), 'https://registry:5010');
  assert.equal(c.baseUrl('docker.io'), 'https://registry-1.docker.io');
});

test('an unreadable CA file fails construction with FAILED_PRECONDITION', () => {
  assert.throws(
    () => new RegistryClient({ hosts: ANY(), caFile: '/nonexistent/ca.pem', dockerConfigDir: '/x' }),
    isCode('FAILED_PRECONDITION', /CONTAINER_REGISTRY_CA_FILE/),
  );
});

test('a registry outside the allowlist → INVALID_ARGUMENT naming it and the variable; nothing is sent', async (t) => {
  const fake = await fakeServer(t, (req, res) => {
    sendManifest(req, res);
  });
  const c = client(t, {}, hostsOf('registry:5010', '*'));
  await assert.rejects(
    c.resolve(parseReference(`${fake.host}/esb/fn:v1`), signal()),
    isCode('INVALID_ARGUMENT', new RegExp(`${fake.host}.*AGENT_ALLOWED_REGISTRIES`)),
  );
  assert.equal(fake.requests.length, 0);
});

test('a redirect to a loopback host outside the allowlist is refused before any connection; an allowed one is followed', async (t) => {
  const blob = Buffer.from('0123456789');
  const storage = await fakeServer(t, (req, res) => {
    res.writeHead(200).end(blob);
  });
  const fake = await fakeServer(t, (req, res) => {
    res.writeHead(307, { location: `http://${storage.host}/bucket/blob` }).end();
  });
  const desc = { mediaType: MediaType.ociLayerGzip, digest: sha256Digest(blob), size: blob.length };
  const ref = parseReference(`${fake.host}/esb/fn:v1`);
  const narrow = client(t, {}, hostsOf(fake.host, '*'));
  await assert.rejects(
    narrow.openBlob(ref, desc, 0, signal()),
    isCode('FAILED_PRECONDITION', /redirect.*loopback, link-local or host-local/),
  );
  assert.equal(storage.requests.length, 0);
  const wide = client(t, {}, hostsOf(`${fake.host},${storage.host}`, '*'));
  const s = await wide.openBlob(ref, desc, 0, signal());
  let got = '';
  for await (const chunk of s.body) got += chunk.toString();
  assert.equal(got, '0123456789');
  assert.equal(storage.requests.length, 1);
});

test('credentials never go to a plain-http realm on another port; an anonymous realm on an unlisted loopback host is refused', async (t) => {
  const realm = await fakeServer(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'T' }));
  });
  const fake = await fakeServer(t, (req, res) => {
    res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="fake"` }).end();
  });
  const ref = parseReference(`${fake.host}/esb/fn:v1`);
  const withCreds = client(t, { [fake.host]: { username: 'alice', password: 'pw' } }, hostsOf(`${fake.host},${realm.host}`, fake.host));
  await assert.rejects(
    withCreds.resolve(ref, signal()),
    (e: unknown) => isCode('PERMISSION_DENIED', /plain-http realm/)(e) && !(e as Error).message.includes('alice'),
  );
  assert.equal(realm.requests.length, 0, 'the realm saw nothing');
  const anonymous = client(t, {}, hostsOf(fake.host, fake.host));
  await assert.rejects(anonymous.resolve(ref, signal()), isCode('FAILED_PRECONDITION', /token realm/));
  assert.equal(realm.requests.length, 0);
});

test('credentials go to a plain-http realm on the registry host when that realm host is insecure', async (t) => {
  const realm = await fakeServer(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'T' }));
  });
  const fake = await fakeServer(t, (req, res) => {
    if (req.headers.authorization !== 'Bearer T') {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="fake"` }).end();
      return;
    }
    sendManifest(req, res);
  });
  const c = client(
    t,
    { [fake.host]: { username: 'alice', password: 'pw' } },
    hostsOf(`${fake.host},${realm.host}`, `${fake.host},${realm.host}`),
  );
  await c.resolve(parseReference(`${fake.host}/esb/fn:v1`), signal());
  assert.equal(realm.requests[0]?.method, 'POST');
});

test('registry error bodies never reach the message: status and known spec codes only', async (t) => {
  const fake = await fakeServer(t, (req, res) => {
    if (req.url?.includes('json')) {
      res.writeHead(403, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          errors: [
            { code: 'DENIED', message: 'SECRET-1 token=abc123' },
            { code: 'EVIL SECRET-2', message: 'x' },
          ],
        }),
      );
    } else res.writeHead(500).end('INTERNAL-ADMIN-PAGE token=abc123');
  });
  const c = client(t);
  const check =
    (code: string, re: RegExp) =>
    (e: unknown): boolean =>
      isCode(code, re)(e) && !/abc123|SECRET|ADMIN/.test((e as Error).message);
  await assert.rejects(
    c.fetchManifest(parseReference(`${fake.host}/esb/fn:v1`), { mediaType: MediaType.ociManifest, digest: MDIGEST, size: 1 }, signal()),
    check('UNAVAILABLE', /HTTP 500/),
  );
  await assert.rejects(
    c.fetchManifest(parseReference(`${fake.host}/esb/json:v1`), { mediaType: MediaType.ociManifest, digest: MDIGEST, size: 1 }, signal()),
    check('PERMISSION_DENIED', /HTTP 403 DENIED\)/),
  );
});

test('a registry not in the insecure list is spoken to over TLS only: a plain listener sees a ClientHello, never a request', async (t) => {
  const seen: Buffer[] = [];
  const srv = net.createServer((sock) => {
    sock.once('data', (d: Buffer) => {
      seen.push(d);
      sock.destroy();
    });
  });
  t.after(
    () =>
      new Promise<void>((resolve) =>
        srv.close(() => {
          resolve();
        }),
      ),
  );
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const c = client(t, {}, hostsOf(host, ''));
  await assert.rejects(c.resolve(parseReference(`${host}/esb/fn:v1`), signal()), isCode('UNAVAILABLE'));
  assert.ok(seen.length >= 1);
  for (const d of seen) {
    assert.equal(d[0], 0x16, 'a TLS handshake record');
    assert.ok(!d.toString('latin1').includes('HTTP/1.1'), 'no plain HTTP request');
  }
});
