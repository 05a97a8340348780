/**
 * `esb-agent doctor` as a child process: all OK on a healthy setup (a real private containerd,
 * the host's runc and CNI plugins, a conflist, test certificates, a writable state dir), and
 * exit 1 with the problem named on broken ones: a CNI plugin missing from CNI_BIN_DIR, a
 * certificate path that does not exist, a containerd socket that is not there.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultConflist } from '../../src/network/default-conflist.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { startContainerd, type ContainerdInstance } from '../harness/containerd.js';
import { scaled } from '../harness/process.js';
import { CNI_BIN_DIR } from '../harness/stack.js';
import { removeFirewall } from '../harness/firewall.js';
import { loadConfig } from '../../src/config/config.js';
import { agentFirewall } from '../../src/cli/firewall.js';
import { randomBytes } from 'node:crypto';
import { createTestCerts, type TestCerts } from '../helpers/certs.js';

const ENTRY = path.join(PROJECT_ROOT, 'test', 'helpers', 'cli-entry.ts');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function doctor(env: Record<string, string>, args: readonly string[] = []): Promise<Run> {
  // Only the variables given: the host's own configuration must not leak into the checks.
  const childEnv = { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: os.tmpdir(), ...env };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'doctor', ...args], {
      cwd: PROJECT_ROOT,
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), scaled(120_000));
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * A CA and a server certificate valid for 400 days: the shared test PKI lives 2 days, which
 * doctor rightly warns about (under 30 days left).
 */
function longLivedServerPki(dir: string): { caPath: string; certPath: string; keyPath: string } {
  const ssl = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ssl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '400',
    '-subj',
    '/CN=esb-doctor-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ]);
  ssl(['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  writeFileSync(path.join(dir, 'server.ext'), 'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n');
  ssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '400',
    '-extfile',
    'server.ext',
  ]);
  return { caPath: path.join(dir, 'ca.crt'), certPath: path.join(dir, 'server.crt'), keyPath: path.join(dir, 'server.key') };
}

function show(r: Run): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** The status of each check from the text report. */
function statuses(stdout: string): Record<string, string> {
  return Object.fromEntries([...stdout.matchAll(/^(OK|WARN|FAIL) {2,}(\S+) /gm)].map((m) => [m[2]!, m[1]!]));
}

test(
  'doctor: all OK on a healthy host; names the missing plugin, the bad cert path and the missing socket',
  { timeout: scaled(5 * 60_000) },
  async (t) => {
    let ctd: ContainerdInstance | undefined = undefined;
    let certs: TestCerts | undefined = undefined;
    let dir: string | undefined = undefined;
    // A bridge name of this run: the worker firewall chains are named after it.
    const bridge = `esbtd${randomBytes(3).toString('hex')}`;
    t.after(async () => {
      removeFirewall(bridge);
      await ctd?.stop();
      certs?.remove();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });
    dir = mkdtempSync(path.join(os.tmpdir(), 'esb-doctor-'));
    ctd = await startContainerd();
    certs = createTestCerts();
    const confFile = path.join(dir, 'cni', '10-esbt-doctor.conflist');
    mkdirSync(path.dirname(confFile));
    // Only the file: doctor never creates the network (no bridge, no IPAM reservation).
    writeFileSync(
      confFile,
      JSON.stringify(
        defaultConflist(
          {
            name: 'esbt-doctor',
            subnet: '10.252.254.0/24',
            bridge,
            gatewayIp: '10.252.254.1',
            dnsServer: '10.252.254.1',
            netDir: path.join(dir, 'ipam'),
          },
          { ipMasq: false },
        ),
      ),
    );
    const pkiDir = path.join(dir, 'pki');
    mkdirSync(pkiDir);
    const pki = longLivedServerPki(pkiDir);
    const healthy: Record<string, string> = {
      CONTAINERD_SOCKET: ctd.socket,
      CONTAINERD_NAMESPACE: 'esb-doctor-test',
      CNI_CONF_FILE: confFile,
      CNI_BIN_DIR,
      AGENT_STATE_DIR: path.join(dir, 'state'),
      AGENT_GRPC_CERT_PATH: pki.certPath,
      AGENT_GRPC_KEY_PATH: pki.keyPath,
      AGENT_GRPC_CA_CERT_PATH: pki.caPath,
      AGENT_GRPC_ALLOWED_CLIENTS: 'gateway.esb.test',
    };

    // The worker firewall as the agent installs it at start-up (its own chains only: no bridge).
    const healthyConfig = loadConfig(healthy);
    await agentFirewall(healthyConfig, healthyConfig.cni.dnsServer).install({ bridge, subnet: '10.252.254.0/24', ipv6: false });

    const good = await doctor(healthy);
    assert.equal(good.code, 0, show(good));
    assert.deepEqual(
      statuses(good.stdout),
      {
        config: 'OK',
        containerd: 'OK',
        runc: 'OK',
        cni: 'OK',
        cgroups: 'OK',
        compat: 'OK',
        tls: 'OK',
        listen: 'OK',
        'state-dir': 'OK',
        firewall: 'OK',
      },
      show(good),
    );
    assert.match(good.stdout, new RegExp(`^OK {4}firewall +present: chains ESB-IN-${bridge}, ESB-FWD-${bridge} complete`, 'm'));
    assert.match(good.stdout, /^OK {4}containerd +containerd \S+ answers at /m);
    assert.match(good.stdout, /^OK {4}runc +runc \d+\.\d+/m);
    assert.match(good.stdout, /^OK {4}cni +network esbt-doctor \(cniVersion 1\.0\.0\).*plugins loopback, bridge, host-local, portmap/m);
    assert.match(good.stdout, /^OK {4}cgroups +cgroup v(1|2)/m);
    // The machines CI runs on are in the tested part of the compatibility matrix.
    assert.match(
      good.stdout,
      /^OK {4}compat +cgroup v(1|2), driver cgroupfs; containerd v?\d+\.\d+\S*; runc \d+\.\d+\S*; CNI plugins .* — tested: /m,
    );
    assert.match(good.stdout, /\n0 failed, 0 warning\(s\), 10 ok\n$/);
    assert.match(good.stdout, /^OK {4}listen +mTLS gRPC on 0\.0\.0\.0:50051 for gateway\.esb\.test; \/metrics on 127\.0\.0\.1:9091$/m);

    // The same configuration from an environment file, with JSON output.
    const envFile = path.join(dir, 'env');
    writeFileSync(
      envFile,
      `# as /etc/esb-agent/env\n${Object.entries(healthy)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n')}\n`,
    );
    const fromFile = await doctor({}, ['--env-file', envFile, '-o', 'json']);
    assert.equal(fromFile.code, 0, show(fromFile));
    const checks = (JSON.parse(fromFile.stdout) as { checks: { name: string; status: string }[] }).checks;
    assert.ok(checks.length === 10 && checks.every((c) => c.status === 'OK'), fromFile.stdout);

    // The systemd cgroup driver needs systemd as init.
    const systemd = await doctor({ ...healthy, AGENT_CGROUP_DRIVER: 'systemd' });
    const initIsSystemd = readFileSync('/proc/1/comm', 'utf8').trim() === 'systemd';
    assert.equal(statuses(systemd.stdout)['compat'], initIsSystemd ? 'OK' : 'FAIL', show(systemd));
    if (!initIsSystemd) assert.match(systemd.stdout, /fix: AGENT_CGROUP_DRIVER=systemd needs systemd as the init system/);

    // A plugin directory without the bridge plugin the conflist names.
    const partialBin = path.join(dir, 'cni-bin');
    mkdirSync(partialBin);
    for (const p of ['loopback', 'host-local', 'portmap']) symlinkSync(path.join(CNI_BIN_DIR, p), path.join(partialBin, p));
    const noBridge = await doctor({ ...healthy, CNI_BIN_DIR: partialBin });
    assert.equal(noBridge.code, 1, show(noBridge));
    assert.equal(statuses(noBridge.stdout)['cni'], 'FAIL');
    assert.match(
      noBridge.stdout,
      new RegExp(
        `^FAIL {2}cni +CNI plugin\\(s\\) bridge named by ${confFile.replace(/[.]/g, '\\.')} not found in CNI_BIN_DIR ${partialBin}$`,
        'm',
      ),
    );
    assert.match(noBridge.stdout, /^ +fix: install the CNI plugins/m);

    // A certificate path that does not exist.
    const badCert = path.join(dir, 'no-such-dir', 'server.crt');
    const noCert = await doctor({ ...healthy, AGENT_GRPC_CERT_PATH: badCert });
    assert.equal(noCert.code, 1, show(noCert));
    assert.equal(statuses(noCert.stdout)['tls'], 'FAIL');
    assert.ok(noCert.stdout.includes(`AGENT_GRPC_CERT_PATH: cannot read ${badCert} (ENOENT)`), noCert.stdout);

    // A certificate that expires within 30 days (the 2-day test PKI) is a warning, not a failure.
    const shortLived = await doctor({
      ...healthy,
      AGENT_GRPC_CERT_PATH: certs.server.certPath,
      AGENT_GRPC_KEY_PATH: certs.server.keyPath,
      AGENT_GRPC_CA_CERT_PATH: certs.caPath,
    });
    assert.equal(shortLived.code, 0, show(shortLived));
    assert.match(shortLived.stdout, /^WARN {2}tls +.*: expires in [0-2] day\(s\)$/m);

    // A key that belongs to another certificate.
    const wrongKey = await doctor({ ...healthy, AGENT_GRPC_KEY_PATH: certs.client.keyPath });
    assert.equal(wrongKey.code, 1, show(wrongKey));
    assert.match(wrongKey.stdout, /^FAIL {2}tls +AGENT_GRPC_KEY_PATH: .* does not belong to the certificate/m);

    // No containerd at the socket path.
    const noSocket = path.join(dir, 'containerd.sock');
    const down = await doctor({ ...healthy, CONTAINERD_SOCKET: noSocket });
    assert.equal(down.code, 1, show(down));
    assert.ok(down.stdout.includes(`FAIL  containerd  CONTAINERD_SOCKET ${noSocket} does not exist (ENOENT)`), down.stdout);
    assert.match(down.stdout, /fix: start containerd/);

    // Without an allowlist any certificate of the CA may call: a warning.
    const open = await doctor({ ...healthy, AGENT_GRPC_ALLOWED_CLIENTS: '' });
    assert.equal(open.code, 0, show(open));
    assert.match(open.stdout, /^WARN {2}listen +mTLS gRPC on 0\.0\.0\.0:50051; AGENT_GRPC_ALLOWED_CLIENTS is empty/m);

    // Plaintext on every interface is a warning naming the risk; on loopback (the default) it is not.
    const exposed = await doctor({
      ...healthy,
      AGENT_GRPC_ALLOWED_CLIENTS: '',
      AGENT_GRPC_TLS_DISABLED: '1',
      AGENT_GRPC_ADDRESS: '0.0.0.0',
    });
    assert.equal(exposed.code, 0, show(exposed));
    assert.match(
      exposed.stdout,
      /^WARN {2}listen +plaintext gRPC on 0\.0\.0\.0:50051: anyone who can reach it can run containers as root/m,
    );
    const loopback = await doctor({ ...healthy, AGENT_GRPC_ALLOWED_CLIENTS: '', AGENT_GRPC_TLS_DISABLED: '1' });
    assert.match(loopback.stdout, /^OK {4}listen +plaintext gRPC on loopback 127\.0\.0\.1:50051 \(local clients only\)/m);

    // An address this host does not have (TEST-NET-1; only bound, never sent to) fails.
    const elsewhere = await doctor({ ...healthy, AGENT_METRICS_ADDRESS: '192.0.2.1' });
    assert.equal(elsewhere.code, 1, show(elsewhere));
    assert.match(elsewhere.stdout, /^FAIL {2}listen +AGENT_METRICS_ADDRESS 192\.0\.2\.1 cannot be bound on this host \(EADDRNOTAVAIL\)$/m);

    // An invalid variable fails the configuration check and says which.
    const badConfig = await doctor({ ...healthy, PORT: 'x' });
    assert.equal(badConfig.code, 1, show(badConfig));
    assert.match(badConfig.stdout, /^FAIL {2}config +invalid configuration: PORT: /m);

    const usage = await doctor(healthy, ['extra']);
    assert.equal(usage.code, 64, show(usage));
  },
);
