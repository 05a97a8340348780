/**
 * The checks of `esb-agent doctor`, one function per thing the agent needs on its host. Each
 * returns OK, WARN (works, but look at it) or FAIL (the agent will not start or not work),
 * with a one-line fix for anything not OK. Checks only read: they create nothing the agent
 * would later find (the CNI VERSION probe uses a throw-away cache dir).
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadTlsMaterial } from '../api/server.js';
import { loadNetworkList } from '../cni/conflist.js';
import { findPlugin } from '../cni/exec.js';
import { CniNetwork } from '../cni/network.js';
import { isObject } from '../cni/result.js';
import { plaintextExposed, type Config } from '../config/config.js';
import { hostPort, isLoopbackAddress } from '../config/parse.js';
import { errnoCode, errorText } from '../errors.js';
import { silentLogger } from '../log.js';
import { ContainerdClient } from '../runtime/containerd/client.js';
import { agentFirewall, configuredWorkerNetwork } from './firewall.js';

const execFileP = promisify(execFile);

export type CheckStatus = 'OK' | 'WARN' | 'FAIL';

/** The outcome of one check. */
export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  readonly message: string;
  /** What to do about a WARN or FAIL. */
  readonly fix?: string | undefined;
}

/** How long containerd may take to answer. */
const CONTAINERD_TIMEOUT_MS = 3000;
/** Bound on running `runc --version` and similar. */
const COMMAND_TIMEOUT_MS = 5000;
/** A server certificate this close to expiry is a warning. */
const CERT_EXPIRY_WARN_DAYS = 30;
/** The plugins the agent's generated conflist uses (src/cni/conflist.ts defaultConflist), plus loopback. */
const DEFAULT_CONFLIST_PLUGINS = ['bridge', 'host-local', 'portmap', 'loopback'];
/** statfs magic numbers (linux/magic.h). */
const CGROUP2_SUPER_MAGIC = 0x63677270;
const TMPFS_MAGIC = 0x01021994;

const ok = (name: string, message: string): CheckResult => ({ name, status: 'OK', message });
const warn = (name: string, message: string, fix: string): CheckResult => ({ name, status: 'WARN', message, fix });
const fail = (name: string, message: string, fix: string): CheckResult => ({ name, status: 'FAIL', message, fix });

/** containerd: the socket exists, answers, and reports its version. */
export async function checkContainerd(config: Config): Promise<CheckResult> {
  const name = 'containerd';
  const { socket, namespace } = config.containerd;
  const fix = 'start containerd (systemctl start containerd), or point CONTAINERD_SOCKET at its socket';
  try {
    const st = await fs.stat(socket);
    if (!st.isSocket()) return fail(name, `CONTAINERD_SOCKET ${socket} is not a socket`, fix);
  } catch (err) {
    return fail(name, `CONTAINERD_SOCKET ${socket} does not exist (${errnoCode(err) ?? errorText(err)})`, fix);
  }
  const client = new ContainerdClient({ socket, namespace });
  try {
    await client.waitForReady(CONTAINERD_TIMEOUT_MS);
    const v = await client.getVersion({ deadlineMs: CONTAINERD_TIMEOUT_MS });
    return ok(name, `containerd ${v.version} answers at ${socket} (namespace ${namespace})`);
  } catch (err) {
    return fail(name, `containerd at ${socket} does not answer: ${errorText(err)}`, fix);
  } finally {
    client.close();
  }
}

/** Finds an executable on a PATH-style list; undefined when absent. */
async function which(command: string, pathList: string): Promise<string | undefined> {
  for (const dir of pathList.split(':').filter((d) => d !== '')) {
    const file = path.join(dir, command);
    try {
      await fs.access(file, fsConstants.X_OK);
      if ((await fs.stat(file)).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** runc and the runc shim: present on PATH, and runc's version. */
export async function checkRunc(config: Config, pathList: string): Promise<CheckResult> {
  const name = 'runc';
  const fix = 'install runc and containerd (apt-get install runc containerd), or add their directory to PATH';
  if (config.containerd.runtime !== 'io.containerd.runc.v2') {
    return warn(
      name,
      `CONTAINERD_RUNTIME is ${config.containerd.runtime}; doctor checks only io.containerd.runc.v2`,
      'make sure containerd can start that runtime',
    );
  }
  const runc = await which('runc', pathList);
  if (runc === undefined) return fail(name, `runc not found on PATH (${pathList})`, fix);
  const shim = await which('containerd-shim-runc-v2', pathList);
  if (shim === undefined)
    return fail(name, `containerd-shim-runc-v2 (the io.containerd.runc.v2 shim) not found on PATH (${pathList})`, fix);
  try {
    const { stdout } = await execFileP(runc, ['--version'], { timeout: COMMAND_TIMEOUT_MS });
    const version = /runc version (\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0]?.trim() ?? '?';
    return ok(name, `runc ${version} (${runc}), shim ${shim}`);
  } catch (err) {
    return fail(name, `${runc} --version failed: ${errorText(err)}`, fix);
  }
}

/** The plugin binaries a conflist names (and loopback, which the agent always runs). */
function pluginTypes(list: Awaited<ReturnType<typeof loadNetworkList>>): string[] {
  const types = new Set<string>(['loopback']);
  for (const p of list.plugins) {
    types.add(p.type);
    const ipam = p['ipam'];
    if (isObject(ipam) && typeof ipam['type'] === 'string') types.add(ipam['type']);
  }
  return [...types];
}

async function missingPlugins(types: readonly string[], binDirs: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const t of types) {
    try {
      await findPlugin(t, binDirs);
    } catch {
      missing.push(t);
    }
  }
  return missing;
}

/**
 * CNI: the conflist parses and every plugin it names is in CNI_BIN_DIR and speaks its
 * cniVersion (the agent's own load check). A missing conflist is fine (the agent writes one)
 * as long as the plugins of that default network are there.
 */
export async function checkCni(config: Config): Promise<CheckResult> {
  const name = 'cni';
  const { confFile, binDirs } = config.cni;
  const binFix = `install the CNI plugins (apt-get install containernetworking-plugins puts them in /usr/lib/cni) and set CNI_BIN_DIR to their directory`;
  let exists = true;
  try {
    await fs.access(confFile);
  } catch {
    exists = false;
  }
  if (!exists) {
    const missing = await missingPlugins(DEFAULT_CONFLIST_PLUGINS, binDirs);
    if (missing.length > 0)
      return fail(
        name,
        `CNI plugin(s) ${missing.join(', ')} not found in CNI_BIN_DIR ${binDirs.join(':')} (needed by the network the agent generates)`,
        binFix,
      );
    return warn(
      name,
      `CNI_CONF_FILE ${confFile} does not exist; the agent will generate it (bridge ${config.cni.bridge}, ${config.cni.subnet}, with ipMasq)`,
      'nothing to do if that network suits this host; otherwise write your own conflist there',
    );
  }
  let list;
  try {
    list = await loadNetworkList(confFile);
  } catch (err) {
    return fail(name, errorText(err), `fix the JSON in ${confFile} (or remove it to let the agent generate one)`);
  }
  const types = pluginTypes(list);
  const missing = await missingPlugins(types, binDirs);
  if (missing.length > 0) {
    return fail(name, `CNI plugin(s) ${missing.join(', ')} named by ${confFile} not found in CNI_BIN_DIR ${binDirs.join(':')}`, binFix);
  }
  // The agent's load check also asks every plugin for its versions; give it a throw-away cache dir.
  const cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'esb-doctor-cni-'));
  try {
    await new CniNetwork({ confFile, binDirs, cacheDir, log: silentLogger() }).load({ signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    return fail(name, errorText(err), `use plugins that support cniVersion ${list.cniVersion}, or change cniVersion in ${confFile}`);
  } finally {
    await fs.rm(cacheDir, { recursive: true, force: true });
  }
  return ok(
    name,
    `network ${list.name} (cniVersion ${list.cniVersion}) from ${confFile}; plugins ${types.join(', ')} in ${binDirs.join(':')}`,
  );
}

/** cgroups: which hierarchy the host runs (the agent reads metrics from v1 and v2). */
export async function checkCgroups(root = '/sys/fs/cgroup'): Promise<CheckResult> {
  const name = 'cgroups';
  const fix = 'mount the cgroup hierarchy at /sys/fs/cgroup (systemd does this on boot)';
  let type: number;
  try {
    type = (await fs.statfs(root)).type;
  } catch (err) {
    return fail(name, `cannot read ${root}: ${errorText(err)}`, fix);
  }
  if (type === CGROUP2_SUPER_MAGIC) {
    let controllers = '';
    try {
      controllers = (await fs.readFile(path.join(root, 'cgroup.controllers'), 'utf8')).trim();
    } catch {
      // unreadable: reported below as missing controllers
    }
    const needed = ['memory', 'cpu', 'pids'].filter((c) => !controllers.split(/\s+/).includes(c));
    if (needed.length > 0)
      return warn(
        name,
        `cgroup v2 (unified) without the ${needed.join(', ')} controller(s)`,
        'enable them in the root cgroup (cgroup.subtree_control) or boot with systemd managing them',
      );
    return ok(name, `cgroup v2 (unified); controllers ${controllers}`);
  }
  if (type === TMPFS_MAGIC) {
    let hybrid = false;
    try {
      hybrid = (await fs.statfs(path.join(root, 'unified'))).type === CGROUP2_SUPER_MAGIC;
    } catch {
      hybrid = false;
    }
    const missing: string[] = [];
    for (const c of ['memory', 'cpu', 'pids', 'freezer']) {
      try {
        await fs.access(path.join(root, c));
      } catch {
        missing.push(c);
      }
    }
    const label = hybrid ? 'cgroup v1 (hybrid: v1 controllers, v2 at unified/)' : 'cgroup v1 (legacy)';
    if (missing.length > 0)
      return fail(
        name,
        `${label} without the ${missing.join(', ')} hierarchy`,
        `mount the ${missing.join(', ')} cgroup controller(s) under ${root}`,
      );
    return ok(name, label);
  }
  return fail(name, `${root} is neither cgroup2 nor a tmpfs of v1 hierarchies (filesystem type 0x${type.toString(16)})`, fix);
}

/** TLS: the three files read, parse and match (the agent's start-up check), and expiry. */
export function checkTls(config: Config, now: Date = new Date()): CheckResult {
  const name = 'tls';
  if (config.tls === undefined) {
    return warn(
      name,
      'AGENT_GRPC_TLS_DISABLED=1: gRPC is plaintext and anyone who reaches the port can run containers',
      'keep TLS on in production: unset AGENT_GRPC_TLS_DISABLED and set AGENT_GRPC_CERT_PATH, AGENT_GRPC_KEY_PATH, AGENT_GRPC_CA_CERT_PATH',
    );
  }
  let material;
  try {
    material = loadTlsMaterial(config.tls);
  } catch (err) {
    return fail(
      name,
      errorText(err),
      "point the AGENT_GRPC_*_PATH variables at readable PEM files: the server certificate, its key, and the CA of the gateway's client certificates",
    );
  }
  const cert = new X509Certificate(material.cert);
  const notAfter = new Date(cert.validTo);
  const notBefore = new Date(cert.validFrom);
  const renew = `renew ${config.tls.certPath} (and restart the agent)`;
  if (notAfter.getTime() <= now.getTime())
    return fail(name, `the server certificate ${config.tls.certPath} expired on ${notAfter.toISOString()}`, renew);
  if (notBefore.getTime() > now.getTime())
    return fail(
      name,
      `the server certificate ${config.tls.certPath} is not valid before ${notBefore.toISOString()}`,
      'check the host clock, or issue a certificate valid now',
    );
  const ca = new X509Certificate(material.ca);
  if (new Date(ca.validTo).getTime() <= now.getTime())
    return fail(
      name,
      `the client CA ${config.tls.caCertPath} expired on ${new Date(ca.validTo).toISOString()}`,
      `replace ${config.tls.caCertPath}`,
    );
  const days = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
  const what = `certificate ${material.subject} (${config.tls.certPath}) matches its key, valid until ${notAfter.toISOString()}; client CA ${config.tls.caCertPath}`;
  if (days < CERT_EXPIRY_WARN_DAYS) return warn(name, `${what}: expires in ${days} day(s)`, renew);
  return ok(name, what);
}

/** Resolves undefined when `address` can be bound on this host (port 0), else the error code. */
function bindProbe(address: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code ?? errorText(err));
    });
    srv.listen(0, address, () => {
      srv.close(() => {
        resolve(undefined);
      });
    });
  });
}

/**
 * Who can reach the agent: the gRPC and /metrics addresses exist on this host, plaintext is not
 * exposed beyond loopback by accident, and with mTLS an allowlist narrows the CA's clients.
 */
export async function checkListen(config: Config): Promise<CheckResult> {
  const name = 'listen';
  for (const [variable, address] of [
    ['AGENT_GRPC_ADDRESS', config.grpcAddress],
    ['AGENT_METRICS_ADDRESS', config.metricsAddress],
  ] as const) {
    const failed = await bindProbe(address);
    if (failed !== undefined) {
      return fail(
        name,
        `${variable} ${address} cannot be bound on this host (${failed})`,
        `set ${variable} to an address of this host (127.0.0.1, 0.0.0.0 or one interface's address)`,
      );
    }
  }
  const grpcAt = hostPort(config.grpcAddress, config.port);
  const metricsAt = `/metrics on ${hostPort(config.metricsAddress, config.metricsPort)}${isLoopbackAddress(config.metricsAddress) ? '' : ' (no authentication; reachable from other hosts)'}`;
  if (plaintextExposed(config)) {
    return warn(
      name,
      `plaintext gRPC on ${grpcAt}: anyone who can reach it can run containers as root; ${metricsAt}`,
      'turn mTLS on (unset AGENT_GRPC_TLS_DISABLED), or set AGENT_GRPC_ADDRESS=127.0.0.1',
    );
  }
  if (config.tls === undefined) return ok(name, `plaintext gRPC on loopback ${grpcAt} (local clients only); ${metricsAt}`);
  if (config.allowedClients.length === 0) {
    return warn(
      name,
      `mTLS gRPC on ${grpcAt}; AGENT_GRPC_ALLOWED_CLIENTS is empty, so any client certificate of the CA may call; ${metricsAt}`,
      "set AGENT_GRPC_ALLOWED_CLIENTS to the gateway certificate's DNS or URI SAN (or its CN)",
    );
  }
  return ok(name, `mTLS gRPC on ${grpcAt} for ${config.allowedClients.join(', ')}; ${metricsAt}`);
}

/** The state dir: writable (or creatable under a writable parent). */
export async function checkStateDir(config: Config): Promise<CheckResult> {
  const name = 'state-dir';
  const dir = config.stateDir;
  const fix = `run the agent as root, or point AGENT_STATE_DIR at a writable directory`;
  try {
    const st = await fs.stat(dir);
    if (!st.isDirectory()) return fail(name, `AGENT_STATE_DIR ${dir} is not a directory`, fix);
    const probe = await fs.mkdtemp(path.join(dir, '.doctor-'));
    await fs.rm(probe, { recursive: true, force: true });
    return ok(name, `AGENT_STATE_DIR ${dir} is writable`);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') return fail(name, `AGENT_STATE_DIR ${dir} is not writable: ${errorText(err)}`, fix);
  }
  // Missing: the agent creates it; check the nearest existing parent.
  let parent = path.dirname(dir);
  for (;;) {
    try {
      await fs.access(parent, fsConstants.W_OK | fsConstants.X_OK);
      return ok(name, `AGENT_STATE_DIR ${dir} does not exist yet; the agent will create it under ${parent}`);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') return fail(name, `AGENT_STATE_DIR ${dir} cannot be created: ${parent} is not writable`, fix);
    }
    const up = path.dirname(parent);
    if (up === parent) return fail(name, `AGENT_STATE_DIR ${dir} cannot be created`, fix);
    parent = up;
  }
}

/**
 * The worker firewall (src/netfilter/): the agent's chains for its bridge are all there and
 * exactly as the agent writes them. Missing is a warning (the agent installs them at start-up;
 * doctor usually runs before the first start); partly removed or changed is a failure: workers
 * may reach what they must not until the agent restarts and repairs them.
 */
export async function checkFirewall(config: Config): Promise<CheckResult> {
  const name = 'firewall';
  if (!config.workerFirewall.enabled) {
    return warn(
      name,
      "AGENT_WORKER_FIREWALL=false: nothing stops workers from reaching the agent's ports, other workers or link-local addresses",
      'unset AGENT_WORKER_FIREWALL unless your own filter isolates workers',
    );
  }
  const found = await configuredWorkerNetwork(config);
  if (typeof found === 'string') return warn(name, found, 'check with esb-agent firewall status --bridge <bridge> once a worker runs');
  const net = found.network;
  let report;
  try {
    report = await agentFirewall(config, found.dnsServer).check(net);
  } catch (err) {
    return fail(
      name,
      `cannot read the worker firewall of bridge ${net.bridge}: ${errorText(err)}`,
      'install iptables (apt-get install iptables); the agent needs iptables and iptables-restore',
    );
  }
  const chains = report.chains.join(', ');
  switch (report.status) {
    case 'present':
      return ok(name, `present: chains ${chains} complete, one jump each (bridge ${net.bridge})`);
    case 'missing':
      return warn(
        name,
        `missing: no worker firewall for bridge ${net.bridge} (chains ${chains})`,
        'start the agent (it installs them at start-up); if it is running, restart it: systemctl restart esb-agent',
      );
    case 'partial':
      return fail(
        name,
        `partly removed: ${report.problems.join('; ')} (bridge ${net.bridge})`,
        'restart the agent (systemctl restart esb-agent): it repairs them at start-up; until then workers are not fully isolated',
      );
  }
}
