/**
 * The agent run in the test process (TLS off, ephemeral ports) with a gRPC client: what every
 * test stack (containerd, docker) offers its tests. Restartable: stop, then start again.
 */
import * as grpc from '@grpc/grpc-js';
import { startAgent, type RunningAgent } from '../../src/main.js';
import { agentClient, unaryCall, type AgentMethod, type AgentServiceClient } from '../helpers/grpc.js';
import type { LogCapture } from '../helpers/logs.js';

export class InProcessAgent {
  agent: RunningAgent | undefined;
  client: AgentServiceClient | undefined;
  readonly #env: Record<string, string>;
  readonly #logs: LogCapture;

  constructor(env: Record<string, string>, logs: LogCapture) {
    this.#env = env;
    this.#logs = logs;
  }

  /** Starts (or restarts) the agent and connects the client. */
  async startAgent(extraEnv: Record<string, string> = {}): Promise<void> {
    if (this.agent) throw new Error('agent already running');
    this.agent = await startAgent({ ...this.#env, ...extraEnv }, { logDestination: this.#logs, healthPollMs: 200 });
    this.client = agentClient(`127.0.0.1:${this.agent.grpcPort}`, grpc.credentials.createInsecure());
  }

  /** Stops the agent (workers stay, per the default keep policy). */
  async stopAgent(): Promise<void> {
    this.client?.close();
    this.client = undefined;
    const a = this.agent;
    this.agent = undefined;
    await a?.stop();
  }

  call<Res = Record<string, unknown>>(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<Res> {
    if (!this.client) throw new Error('agent not started');
    return unaryCall(this.client, method, req, opts);
  }

  /** The gRPC error of a call that must fail: { code name, details }. */
  async callError(method: AgentMethod, req: object, opts?: { deadlineMs?: number }): Promise<{ name: string; details: string }> {
    try {
      await this.call(method, req, opts);
    } catch (err) {
      const e = err as grpc.ServiceError;
      return { name: grpc.status[e.code], details: e.details };
    }
    throw new Error(`${method} succeeded but was expected to fail`);
  }
}
