/**
 * The agent's reply messages as tests receive them (proto-loader output types, generated from
 * proto/agent/agent.proto): one definition instead of a hand-copied interface per test file.
 */
export type { WorkerInfo__Output as WorkerReply } from '../../src/gen/agent/esb/agent/v1/WorkerInfo.js';
export type { ContainerState__Output as ContainerStateReply } from '../../src/gen/agent/esb/agent/v1/ContainerState.js';
export type { InvokeWorkerResponse__Output as InvokeReply } from '../../src/gen/agent/esb/agent/v1/InvokeWorkerResponse.js';
export type { ContainerMetrics__Output as ContainerMetricsReply } from '../../src/gen/agent/esb/agent/v1/ContainerMetrics.js';
