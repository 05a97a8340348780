import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentMetrics } from '../../../src/metrics.js';
import { createMetricsServer } from '../../../src/api/metrics-http.js';
import { silentLogger } from '../../../src/log.js';

test('/metrics serves the registry with its content type; other paths 404, other methods 405', async (t) => {
  const metrics = new AgentMetrics();
  metrics.rpcTotal.inc({ method: 'ListContainers', code: 'OK' });
  const server = createMetricsServer({ registry: metrics.registry, port: 0, host: '127.0.0.1', log: silentLogger() });
  t.after(() => server.close());
  const port = await server.listen();
  assert.equal(server.port, port);

  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), metrics.registry.contentType);
  const body = await res.text();
  assert.match(body, /^esb_agent_rpc_total\{method="ListContainers",code="OK"\} 1$/m);
  assert.match(body, /^process_cpu_user_seconds_total /m);
  assert.match(body, /^nodejs_heap_size_total_bytes /m);

  const query = await fetch(`http://127.0.0.1:${port}/metrics?x=1`);
  assert.equal(query.status, 200);
  await query.text();
  const missing = await fetch(`http://127.0.0.1:${port}/`);
  assert.equal(missing.status, 404);
  await missing.text();
  const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  await post.text();
});

test('close() ends keep-alive connections and is idempotent; a busy port fails naming AGENT_METRICS_PORT', async (t) => {
  const a = createMetricsServer({
    registry: new AgentMetrics({ defaultMetrics: false }).registry,
    port: 0,
    host: '127.0.0.1',
    log: silentLogger(),
  });
  t.after(() => a.close());
  const port = await a.listen();
  const b = createMetricsServer({
    registry: new AgentMetrics({ defaultMetrics: false }).registry,
    port,
    host: '127.0.0.1',
    log: silentLogger(),
  });
  await assert.rejects(b.listen(), /AGENT_METRICS_PORT.*EADDRINUSE/);
  await b.close();
  await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  await a.close();
  await a.close();
});
