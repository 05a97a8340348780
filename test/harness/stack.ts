/**
 * A complete private test stack for runtime tests: a real containerd, a real registry with the
 * test images pushed, a unique CNI test network (own bridge, test-only subnet, ipMasq off,
 * IPAM and cache dirs under a temp dir), and an in-process agent (TLS off) with a gRPC
 * client. `stop()` removes everything: workers, netns, the bridge, temp dirs, daemons; it
 * also restores net.ipv4.ip_forward, which the bridge plugin turns on.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConflist } from '../../src/network/default-conflist.js';
import { removeNetns } from '../../src/cni/netns.js';
import type { RunningAgent } from '../../src/main.js';
import { ContainerdClient } from '../../src/runtime/containerd/client.js';
import type { AgentMethod, AgentServiceClient } from '../helpers/grpc.js';
import { InProcessAgent } from './in-process-agent.js';
import { LogCapture } from '../helpers/logs.js';
import { startContainerd, type ContainerdInstance } from './containerd.js';
import { pushTestImages, type PushedTestImages } from './images.js';
import { findLeaks, leakCount, type LeakReport } from './leaks.js';
import { firewallLeftovers, removeFirewall } from './firewall.js';
import { startRegistry, type RegistryInstance } from './registry.js';

export const CNI_BIN_DIR = '/usr/lib/cni';

export interface StackOptions {
  /** Extra agent environment (overrides the stack's). */
  readonly env?: Record<string, string>;
  /** Start the agent right away (default true). */
  readonly startAgent?: boolean;
}

export interface TestStack {
  readonly tmp: string;
  readonly ctd: ContainerdInstance;
  readonly registry: RegistryInstance;
  readonly images: PushedTestImages;
  /** Unique ENV label: worker ids start with `esb-<envName>-`. */
  readonly envName: string;
  readonly idPrefix: string;
  readonly namespace: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly networkName: string;
  readonly netDir: string;
  readonly stateDir: string;
  readonly confFile: string;
  /** The agent environment (pass to a child-process agent too). */
  readonly env: Record<string, string>;
  readonly logs: LogCapture;
  /** The agent's CONTAINERD_SNAPSHOTTER (overlayfs unless the options' env says otherwise). */
  readonly snapshotter: string;
  /** A containerd client in the agent's namespace, for white-box checks. */
  readonly containerd: ContainerdClient;
  agent: RunningAgent | undefined;
  client: AgentServiceClient | undefined;
  /** Starts (or restarts) the in-process agent and connects the client. */
  startAgent(extraEnv?: Record<string, string>): Promise<void>;
  /** Stops the in-process agent (workers stay, per the default keep policy). */
  stopAgent(): Promise<void>;
  call<Res = Record<string, unknown>>(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<Res>;
  /** The gRPC error of a call that must fail: { code name, details }. */
  callError(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<{ name: string; details: string }>;
  leaks(): Promise<LeakReport>;
  /** The agent's firewall chains and jumps for this stack's bridge (kept when the agent stops). */
  firewallLeftovers(): string[];
  stop(): Promise<void>;
}

function freeSubnet(): string {
  const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  for (let i = 0; i < 50; i++) {
    const third = 1 + Math.floor(Math.random() * 250);
    const net = `10.252.${third}.`;
    if (!routes.includes(net)) return `${net}0/24`;
  }
  throw new Error('no free 10.252.x.0/24 test subnet');
}

const sysctlPath = '/proc/sys/net/ipv4/ip_forward';

/** Starts the whole stack. Register `t.after(() => stack.stop())` right after. */
export async function startStack(opts: StackOptions = {}): Promise<TestStack> {
  const tag = randomBytes(3).toString('hex');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-stack-'));
  const ipForward = readFileSync(sysctlPath, 'utf8').trim();
  const envName = `t${tag}`;
  const bridge = `esbt${tag}`;
  const subnet = freeSubnet();
  const networkName = `esbt-${tag}-net`;
  const netDir = path.join(tmp, 'ipam');
  const stateDir = path.join(tmp, 'state');
  const confDir = path.join(tmp, 'cni');
  const confFile = path.join(confDir, `10-${networkName}.conflist`);
  const gatewayIp = subnet.replace(/0\/24$/, '1');
  mkdirSync(confDir, { recursive: true });
  writeFileSync(
    confFile,
    JSON.stringify(
      defaultConflist({ name: networkName, subnet, bridge, gatewayIp, dnsServer: gatewayIp, netDir }, { ipMasq: false }),
      null,
      2,
    ),
  );

  const cleanups: (() => Promise<void> | void)[] = [];
  let ctd: ContainerdInstance | undefined;
  let registry: RegistryInstance | undefined;
  const logs = new LogCapture();
  const runCleanups = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error('stack cleanup step failed:', err);
      }
    }
    cleanups.length = 0;
  };
  // Registered first, run last: host-level leftovers of any worker of this stack.
  cleanups.push(async () => {
    for (const ns of readdirSafe('/run/netns').filter((n) => n.startsWith(`esb-${envName}-`))) await removeNetns(ns);
    // The agent keeps its worker firewall across restarts on purpose; the stack must not.
    removeFirewall(bridge);
    const left = firewallLeftovers(bridge);
    if (left.length > 0) console.error(`stack ${bridge}: firewall rules left behind:\n${left.join('\n')}`);
    try {
      execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
    } catch {
      // never created
    }
    // The bridge plugin (isGateway) turns ip_forward on and never off. Put the host's value
    // back, unless another test stack's bridge is still up and needs it.
    const otherBridges = execFileSync('ip', ['-o', 'link', 'show', 'type', 'bridge'], { encoding: 'utf8' })
      .split('\n')
      .some((l) => /^\d+: esbt[0-9a-f]{6}[:@]/.test(l));
    if (!otherBridges) writeFileSync(sysctlPath, ipForward);
    rmSync(tmp, { recursive: true, force: true });
  });
  try {
    ctd = await startContainerd();
    cleanups.push(() => ctd?.stop());
    registry = await startRegistry();
    cleanups.push(() => registry?.stop());
    const images = await pushTestImages(registry);
    const namespace = `esb-${envName}`;
    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: tmp,
      PORT: '0',
      AGENT_METRICS_PORT: '0',
      ENV: envName,
      CONTAINERD_SOCKET: ctd.socket,
      CONTAINERD_NAMESPACE: namespace,
      CNI_CONF_DIR: confDir,
      CNI_CONF_FILE: confFile,
      CNI_BIN_DIR: CNI_BIN_DIR,
      CNI_NET_DIR: netDir,
      CNI_SUBNET: subnet,
      CNI_BRIDGE: bridge,
      AGENT_STATE_DIR: stateDir,
      CONTAINER_REGISTRY: `${registry.host}/esb-test`,
      // The harness registry is plain HTTP on loopback: it has to be listed (AGENT_ALLOWED_REGISTRIES
      // defaults to the CONTAINER_REGISTRY host already). Tests that start another registry add it.
      CONTAINER_REGISTRY_INSECURE: registry.host,
      ESB_TAG: 'v1',
      AGENT_GRPC_TLS_DISABLED: '1',
      AGENT_SHUTDOWN_GRACE_MS: '5000',
      AGENT_LOG_LEVEL: 'debug',
      // Listen-address settings of newer agents: workers must be refused even on 0.0.0.0.
      AGENT_GRPC_ADDRESS: '0.0.0.0',
      AGENT_METRICS_ADDRESS: '0.0.0.0',
      ...opts.env,
    };
    const containerd = new ContainerdClient({ socket: ctd.socket, namespace });
    const snapshotter = env['CONTAINERD_SNAPSHOTTER'] ?? 'overlayfs';
    cleanups.push(() => {
      containerd.close();
    });
    const stack: TestStack = Object.assign(new InProcessAgent(env, logs), {
      tmp,
      ctd,
      registry,
      images,
      envName,
      idPrefix: `esb-${envName}-`,
      namespace,
      bridge,
      subnet,
      networkName,
      netDir,
      stateDir,
      confFile,
      env,
      logs,
      containerd,
      snapshotter,
      firewallLeftovers: () => firewallLeftovers(bridge),
      leaks: () => findLeaks({ client: containerd, snapshotter, idPrefix: `esb-${envName}-`, bridge, netDir, networkName, stateDir }),
      async stop() {
        await stack.stopAgent();
        await runCleanups();
      },
    });
    cleanups.push(() => stack.stopAgent());
    if (opts.startAgent !== false) await stack.startAgent();
    return stack;
  } catch (err) {
    await runCleanups();
    throw err;
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export { leakCount };
