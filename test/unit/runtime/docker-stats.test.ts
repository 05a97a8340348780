/**
 * Docker stats/inspect → GetContainerMetrics and status mapping (src/runtime/docker/stats.ts).
 * The v1 fixtures were recorded from a real dockerd 20.10 on this project's cgroup v1 host; the
 * v2 stats fixture is shaped after the Engine API docs (see its `_comment`), as no cgroup v2
 * host was at hand.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  dockerTimeSeconds,
  exitCodeFromStatusText,
  metricsFromStats,
  statusFromDockerState,
  stoppedMetrics,
  workingSetBytes,
  type DockerInspect,
  type DockerStats,
} from '../../../src/runtime/docker/stats.js';
import type { DockerContainerSummary } from '../../../src/runtime/docker/containers.js';

const fixture = (name: string): unknown => JSON.parse(readFileSync(path.join(import.meta.dirname, '../../fixtures/docker', name), 'utf8'));
const oomKilled = fixture('inspect-v1-oomkilled.json') as DockerInspect;
const running: DockerInspect = {
  ...oomKilled,
  State: { ...oomKilled.State, Status: 'running', Running: true, OOMKilled: false, ExitCode: 0, FinishedAt: '0001-01-01T00:00:00Z' },
};

test('cgroup v1 stats (recorded): working set = usage − total_inactive_file, limit, CPU ns', () => {
  const s = fixture('stats-v1-running.json') as DockerStats;
  const m = metricsFromStats(s, running, 0, 1234);
  assert.equal(m.state, 'RUNNING');
  assert.equal(m.memoryCurrentBytes, 16400384n - 126976n);
  assert.equal(m.memoryMaxBytes, 134217728n);
  assert.equal(m.cpuUsageNs, 70609171n);
  assert.equal(m.oomEvents, 0n);
  assert.equal(m.exitCode, 0);
  assert.equal(m.collectedAt, 1234);
});

test('cgroup v2 stats (API-doc shaped): working set = usage − inactive_file; CPU from total_usage', () => {
  const s = fixture('stats-v2-running.json') as DockerStats;
  const m = metricsFromStats(s, running, 0, 1);
  assert.equal(m.memoryCurrentBytes, 20971520n - 3145728n);
  assert.equal(m.memoryMaxBytes, 134217728n);
  assert.equal(m.cpuUsageNs, 312456000n);
});

test('no memory limit → memory_max 0, not the host memory dockerd reports as limit', () => {
  const s = fixture('stats-v1-running.json') as DockerStats;
  const m = metricsFromStats(s, { ...running, HostConfig: { Memory: 0 } }, 0, 1);
  assert.equal(m.memoryMaxBytes, 0n);
});

test("OOM kills: the larger of the events counted and inspect's OOMKilled; a stopped worker reads STOPPED with its exit", () => {
  const m = stoppedMetrics(oomKilled, 0, 99);
  assert.equal(m.state, 'STOPPED');
  assert.equal(m.oomEvents, 1n);
  assert.equal(m.exitCode, 137);
  assert.equal(m.exitTime, Math.floor(Date.parse('2026-11-25T10:56:35.6953636Z') / 1000));
  assert.equal(m.memoryCurrentBytes, 0n);
  assert.equal(m.cpuUsageNs, 0n);
  assert.equal(stoppedMetrics(oomKilled, 3, 99).oomEvents, 3n);
  assert.equal(metricsFromStats(fixture('stats-v1-running.json') as DockerStats, running, 2, 1).oomEvents, 2n);
});

test('the stats of a stopped container (recorded) are all zero; the working set never goes below 0', () => {
  const s = fixture('stats-v1-stopped.json') as DockerStats;
  assert.equal(workingSetBytes(s.memory_stats), 0n);
  assert.equal(workingSetBytes({ usage: 10, stats: { total_inactive_file: 20 } }), 0n);
  assert.equal(workingSetBytes(undefined), 0n);
});

test('docker states map to the contract statuses', () => {
  assert.equal(statusFromDockerState('running'), 'RUNNING');
  assert.equal(statusFromDockerState('paused'), 'PAUSED');
  for (const s of ['created', 'exited', 'dead', 'removing']) assert.equal(statusFromDockerState(s), 'STOPPED', s);
  assert.equal(statusFromDockerState('restarting'), 'UNKNOWN');
});

test('docker times and exit codes: Go zero time → 0; the exit code from a List status text (recorded)', () => {
  assert.equal(dockerTimeSeconds('0001-01-01T00:00:00Z'), 0);
  assert.equal(dockerTimeSeconds('garbage'), 0);
  assert.equal(dockerTimeSeconds('2026-11-25T10:56:20.929095022Z'), Math.floor(Date.parse('2026-11-25T10:56:20.929Z') / 1000));
  const list = fixture('containers-list.json') as DockerContainerSummary[];
  const exited = list.find((c) => c.State === 'exited');
  assert.ok(exited);
  assert.equal(exitCodeFromStatusText(exited.Status), 137);
  assert.equal(exitCodeFromStatusText('Up 4 seconds (Paused)'), undefined);
});
