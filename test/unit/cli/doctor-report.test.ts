/** doctor's pure parts: the report format, TLS expiry checks, and the import archive helpers. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatReport } from '../../../src/cli/doctor.js';
import { checkTls } from '../../../src/cli/doctor-checks.js';
import { loadConfig } from '../../../src/config/config.js';
import { archivePath, sniffCompression } from '../../../src/runtime/containerd/image/import-archive.js';

describe('doctor report', () => {
  test('one line per check, the fix indented under it, and a summary', () => {
    const text = formatReport([
      { name: 'config', status: 'OK', message: 'fine' },
      { name: 'cni', status: 'FAIL', message: 'bridge missing', fix: 'install it' },
      { name: 'tls', status: 'WARN', message: 'plaintext', fix: 'turn TLS on' },
    ]);
    assert.equal(
      text,
      'OK    config  fine\nFAIL  cni     bridge missing\n              fix: install it\nWARN  tls     plaintext\n              fix: turn TLS on\n\n1 failed, 1 warning(s), 1 ok\n',
    );
  });

  test('TLS disabled is a warning; unreadable files fail naming the variable', () => {
    assert.equal(checkTls(loadConfig({ AGENT_GRPC_TLS_DISABLED: '1' })).status, 'WARN');
    const r = checkTls(loadConfig({ AGENT_GRPC_CERT_PATH: '/nonexistent/server.crt' }));
    assert.equal(r.status, 'FAIL');
    assert.match(r.message, /AGENT_GRPC_CERT_PATH: cannot read \/nonexistent\/server\.crt/);
  });
});

describe('import archive helpers', () => {
  test('compression from magic bytes', () => {
    assert.equal(sniffCompression(Buffer.from([0x1f, 0x8b, 8])), 'gzip');
    assert.equal(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd');
    assert.equal(sniffCompression(Buffer.from('bin/')), 'none');
    assert.equal(sniffCompression(undefined), 'none');
  });
  test('archive paths are normalised', () => {
    assert.equal(archivePath('./blobs/sha256/ab'), 'blobs/sha256/ab');
    assert.equal(archivePath('abc//layer.tar'), 'abc/layer.tar');
    assert.equal(archivePath('dir/'), 'dir');
  });
});
