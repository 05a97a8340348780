/**
 * The docker twin of stack.ts: a private dockerd with its test network (dockerd.ts), a real
 * registry with the test images pushed, and an in-process agent with AGENT_RUNTIME=docker (TLS
 * off) plus a gRPC client. `stop()` removes everything: workers, network, bridge, daemon,
 * registry, temp dirs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { RunningAgent } from '../../src/main.js';
import type { AgentMethod, AgentServiceClient } from '../helpers/grpc.js';
import { InProcessAgent } from './in-process-agent.js';
import { LogCapture } from '../helpers/logs.js';
import { dockerLeakCount, findDockerLeaks, startDockerd, type DockerdInstance, type DockerLeakReport } from './dockerd.js';
import { pushTestImages, type PushedTestImages } from './images.js';
import { startRegistry, type RegistryInstance } from './registry.js';
import { firewallLeftovers, removeFirewall } from './firewall.js';

export interface DockerStackOptions {
  /** Extra agent environment (overrides the stack's). */
  readonly env?: Record<string, string>;
  /** Start the agent right away (default true). */
  readonly startAgent?: boolean;
}

export interface DockerTestStack {
  readonly tmp: string;
  readonly dockerd: DockerdInstance;
  readonly registry: RegistryInstance;
  readonly images: PushedTestImages;
  /** Unique ENV label: worker ids start with `esb-<envName>-`. */
  readonly envName: string;
  readonly idPrefix: string;
  readonly subnet: string;
  readonly env: Record<string, string>;
  readonly logs: LogCapture;
  agent: RunningAgent | undefined;
  client: AgentServiceClient | undefined;
  startAgent(extraEnv?: Record<string, string>): Promise<void>;
  /** Stops the in-process agent (workers stay, per the default keep policy). */
  stopAgent(): Promise<void>;
  call<Res = Record<string, unknown>>(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<Res>;
  callError(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<{ name: string; details: string }>;
  leaks(): Promise<DockerLeakReport>;
  /** The agent's firewall chains and jumps for the test network's bridge. */
  firewallLeftovers(): string[];
  stop(): Promise<void>;
}

/** Starts the whole stack. Register `t.after(() => stack.stop())` right after. */
export async function startDockerStack(opts: DockerStackOptions = {}): Promise<DockerTestStack> {
  const tag = randomBytes(3).toString('hex');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'esb-dstack-'));
  const envName = `d${tag}`;
  const logs = new LogCapture();
  const cleanups: (() => Promise<void> | void)[] = [
    () => {
      rmSync(tmp, { recursive: true, force: true });
    },
  ];
  const runCleanups = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error('docker stack cleanup step failed:', err);
      }
    }
    cleanups.length = 0;
  };
  try {
    const dockerd = await startDockerd();
    cleanups.push(() => dockerd.stop());
    // The agent keeps its worker firewall across restarts on purpose; the stack must not.
    cleanups.push(() => {
      removeFirewall(dockerd.network.bridge);
      const left = firewallLeftovers(dockerd.network.bridge);
      if (left.length > 0) console.error(`docker stack ${dockerd.network.bridge}: firewall rules left behind:\n${left.join('\n')}`);
    });
    const registry = await startRegistry();
    cleanups.push(() => registry.stop());
    const images = await pushTestImages(registry);
    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: tmp,
      PORT: '0',
      AGENT_METRICS_PORT: '0',
      AGENT_RUNTIME: 'docker',
      ENV: envName,
      DOCKER_HOST: dockerd.host,
      CONTAINERS_NETWORK: dockerd.network.name,
      AGENT_STATE_DIR: path.join(tmp, 'state'),
      CONTAINER_REGISTRY: `${registry.host}/esb-test`,
      // AGENT_ALLOWED_REGISTRIES defaults to the CONTAINER_REGISTRY host; tests that start
      // another registry add it. Plain HTTP is dockerd's business here (loopback is insecure there).
      ESB_TAG: 'v1',
      AGENT_GRPC_TLS_DISABLED: '1',
      AGENT_SHUTDOWN_GRACE_MS: '5000',
      AGENT_LOG_LEVEL: 'debug',
      AGENT_GRPC_ADDRESS: '0.0.0.0',
      AGENT_METRICS_ADDRESS: '0.0.0.0',
      ...opts.env,
    };
    const stack: DockerTestStack = Object.assign(new InProcessAgent(env, logs), {
      tmp,
      dockerd,
      registry,
      images,
      envName,
      idPrefix: `esb-${envName}-`,
      subnet: dockerd.network.subnet,
      env,
      logs,
      leaks: () => findDockerLeaks(dockerd, envName),
      firewallLeftovers: () => firewallLeftovers(dockerd.network.bridge),
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

export { dockerLeakCount };
