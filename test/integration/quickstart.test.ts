/**
 * The README's first promise: `bash scripts/quickstart.sh` really runs the agent's main job end
 * to end through `esb-agent ctl` (ensure → invoke → pause → invoke refused → resume → invoke →
 * metrics → list → destroy) and leaves nothing behind, also when interrupted (SIGINT).
 * Runs the real script as a child process, as root (setup-host.sh is fast once installed).
 * The README's own shape (its two commands, its length) is checked by test/unit/docs.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { PROJECT_ROOT } from '../../src/paths.js';
import { scaled } from '../harness/process.js';

const TOTAL_STEPS = 12;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
});

/**
 * Runs `bash scripts/quickstart.sh`. `onStdout` sees the output so far and may interrupt it.
 * After `timeoutMs` the child gets SIGINT (it cleans up), and SIGKILL 60 s later.
 */
function runQuickstart(timeoutMs: number, onStdout?: (stdout: string, child: ChildProcess) => void): Promise<Run> {
  const env = { ...process.env };
  // The child is a plain script, not a test file of this run.
  delete env['NODE_TEST_CONTEXT'];
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['scripts/quickstart.sh'], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(stdout, child);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const soft = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    const hard = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 60_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(soft);
      clearTimeout(hard);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The step headers: `==> [n/N] <title> ... <outcome> (<time>)`. */
function headers(stdout: string): string[] {
  return stdout.split('\n').filter((l) => l.startsWith('==> '));
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** What the first step printed about the stack, to look for leftovers by name. */
function stackNames(stdout: string): { namespace: string; bridge: string; dirs: string[]; registry: string } {
  const field = (name: string): string => {
    const m = new RegExp(`"${name}": "([^"]+)"`).exec(stdout);
    assert.ok(m, `output shows ${name}`);
    return m[1]!;
  };
  return {
    namespace: field('containerd_namespace'),
    bridge: field('bridge'),
    // /tmp/esb-ctd-xxx (containerd) and /tmp/esb-stack-xxx (CNI config, IPAM, agent state).
    dirs: [path.dirname(field('containerd_socket')), path.dirname(field('agent_state_dir'))],
    registry: field('registry'),
  };
}

/** Asserts that nothing the quickstart created is still there. */
async function assertNothingLeft(stdout: string): Promise<void> {
  const { namespace, bridge, dirs, registry } = stackNames(stdout);
  const netns = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`${namespace}-`)) : [];
  assert.deepEqual(netns, [], 'no worker netns left');
  assert.ok(!existsSync(`/sys/class/net/${bridge}`), `bridge ${bridge} removed`);
  for (const d of dirs) assert.ok(!existsSync(d), `${d} removed`);
  const procs: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (dirs.some((d) => cmd.includes(d))) procs.push(`${pid}: ${cmd}`);
    } catch {
      // exited meanwhile
    }
  }
  assert.deepEqual(procs, [], 'no containerd, shim or registry process left');
  await assert.rejects(fetch(`${registry}/v2/`, { signal: AbortSignal.timeout(2000) }), 'the registry is stopped');
}

describe('bash scripts/quickstart.sh', () => {
  test(
    'runs ensure → invoke → pause → resume → metrics → list → destroy and prints each step',
    { timeout: scaled(12 * 60_000) },
    async () => {
      const run = await runQuickstart(scaled(10 * 60_000));
      const output = `--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
      assert.equal(run.code, 0, `quickstart exited ${run.code ?? run.signal}\n${output}`);

      const expected: [title: string, outcome: string][] = [
        ['Start: containerd, registry, sample image pushed, CNI network, agent', 'OK'],
        ['EnsureContainer: ', 'OK'],
        ['InvokeWorker (echo payload', 'OK'],
        ['PauseContainer', 'OK'],
        ['InvokeWorker while paused', 'FAILED_PRECONDITION (as expected, exit 19)'],
        ['ResumeContainer', 'OK'],
        ['InvokeWorker (after resume)', 'OK'],
        ['GetContainerMetrics', 'OK'],
        ['ListContainers', 'OK'],
        ['DestroyContainer', 'OK'],
        ['Leftovers after DestroyContainer', 'none left'],
        ['Stop: ', 'OK'],
      ];
      const lines = headers(run.stdout);
      assert.equal(lines.length, TOTAL_STEPS, `one header per step\n${output}`);
      expected.forEach(([title, outcome], i) => {
        const re = new RegExp(
          `^==> \\[${i + 1}/${TOTAL_STEPS}\\] ${escape(title)}.* \\.\\.\\. ${escape(outcome)} \\(\\d+(\\.\\d+)? m?s\\)$`,
        );
        assert.match(lines[i]!, re);
      });

      assert.equal(run.stdout.match(/"status_code": 200,/g)?.length, 2, 'two successful invocations');
      assert.ok(
        run.stdout.includes('"body": "{\\"action\\":\\"echo\\",\\"message\\":\\"hello from the quickstart\\"}"'),
        'the echoed payload, shown as text',
      );
      assert.match(
        run.stdout,
        /"code": "FAILED_PRECONDITION",\n {4}"code_number": 9,\n {4}"details": "container \S+ is paused; resume it before invoking"/,
      );
      // Every call went through the operator CLI, as a separate process.
      const commands = run.stdout.split('\n').filter((l) => l.startsWith('$ esb-agent ctl '));
      assert.deepEqual(
        commands.map((l) => /-o json (\w+)/.exec(l)?.[1]),
        ['ensure', 'invoke', 'pause', 'invoke', 'resume', 'invoke', 'metrics', 'list', 'destroy'],
      );
      assert.ok(run.stdout.includes('"memory_max": "134217728"'), 'memory_max = 128 MiB');
      assert.match(run.stdout, /"status": "RUNNING"/);
      assert.match(run.stdout, /esb_agent_rpc_total\{method="InvokeWorker",code="FAILED_PRECONDITION"\} 1/);
      assert.match(run.stdout.trimEnd().split('\n').at(-1) ?? '', /^quickstart OK \(/);
      await assertNothingLeft(run.stdout);
    },
  );

  test('SIGINT with a worker running: stops everything and exits 130', { timeout: scaled(12 * 60_000) }, async () => {
    let sent = false;
    const run = await runQuickstart(scaled(10 * 60_000), (stdout, child) => {
      // Step 2's header is printed once the worker runs.
      if (!sent && /^==> \[2\//m.test(stdout)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const output = `--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}`;
    assert.ok(sent, `the quickstart reached EnsureContainer\n${output}`);
    assert.equal(run.code, 130, output);
    assert.match(run.stderr, /SIGINT received: stopping everything/);
    assert.match(headers(run.stdout).at(-1) ?? '', /^==> \[\d+\/\d+\] Stop: .* \.\.\. OK \(/, output);
    assert.ok(!run.stdout.includes('quickstart OK'), output);
    await assertNothingLeft(run.stdout);
  });
});
