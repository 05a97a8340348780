import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientAllowlist, clientIdentity, describeIdentity, parseSubjectAltName } from '../../../src/api/client-identity.js';

test('parseSubjectAltName splits Node\'s text; a JSON-quoted value with ", " stays one entry', () => {
  assert.deepEqual(parseSubjectAltName('DNS:gw.example, URI:spiffe://esb/gw, IP Address:10.0.0.1'), [
    { type: 'DNS', value: 'gw.example' },
    { type: 'URI', value: 'spiffe://esb/gw' },
    { type: 'IP Address', value: '10.0.0.1' },
  ]);
  assert.deepEqual(parseSubjectAltName('DNS:"evil.example, DNS:gw.example"'), [{ type: 'DNS', value: 'evil.example, DNS:gw.example' }]);
  assert.deepEqual(parseSubjectAltName(''), []);
});

test('clientIdentity: SANs by type, a single CN; several CNs count as none', () => {
  const id = clientIdentity({ subjectaltname: 'DNS:a.example, URI:spiffe://x/y', subject: { CN: 'cn-name' } });
  assert.deepEqual(id, { dns: ['a.example'], uris: ['spiffe://x/y'], cn: 'cn-name' });
  assert.equal(clientIdentity({ subjectaltname: undefined as never, subject: { CN: ['a', 'b'] } }).cn, undefined);
  assert.deepEqual(clientIdentity(undefined), { dns: [], uris: [], cn: undefined });
  assert.equal(describeIdentity(id), 'DNS:a.example, URI:spiffe://x/y');
  assert.equal(describeIdentity({ dns: [], uris: [], cn: 'gw' }), 'CN=gw');
});

test('ClientAllowlist: DNS case-insensitive, URI exact, CN only when the certificate has no DNS/URI SAN', () => {
  const list = new ClientAllowlist(['gw.example', 'spiffe://esb/gw', 'legacy-gw']);
  assert.equal(list.open, false);
  assert.equal(list.allows({ dns: ['GW.Example'], uris: [], cn: undefined }), true);
  assert.equal(list.allows({ dns: [], uris: ['spiffe://esb/gw'], cn: undefined }), true);
  assert.equal(list.allows({ dns: [], uris: ['SPIFFE://esb/gw'], cn: undefined }), false);
  assert.equal(list.allows({ dns: [], uris: [], cn: 'legacy-gw' }), true);
  assert.equal(list.allows({ dns: ['other.example'], uris: [], cn: 'legacy-gw' }), false, 'SANs decide; the CN is not consulted');
  assert.equal(list.allows({ dns: [], uris: [], cn: undefined }), false);
  assert.equal(new ClientAllowlist([]).open, true);
  assert.equal(new ClientAllowlist([]).allows({ dns: [], uris: [], cn: undefined }), true);
});
