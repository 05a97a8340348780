/**
 * The packaging files stay in step with the code: env.example names every configuration
 * variable (and only real ones), the systemd unit has the settings the agent relies on, and
 * the environment-file parser reads what operators write.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseEnvFile } from '../../../src/cli/env-file.js';
import { CONFIG_VARIABLES, loadConfig } from '../../../src/config/config.js';
import { DESTROY_ALL_TIMEOUT_MS } from '../../../src/main.js';
import { PROJECT_ROOT } from '../../../src/paths.js';

const ENV_EXAMPLE = readFileSync(path.join(PROJECT_ROOT, 'packaging', 'env.example'), 'utf8');
const UNIT = readFileSync(path.join(PROJECT_ROOT, 'packaging', 'systemd', 'esb-agent.service'), 'utf8');

describe('packaging/env.example', () => {
  test('lists every configuration variable once, and only real ones', () => {
    const names = [...ENV_EXAMPLE.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
    const known = new Set<string>(CONFIG_VARIABLES);
    assert.deepEqual(
      CONFIG_VARIABLES.filter((v) => !names.includes(v)),
      [],
      'variables missing from env.example',
    );
    assert.deepEqual(
      names.filter((v) => !known.has(v)),
      [],
      'env.example names that are not configuration variables',
    );
    assert.equal(new Set(names).size, names.length, 'each variable once');
  });

  test('as shipped (uncommented lines only) it is a valid configuration', () => {
    const env = parseEnvFile(ENV_EXAMPLE, 'env.example');
    assert.deepEqual(env, { CNI_BIN_DIR: '/usr/lib/cni' });
    assert.deepEqual(loadConfig(env).cni.binDirs, ['/usr/lib/cni']);
  });
});

describe('packaging/systemd/esb-agent.service', () => {
  const directive = (name: string): string | undefined => new RegExp(`^${name}=(.*)$`, 'm').exec(UNIT)?.[1];

  test('starts after containerd, restarts on failure, keeps workers on restart', () => {
    assert.match(directive('After') ?? '', /\bcontainerd\.service\b/);
    assert.match(directive('Wants') ?? '', /\bcontainerd\.service\b/);
    assert.equal(directive('Restart'), 'on-failure');
    assert.equal(directive('KillMode'), 'process');
    assert.equal(directive('EnvironmentFile'), '/etc/esb-agent/env');
    assert.equal(directive('LimitNOFILE'), '1048576');
    assert.equal(directive('RestartPreventExitStatus'), '2', 'invalid configuration does not loop');
    assert.match(directive('ExecStart') ?? '', /^\/usr\/local\/bin\/esb-agent serve$/);
  });

  test('TimeoutStopSec covers the default shutdown grace plus destroying every worker', () => {
    const stopSec = Number(/^(\d+)s?$/.exec(directive('TimeoutStopSec') ?? '')?.[1]);
    const graceMs = loadConfig({}).shutdownGraceMs;
    assert.ok(stopSec * 1000 >= graceMs + DESTROY_ALL_TIMEOUT_MS + 10_000, `TimeoutStopSec=${stopSec}s`);
  });
});

describe('parseEnvFile', () => {
  test('comments, export, quotes, = in values', () => {
    const env = parseEnvFile('# c\n; c\n\nA=1\nexport B="two words"\nC=\'x=y\'\n D = spaced \nE="q\\"uote"\n', 'f');
    assert.deepEqual(env, { A: '1', B: 'two words', C: 'x=y', D: 'spaced', E: 'q"uote' });
  });
  test('a malformed line names the file and line', () => {
    assert.throws(() => parseEnvFile('A=1\nnot a pair\n', '/etc/esb-agent/env'), /\/etc\/esb-agent\/env:2: expected KEY=VALUE/);
  });
});
