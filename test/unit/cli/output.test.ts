/** How ctl prints replies: JSON bytes handling, tables, byte and time formatting. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  containersTable,
  formatBytes,
  formatUnixSeconds,
  invokeTable,
  jsonReady,
  metricsTable,
  renderTable,
  toJson,
  workerTable,
} from '../../../src/cli/output.js';

describe('json output', () => {
  test('UTF-8 bytes become text, other bytes <field>_base64; 64-bit strings stay strings', () => {
    const v = jsonReady({
      status_code: 200,
      body: Buffer.from('{"a":1}'),
      nested: [{ raw: Buffer.from([0xff, 0xfe]) }],
      memory_max: '18446744073709551615',
    });
    assert.deepEqual(v, { status_code: 200, body: '{"a":1}', nested: [{ raw_base64: '//4=' }], memory_max: '18446744073709551615' });
    assert.equal(toJson({ success: true }), '{\n  "success": true\n}\n');
  });
});

describe('table output', () => {
  test('columns are aligned without trailing blanks', () => {
    assert.equal(
      renderTable(
        ['A', 'LONGER'],
        [
          ['xx', 'y'],
          ['z', ''],
        ],
      ),
      'A   LONGER\nxx  y\nz\n',
    );
  });

  test('containers: times as ISO, unset as -', () => {
    const text = containersTable([
      {
        container_id: 'esb-a',
        function_name: 'fn',
        status: 'RUNNING',
        created_at: '1700000000',
        last_used_at: '0',
        container_name: 'esb-a',
        owner_id: 'o',
      },
    ]);
    assert.match(text, /^CONTAINER ID\s+FUNCTION\s+STATUS\s+CREATED\s+LAST USED\s+OWNER\n/);
    assert.match(text, /esb-a\s+fn\s+RUNNING\s+2023-11-14T22:13:20Z\s+-\s+o\n$/);
    assert.equal(formatUnixSeconds('x'), '-');
  });

  test('worker, metrics and invoke', () => {
    assert.equal(
      workerTable({ id: 'w', name: 'w', ip_address: '10.0.0.2', port: 8080 }),
      'id:         w\nname:       w\nip_address: 10.0.0.2\nport:       8080\n',
    );
    const m = metricsTable({
      container_id: 'w',
      function_name: 'fn',
      container_name: 'w',
      state: 'RUNNING',
      memory_current: '1048576',
      memory_max: '18446744073709551615',
      oom_events: '0',
      cpu_usage_ns: '1500000000',
      exit_code: 0,
      restart_count: 0,
      exit_time: '0',
      collected_at: '1700000000',
    });
    assert.match(m, /memory_current: 1048576 \(1\.0 MiB\)/);
    assert.match(m, /memory_max:\s+unlimited/);
    assert.match(m, /cpu_usage_ns:\s+1500000000 ns \(1\.500 s\)/);
    assert.ok(!m.includes('exit_code'), 'exit code only for stopped workers');
    assert.equal(formatBytes('512'), '512 B');
    const inv = Buffer.from(
      invokeTable({ status_code: 502, headers: { 'x-b': '2', 'content-type': 'text/plain' }, body: Buffer.from('oops') }),
    ).toString();
    assert.equal(inv, 'status_code: 502\ncontent-type: text/plain\nx-b: 2\n\noops\n');
  });
});
