/**
 * The agent's Prometheus registry and every metric it exports. One object, created in main.ts
 * and handed to the modules that record. Names: `esb_agent_` prefix, base units, `_total` on
 * counters; labels are bounded (method, code, phase, kind, state) — never a container id.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const BYTES_BUCKETS = [256, 1024, 16 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024];

export class AgentMetrics {
  readonly registry = new Registry();

  readonly rpcTotal = new Counter({
    name: 'esb_agent_rpc_total',
    help: 'gRPC calls handled, by method and status code.',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });

  readonly rpcDuration = new Histogram({
    name: 'esb_agent_rpc_duration_seconds',
    help: 'gRPC call latency, by method and status code.',
    labelNames: ['method', 'code'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly workers = new Gauge({
    name: 'esb_agent_workers',
    help: 'Workers managed by this agent, by state.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });

  readonly coldStartPhase = new Histogram({
    name: 'esb_agent_cold_start_phase_duration_seconds',
    help: 'Duration of each EnsureContainer phase (pull, unpack, snapshot, netns, network, create, task_create, start; network runs alongside task_create).',
    labelNames: ['phase'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly pulls = new Counter({
    name: 'esb_agent_image_pulls_total',
    help: 'Image pulls from a registry, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly pulledBytes = new Counter({
    name: 'esb_agent_image_pulled_bytes_total',
    help: 'Bytes of image blobs downloaded from registries.',
    registers: [this.registry],
  });

  readonly pullsRunning = new Gauge({
    name: 'esb_agent_image_pulls_running',
    help: 'Image pulls and unpacks running now (at most AGENT_MAX_CONCURRENT_PULLS).',
    registers: [this.registry],
  });

  readonly pullsQueued = new Gauge({
    name: 'esb_agent_image_pulls_queued',
    help: 'Image pulls waiting for a slot.',
    registers: [this.registry],
  });

  readonly imageRefusals = new Counter({
    name: 'esb_agent_image_refusals_total',
    help: 'Pulls and imports refused by a bound, by reason (registry_not_allowed, busy, layers, layer_bytes, image_bytes).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly cniErrors = new Counter({
    name: 'esb_agent_cni_errors_total',
    help: 'Failed CNI plugin runs, by command (ADD, DEL, CHECK).',
    labelNames: ['command'] as const,
    registers: [this.registry],
  });

  readonly invokeDuration = new Histogram({
    name: 'esb_agent_invoke_duration_seconds',
    help: 'InvokeWorker latency including the readiness wait, by gRPC code.',
    labelNames: ['code'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly invokeRequestBytes = new Histogram({
    name: 'esb_agent_invoke_request_bytes',
    help: 'InvokeWorker payload sizes sent to workers.',
    buckets: BYTES_BUCKETS,
    registers: [this.registry],
  });

  readonly invokeResponseBytes = new Histogram({
    name: 'esb_agent_invoke_response_bytes',
    help: 'InvokeWorker response body sizes received from workers.',
    buckets: BYTES_BUCKETS,
    registers: [this.registry],
  });

  readonly reconcileRemoved = new Counter({
    name: 'esb_agent_reconcile_removed_total',
    help: 'Leftover objects of half-made workers removed by reconciliation (at start-up and after containerd came back), by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly workerFirewallInstalls = new Counter({
    name: 'esb_agent_worker_firewall_installs_total',
    help: 'Worker firewall chains (re)installed, by what was found before: missing (none of them) or partial (some removed or changed).',
    labelNames: ['found'] as const,
    registers: [this.registry],
  });

  readonly workerLogRotations = new Counter({
    name: 'esb_agent_worker_log_rotations_total',
    help: 'Worker log files rotated because they outgrew AGENT_WORKER_LOG_MAX_BYTES.',
    registers: [this.registry],
  });

  readonly idleDestroyed = new Counter({
    name: 'esb_agent_idle_destroyed_total',
    help: 'Workers destroyed by the idle sweep (AGENT_WORKER_IDLE_TTL_SECONDS).',
    registers: [this.registry],
  });

  readonly admissionRefused = new Counter({
    name: 'esb_agent_admission_refused_total',
    help: 'EnsureContainer calls refused with RESOURCE_EXHAUSTED by a host-wide limit (workers: AGENT_MAX_WORKERS, memory: AGENT_MAX_TOTAL_MEMORY_MB).',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  });

  #invokeConnections: () => number = () => 0;

  readonly invokeConnections = new Gauge({
    name: 'esb_agent_invoke_connections',
    help: 'Workers for which the invoke proxy holds a connection entry (one per invoked worker until the worker is removed).',
    registers: [this.registry],
    collect: () => {
      this.invokeConnections.set(this.#invokeConnections());
    },
  });

  /** Makes esb_agent_invoke_connections read `count` at every scrape. */
  countInvokeConnections(count: () => number): void {
    this.#invokeConnections = count;
  }
  readonly grpcInFlight = new Gauge({
    name: 'esb_agent_grpc_in_flight',
    help: 'gRPC calls being handled now and counted against AGENT_GRPC_MAX_IN_FLIGHT (health checks are not counted).',
    registers: [this.registry],
  });

  readonly grpcRefused = new Counter({
    name: 'esb_agent_grpc_refused_total',
    help: 'gRPC calls refused before their handler ran, by reason: client_not_allowed (AGENT_GRPC_ALLOWED_CLIENTS, PERMISSION_DENIED) or in_flight_limit (AGENT_GRPC_MAX_IN_FLIGHT, RESOURCE_EXHAUSTED).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly invokeQueued = new Gauge({
    name: 'esb_agent_invoke_queued',
    help: 'InvokeWorker calls waiting behind the running one on their worker, over all workers.',
    registers: [this.registry],
  });

  readonly invokeQueueFull = new Counter({
    name: 'esb_agent_invoke_queue_full_total',
    help: 'InvokeWorker calls refused with RESOURCE_EXHAUSTED because their worker already had AGENT_INVOKE_MAX_QUEUE calls waiting.',
    registers: [this.registry],
  });

  /** Records one EnsureContainer phase that began at `t0` (performance.now()). */
  observePhase(phase: string, t0: number): void {
    this.coldStartPhase.observe({ phase }, (performance.now() - t0) / 1000);
  }

  constructor({ defaultMetrics = true }: { defaultMetrics?: boolean } = {}) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
