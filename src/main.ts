/**
 * Composition root: the only module that reads `process.env`, picks concrete classes and owns
 * the process (signals, exit codes). `startAgent` builds and starts everything and returns a
 * handle, so tests can run the agent in-process; `main` adds signals and exit codes.
 *
 * Exit codes: 0 after a clean SIGTERM/SIGINT shutdown; 2 for invalid configuration (the message
 * names the variable); 1 when start-up or shutdown fails.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { DestinationStream } from 'pino';
import { createAgentServer, loadTlsMaterial } from './api/server.js';
import { createMetricsServer } from './api/metrics-http.js';
import type { Invoker } from './api/service.js';
import { WorkerProxy } from './proxy/invoke.js';
import { loadConfig, type Config } from './config/config.js';
import { ConfigError, type Env } from './config/parse.js';
import { errorText } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { AgentMetrics } from './metrics.js';
import { createRuntime } from './runtime/index.js';
import { IdleSweeper } from './runtime/idle-sweep.js';
import type { Runtime } from './runtime/runtime.js';

/**
 * Bound on destroying every worker at shutdown (AGENT_SHUTDOWN_POLICY=destroy). With the default
 * 30 s grace it keeps the whole stop inside systemd's default 90 s stop timeout.
 */
export const DESTROY_ALL_TIMEOUT_MS = 50_000;

export interface StartAgentOptions {
  /** Where log lines go; default stdout. */
  readonly logDestination?: DestinationStream | undefined;
  /** A runtime to use instead of the one AGENT_RUNTIME names (tests). */
  readonly runtime?: Runtime | undefined;
  /** The InvokeWorker proxy; default: the undici proxy of src/proxy/invoke.ts. */
  readonly invoker?: Invoker | undefined;
  /** Health poll interval in ms (tests); default 2 s. */
  readonly healthPollMs?: number | undefined;
}

/** A started agent. */
export interface RunningAgent {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** The bound gRPC port (PORT, or the ephemeral one when PORT=0). */
  readonly grpcPort: number;
  /** The bound /metrics port (AGENT_METRICS_PORT, or ephemeral when 0). */
  readonly metricsPort: number;
  /**
   * Graceful stop: health NOT_SERVING, refuse new RPCs, drain in-flight ones within
   * AGENT_SHUTDOWN_GRACE_MS, close /metrics, destroy every worker when
   * AGENT_SHUTDOWN_POLICY=destroy, close the runtime. Idempotent. Rejects if destroying or
   * closing failed (after doing everything it could).
   */
  stop(): Promise<void>;
}

function createRootLogger(config: Config, destination: DestinationStream | undefined): Logger {
  try {
    return createLogger({ level: config.logLevel, format: config.logFormat, ...(destination ? { destination } : {}) });
  } catch (err) {
    // The only way this fails is the pretty format without pino-pretty installed.
    throw new ConfigError('AGENT_LOG_FORMAT', `${config.logFormat} is not usable here (${errorText(err)}); use json`);
  }
}

/**
 * Loads the configuration from `env`, builds logger, metrics, runtime, gRPC and /metrics
 * servers, starts the runtime, then listens. Throws ConfigError for invalid configuration
 * (before touching the backend), or an Error when the runtime or a listener cannot start; on
 * failure nothing is left running.
 */
export async function startAgent(env: Env, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  const config = loadConfig(env);
  // TLS files are configuration: check them before anything else starts.
  const tls = config.tls ? loadTlsMaterial(config.tls) : undefined;
  const log = createRootLogger(config, opts.logDestination);
  const metrics = new AgentMetrics();
  const runtime = opts.runtime ?? createRuntime(config, { log, metrics });
  const invoker =
    opts.invoker ??
    new WorkerProxy({
      maxResponseBytes: config.invoke.maxResponseBytes,
      defaultTimeoutMs: config.invoke.defaultTimeoutMs,
      maxQueue: config.invoke.maxQueue,
      log,
      metrics,
    });
  if (invoker instanceof WorkerProxy) metrics.countInvokeConnections(() => invoker.connections);
  // Whatever removes a worker (Destroy, idle sweep, reconciliation, a resync), its invoke
  // connection goes with it: the proxy's per-worker entries must never outlive the workers.
  runtime.onWorkerRemoved((id) => {
    void invoker.closeWorker?.(id).catch((err: unknown) => {
      log.warn({ id, err: errorText(err) }, 'could not close the invoke connection of a removed worker');
    });
  });
  const server = createAgentServer({
    config,
    runtime,
    invoker,
    log,
    metrics,
    tls,
    ...(opts.healthPollMs === undefined ? {} : { healthPollMs: opts.healthPollMs }),
  });
  const metricsServer = createMetricsServer({ registry: metrics.registry, host: config.metricsAddress, port: config.metricsPort, log });

  try {
    await runtime.start();
  } catch (err) {
    log.fatal({ err, runtime: runtime.kind }, 'runtime failed to start');
    await runtime.close().catch(() => undefined);
    throw new Error(`the ${runtime.kind} runtime failed to start: ${errorText(err)}`, { cause: err });
  }

  let grpcPort: number;
  let metricsPort: number;
  try {
    grpcPort = await server.listen();
    metricsPort = await metricsServer.listen();
  } catch (err) {
    log.fatal({ err }, 'cannot listen');
    await server.shutdown(0);
    await metricsServer.close();
    await runtime.close().catch(() => undefined);
    throw err;
  }
  const idleSweeper = new IdleSweeper({ runtime, ttlSeconds: config.workerIdleTtlSeconds, log, metrics });
  idleSweeper.start();
  log.info(
    {
      grpcAddress: config.grpcAddress,
      grpcPort,
      metricsAddress: config.metricsAddress,
      metricsPort,
      runtime: runtime.kind,
      tls: config.tls !== undefined,
      allowedClients: config.allowedClients.length,
      reflection: config.reflection,
      healthy: server.health.serving,
    },
    'esb-agent serving',
  );

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    log.info({ shutdownPolicy: config.shutdownPolicy, graceMs: config.shutdownGraceMs }, 'esb-agent shutting down');
    await server.shutdown();
    await metricsServer.close();
    await idleSweeper.stop();
    const failures: unknown[] = [];
    if (config.shutdownPolicy === 'destroy') {
      try {
        await runtime.destroyAll({ signal: AbortSignal.timeout(DESTROY_ALL_TIMEOUT_MS) });
        log.info('destroyed every worker (AGENT_SHUTDOWN_POLICY=destroy)');
      } catch (err) {
        log.error({ err }, 'destroying the workers failed');
        failures.push(err);
      }
    }
    try {
      await invoker.close?.();
    } catch (err) {
      log.error({ err }, 'closing the invoker failed');
      failures.push(err);
    }
    try {
      await runtime.close();
    } catch (err) {
      log.error({ err }, 'closing the runtime failed');
      failures.push(err);
    }
    log.info('esb-agent stopped');
    if (failures.length > 0) throw new AggregateError(failures, 'esb-agent did not stop cleanly');
  };

  return {
    config,
    log,
    metrics,
    grpcPort,
    metricsPort,
    stop: () => (stopping ??= stop()),
  };
}

/**
 * How a failed start-up ends the process: 2 and the variable for invalid configuration, 1 for
 * anything else; `line` is the one stderr line (newline included).
 */
export function startupExit(err: unknown): { code: 1 | 2; line: string } {
  if (err instanceof ConfigError) return { code: 2, line: `esb-agent: invalid configuration: ${err.message}\n` };
  return { code: 1, line: `esb-agent: start-up failed: ${errorText(err)}\n` };
}

/**
 * Runs the agent as a process: start, then wait for SIGTERM/SIGINT and stop. Never returns; it
 * exits with the codes in the module comment. A second signal during shutdown exits at once (1).
 */
export async function main(env: Env = process.env, opts: StartAgentOptions = {}): Promise<never> {
  // The logger exists only once the configuration is loaded; until then, stderr.
  const current: { log?: Logger } = {};
  const report = (level: 'error' | 'fatal', err: unknown, msg: string): void => {
    if (current.log) current.log[level]({ err }, msg);
    else process.stderr.write(`esb-agent: ${msg}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  };
  // grpc-js and our own code must never crash the process through a forgotten promise: log it.
  process.on('unhandledRejection', (reason) => {
    report('error', reason, 'unhandled promise rejection');
  });
  // A synchronous throw nobody caught leaves state unknown: log it and exit for systemd to restart us.
  process.on('uncaughtException', (err) => {
    report('fatal', err, 'uncaught exception');
    process.exit(1);
  });

  let agent: RunningAgent;
  try {
    agent = await startAgent(env, opts);
  } catch (err) {
    const exit = startupExit(err);
    process.stderr.write(exit.line);
    process.exit(exit.code);
  }
  current.log = agent.log;

  return new Promise<never>(() => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) {
        agent.log.warn({ signal }, 'second signal during shutdown: exiting now');
        process.exit(1);
      }
      signalled = true;
      agent.log.info({ signal }, 'signal received');
      agent.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          agent.log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

/** True when this file is the process's entry point (`node --import tsx src/main.ts`). */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(path.resolve(entry))).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) void main();
