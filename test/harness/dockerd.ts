/**
 * A private, real dockerd (Debian's docker.io) for tests: its own config file, data root, exec
 * root, pidfile and socket under a temp dir, never the host's defaults (/var/run/docker.sock,
 * /var/lib/docker, /etc/docker). It runs its own managed containerd under the exec root. No
 * default bridge (`--bridge=none`), no iptables rules, no ip_forward change, its own cgroup
 * parent. A test network is made through the API: a unique bridge `esbd<6 hex>`, a test-only
 * 10.253.x.0/24 subnet that is not routed yet, masquerading and inter-container communication off.
 *
 * `stop()` removes every container and the network, stops dockerd (SIGTERM, then SIGKILL),
 * kills any containerd/shim process still running from the temp dir, removes the bridge and the
 * cgroup parent, unmounts everything under the temp dir, deletes it, and puts back
 * net.ipv4.ip_forward and /run/docker if it changed them — also after a failed test.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DockerEngineClient } from '../../src/runtime/docker/engine-client.js';
import { unmountUnder } from './containerd.js';
import { startDaemon, stopDaemon, waitFor, type Daemon } from './process.js';

export interface DockerTestNetwork {
  readonly name: string;
  readonly id: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly gateway: string;
}

export interface DockerdInstance {
  readonly dir: string;
  readonly socket: string;
  /** `unix://<socket>`, the DOCKER_HOST of an agent using it. */
  readonly host: string;
  readonly network: DockerTestNetwork;
  /** A client for white-box checks (closed by stop()). */
  readonly client: DockerEngineClient;
  readonly running: boolean;
  /** Stops dockerd (SIGTERM) without cleaning; `restart()` brings it back on the same paths. */
  pause(): Promise<void>;
  restart(): Promise<void>;
  /** Pids of every process started from this instance's temp dir (dockerd, containerd, shims). */
  processes(): number[];
  /** Removes everything and stops the daemon. Idempotent. */
  stop(): Promise<void>;
}

const SYSCTL_IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';
const RUN_DOCKER = '/run/docker';
/** Bridges of test stacks that rely on ip_forward (containerd stacks and ours). */
const TEST_BRIDGE = /^\d+: (esbt|esbd)[0-9a-f]{6}[:@]/;

export function freeSubnet(): string {
  const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  for (let i = 0; i < 50; i++) {
    const net = `10.253.${1 + Math.floor(Math.random() * 250)}.`;
    if (!routes.includes(net)) return `${net}0/24`;
  }
  throw new Error('no free 10.253.x.0/24 test subnet');
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-8).join('\n');
  } catch {
    return '';
  }
}

/** Pids whose command line mentions `dir` (our dockerd, its containerd and shims). */
function processesUnder(dir: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) out.push(Number(pid));
    } catch {
      // gone
    }
  }
  return out;
}

function linkExists(name: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function removeCgroupParent(parent: string): void {
  const base = '/sys/fs/cgroup';
  const dirs = [path.join(base, parent), ...readdirSafe(base).map((ctl) => path.join(base, ctl, parent))];
  for (const d of dirs) {
    if (!existsSync(d)) continue;
    try {
      rmdirSync(d);
    } catch {
      // not empty: a leak the test's own checks report
    }
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Starts dockerd and the test network. Register `t.after(() => d.stop())` right after. */
export async function startDockerd(): Promise<DockerdInstance> {
  const tag = randomBytes(3).toString('hex');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-dockerd-'));
  const socket = path.join(dir, 'docker.sock');
  const host = `unix://${socket}`;
  const cgroupParent = `esbd-${tag}`;
  const ipForward = readFileSync(SYSCTL_IP_FORWARD, 'utf8').trim();
  const hadRunDocker = existsSync(RUN_DOCKER);
  // Our own config file: the host's /etc/docker/daemon.json is never read, and the trust key
  // (otherwise /etc/docker/key.json) stays in the temp dir.
  writeFileSync(path.join(dir, 'daemon.json'), JSON.stringify({ 'deprecated-key-path': path.join(dir, 'key.json') }));
  const args = [
    '--config-file',
    path.join(dir, 'daemon.json'),
    '--data-root',
    path.join(dir, 'data'),
    '--exec-root',
    path.join(dir, 'exec'),
    '--pidfile',
    path.join(dir, 'docker.pid'),
    '-H',
    host,
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-forward=false',
    '--ip-masq=false',
    '--userland-proxy=false',
    `--cgroup-parent=/${cgroupParent}`,
    '--shutdown-timeout=2',
  ];
  const client = new DockerEngineClient({ host });
  let daemon: Daemon | undefined;
  let stopped = false;
  const launch = async (): Promise<void> => {
    daemon = startDaemon('dockerd', args, path.join(dir, 'dockerd.log'));
    await waitFor(
      'dockerd to answer /_ping',
      async () => {
        if (daemon?.child.exitCode !== null) throw new Error(`dockerd exited: ${tail(path.join(dir, 'dockerd.log'))}`);
        await client.ping(AbortSignal.timeout(1000));
        return true;
      },
      30_000,
      100,
    );
  };
  const running = (): boolean => daemon?.child.exitCode === null && daemon.child.signalCode === null;

  const cleanup = async (network: DockerTestNetwork | undefined): Promise<void> => {
    try {
      if (!running()) await launch();
      // A private daemon: everything in it is the test's.
      const all = await client.json<{ Id: string }[]>({
        method: 'GET',
        path: '/containers/json',
        query: { all: 1 },
        what: 'list containers',
      });
      for (const c of all)
        await client.request({ method: 'DELETE', path: `/containers/${c.Id}`, query: { force: 1, v: 1 }, what: 'remove container' });
      if (network) await client.request({ method: 'DELETE', path: `/networks/${network.id}`, what: 'remove network' });
    } catch (err) {
      console.error('dockerd cleanup through the API failed:', err);
    }
    if (daemon) await stopDaemon(daemon, 20_000);
    for (const pid of processesUnder(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await waitFor('dockerd children to exit', () => processesUnder(dir).length === 0, 10_000).catch((err: unknown) => {
      console.error(err);
    });
    await client.close();
    if (network && linkExists(network.bridge)) execFileSync('ip', ['link', 'del', network.bridge], { stdio: 'ignore' });
    removeCgroupParent(cgroupParent);
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    if (!hadRunDocker) {
      // dockerd creates /run/docker/plugins even with a private exec root.
      for (const d of [path.join(RUN_DOCKER, 'plugins'), RUN_DOCKER]) {
        try {
          rmdirSync(d);
        } catch {
          // not empty or in use by another daemon: leave it
        }
      }
    }
    const otherBridges = execFileSync('ip', ['-o', 'link', 'show', 'type', 'bridge'], { encoding: 'utf8' })
      .split('\n')
      .some((l) => TEST_BRIDGE.test(l));
    if (!otherBridges && readFileSync(SYSCTL_IP_FORWARD, 'utf8').trim() !== ipForward) writeFileSync(SYSCTL_IP_FORWARD, ipForward);
  };

  let network: DockerTestNetwork | undefined;
  try {
    await launch();
    const subnet = freeSubnet();
    const gateway = subnet.replace(/0\/24$/, '1');
    const name = `esbd-${tag}-net`;
    const bridge = `esbd${tag}`;
    const res = await client.json<{ Id: string }>({
      method: 'POST',
      path: '/networks/create',
      body: {
        Name: name,
        Driver: 'bridge',
        CheckDuplicate: true,
        IPAM: { Driver: 'default', Config: [{ Subnet: subnet, Gateway: gateway }] },
        // ICC off: the agent refuses a network whose workers may talk to each other.
        Options: {
          'com.docker.network.bridge.name': bridge,
          'com.docker.network.bridge.enable_ip_masquerade': 'false',
          'com.docker.network.bridge.enable_icc': 'false',
        },
        Labels: { 'com.esb.test': tag },
      },
      what: `create network ${name}`,
    });
    network = { name, id: res.Id, bridge, subnet, gateway };
  } catch (err) {
    await cleanup(network);
    throw err;
  }
  const net = network;
  return {
    dir,
    socket,
    host,
    network: net,
    client,
    get running() {
      return running();
    },
    async pause() {
      if (daemon) await stopDaemon(daemon, 20_000);
    },
    async restart() {
      if (running()) throw new Error('dockerd is still running');
      await launch();
    },
    processes: () => processesUnder(dir),
    async stop() {
      if (stopped) return;
      stopped = true;
      await cleanup(net);
    },
  };
}

export interface DockerLeakReport {
  /** Containers carrying the test's `esb_env` label. */
  containers: string[];
  /** Endpoints still attached to the test network. */
  endpoints: string[];
  /** Interfaces still enslaved to the test bridge. */
  veths: string[];
}

/** What a docker test's workers can leave behind. */
export async function findDockerLeaks(d: DockerdInstance, envName: string): Promise<DockerLeakReport> {
  const containers = (
    await d.client.json<{ Names: string[] }[]>({
      method: 'GET',
      path: '/containers/json',
      query: { all: 1, filters: JSON.stringify({ label: [`esb_env=${envName}`] }) },
      what: 'list test containers',
    })
  ).map((c) => c.Names[0] ?? '?');
  const net = await d.client.json<{ Containers: Record<string, { Name: string }> | null }>({
    method: 'GET',
    path: `/networks/${d.network.id}`,
    what: 'inspect test network',
  });
  const endpoints = Object.values(net.Containers ?? {}).map((c) => c.Name);
  let veths: string[] = [];
  try {
    const out = execFileSync('ip', ['-o', 'link', 'show', 'master', d.network.bridge], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    veths = out
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => l.split(':')[1]?.trim() ?? l);
  } catch {
    veths = [];
  }
  return { containers, endpoints, veths };
}

export function dockerLeakCount(r: DockerLeakReport): number {
  return r.containers.length + r.endpoints.length + r.veths.length;
}
