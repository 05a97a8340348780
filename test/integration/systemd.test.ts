/**
 * The systemd unit and scripts/install.sh: install into a temp root (DESTDIR-style, npm from
 * its cache only), `systemd-analyze verify` the installed unit against that root, run the
 * installed command, then install again: idempotent, and an operator's env file is kept.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../src/paths.js';

const execFileP = promisify(execFile);

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[], timeoutMs = 5 * 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** `systemd-analyze verify` of the unit installed under `root`, with `root` as the file system root. */
function verify(root: string): Promise<Run> {
  return run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, path.join(root, 'etc/systemd/system/esb-agent.service')], 60_000);
}

test(
  "install.sh installs a unit that systemd-analyze verifies; re-running keeps the operator's env file",
  { timeout: 10 * 60_000 },
  async (t) => {
    let root: string | undefined = undefined;
    t.after(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });
    root = mkdtempSync(path.join(os.tmpdir(), 'esb-install-'));
    // systemd resolves the unit's dependencies (containerd.service, sysinit.target, …) inside
    // --root: give it the host's unit files.
    mkdirSync(path.join(root, 'usr/lib/systemd'), { recursive: true });
    cpSync('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });

    const first = await run('bash', ['scripts/install.sh', '--root', root, '--offline']);
    assert.equal(first.code, 0, show(first));
    const unit = path.join(root, 'etc/systemd/system/esb-agent.service');
    const envFile = path.join(root, 'etc/esb-agent/env');
    const wrapper = path.join(root, 'usr/local/bin/esb-agent');
    const app = path.join(root, 'opt/esb-agent');
    assert.equal(
      readFileSync(unit, 'utf8'),
      readFileSync(path.join(PROJECT_ROOT, 'packaging/systemd/esb-agent.service'), 'utf8'),
      'default paths: the unit as in the repo',
    );
    assert.equal(readFileSync(envFile, 'utf8'), readFileSync(path.join(PROJECT_ROOT, 'packaging/env.example'), 'utf8'));
    assert.equal(statSync(envFile).mode & 0o777, 0o600, 'the env file may hold secrets');
    assert.equal(statSync(wrapper).mode & 0o111, 0o111, 'the command is executable');
    assert.match(readFileSync(wrapper, 'utf8'), /^exec \/\S*node \/opt\/esb-agent\/bin\/esb-agent\.js "\$@"$/m);
    assert.ok(!existsSync(path.join(app, 'node_modules', 'typescript')), 'no dev dependencies');
    assert.match(first.stdout, /installed .*\/etc\/esb-agent\/env from packaging\/env\.example/);

    const verified = await verify(root);
    assert.equal(verified.code, 0, show(verified));
    assert.ok(!verified.stderr.includes('esb-agent.service'), show(verified));

    // The installed agent runs from its own directory.
    const { stdout: version } = await execFileP(process.execPath, [path.join(app, 'bin/esb-agent.js'), '--version']);
    const pkg = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(version, `esb-agent ${pkg.version}\n`);
    const { stdout: help } = await execFileP(process.execPath, [path.join(app, 'bin/esb-agent.js'), 'ctl', '--help']);
    assert.match(help, /usage: esb-agent ctl/);

    // The operator edits the env file; a second install keeps it and is otherwise the same.
    const edited = '# operator settings\nCNI_BIN_DIR=/usr/lib/cni\nAGENT_GRPC_TLS_DISABLED=1\n';
    writeFileSync(envFile, edited);
    const unitBefore = readFileSync(unit, 'utf8');
    const second = await run('bash', ['scripts/install.sh', '--root', root, '--offline']);
    assert.equal(second.code, 0, show(second));
    assert.match(second.stdout, /kept existing .*\/etc\/esb-agent\/env/);
    assert.equal(readFileSync(envFile, 'utf8'), edited);
    assert.equal(readFileSync(unit, 'utf8'), unitBefore);
    assert.deepEqual(readdirSync(path.join(root, 'opt')), ['esb-agent'], 'no staging or old copies left');
    assert.equal((await verify(root)).code, 0);

    // verify really checks the command: without it, the unit is refused.
    unlinkSync(wrapper);
    const broken = await verify(root);
    assert.notEqual(broken.code, 0, show(broken));
    assert.match(broken.stderr, /esb-agent\.service: Command \/usr\/local\/bin\/esb-agent is not executable/);

    // Starting the service is only for the real root.
    const refused = await run('bash', ['scripts/install.sh', '--root', root, '--enable-now']);
    assert.equal(refused.code, 64, show(refused));
  },
);
