// Original file: proto/agent/agent.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { DestroyContainerRequest as _esb_agent_v1_DestroyContainerRequest, DestroyContainerRequest__Output as _esb_agent_v1_DestroyContainerRequest__Output } from '../../../esb/agent/v1/DestroyContainerRequest.js';
import type { DestroyContainerResponse as _esb_agent_v1_DestroyContainerResponse, DestroyContainerResponse__Output as _esb_agent_v1_DestroyContainerResponse__Output } from '../../../esb/agent/v1/DestroyContainerResponse.js';
import type { EnsureContainerRequest as _esb_agent_v1_EnsureContainerRequest, EnsureContainerRequest__Output as _esb_agent_v1_EnsureContainerRequest__Output } from '../../../esb/agent/v1/EnsureContainerRequest.js';
import type { GetContainerMetricsRequest as _esb_agent_v1_GetContainerMetricsRequest, GetContainerMetricsRequest__Output as _esb_agent_v1_GetContainerMetricsRequest__Output } from '../../../esb/agent/v1/GetContainerMetricsRequest.js';
import type { GetContainerMetricsResponse as _esb_agent_v1_GetContainerMetricsResponse, GetContainerMetricsResponse__Output as _esb_agent_v1_GetContainerMetricsResponse__Output } from '../../../esb/agent/v1/GetContainerMetricsResponse.js';
import type { InvokeWorkerRequest as _esb_agent_v1_InvokeWorkerRequest, InvokeWorkerRequest__Output as _esb_agent_v1_InvokeWorkerRequest__Output } from '../../../esb/agent/v1/InvokeWorkerRequest.js';
import type { InvokeWorkerResponse as _esb_agent_v1_InvokeWorkerResponse, InvokeWorkerResponse__Output as _esb_agent_v1_InvokeWorkerResponse__Output } from '../../../esb/agent/v1/InvokeWorkerResponse.js';
import type { ListContainersRequest as _esb_agent_v1_ListContainersRequest, ListContainersRequest__Output as _esb_agent_v1_ListContainersRequest__Output } from '../../../esb/agent/v1/ListContainersRequest.js';
import type { ListContainersResponse as _esb_agent_v1_ListContainersResponse, ListContainersResponse__Output as _esb_agent_v1_ListContainersResponse__Output } from '../../../esb/agent/v1/ListContainersResponse.js';
import type { PauseContainerRequest as _esb_agent_v1_PauseContainerRequest, PauseContainerRequest__Output as _esb_agent_v1_PauseContainerRequest__Output } from '../../../esb/agent/v1/PauseContainerRequest.js';
import type { PauseContainerResponse as _esb_agent_v1_PauseContainerResponse, PauseContainerResponse__Output as _esb_agent_v1_PauseContainerResponse__Output } from '../../../esb/agent/v1/PauseContainerResponse.js';
import type { ResumeContainerRequest as _esb_agent_v1_ResumeContainerRequest, ResumeContainerRequest__Output as _esb_agent_v1_ResumeContainerRequest__Output } from '../../../esb/agent/v1/ResumeContainerRequest.js';
import type { ResumeContainerResponse as _esb_agent_v1_ResumeContainerResponse, ResumeContainerResponse__Output as _esb_agent_v1_ResumeContainerResponse__Output } from '../../../esb/agent/v1/ResumeContainerResponse.js';
import type { WorkerInfo as _esb_agent_v1_WorkerInfo, WorkerInfo__Output as _esb_agent_v1_WorkerInfo__Output } from '../../../esb/agent/v1/WorkerInfo.js';

export interface AgentServiceClient extends grpc.Client {
  DestroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  DestroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  DestroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  DestroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  destroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  destroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  destroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  destroyContainer(argument: _esb_agent_v1_DestroyContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_DestroyContainerResponse__Output>): grpc.ClientUnaryCall;
  
  EnsureContainer(argument: _esb_agent_v1_EnsureContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  EnsureContainer(argument: _esb_agent_v1_EnsureContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  EnsureContainer(argument: _esb_agent_v1_EnsureContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  EnsureContainer(argument: _esb_agent_v1_EnsureContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  ensureContainer(argument: _esb_agent_v1_EnsureContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  ensureContainer(argument: _esb_agent_v1_EnsureContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  ensureContainer(argument: _esb_agent_v1_EnsureContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  ensureContainer(argument: _esb_agent_v1_EnsureContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_WorkerInfo__Output>): grpc.ClientUnaryCall;
  
  GetContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  GetContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  GetContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  GetContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  getContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  getContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  getContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  getContainerMetrics(argument: _esb_agent_v1_GetContainerMetricsRequest, callback: grpc.requestCallback<_esb_agent_v1_GetContainerMetricsResponse__Output>): grpc.ClientUnaryCall;
  
  InvokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  InvokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  InvokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  InvokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  invokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  invokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  invokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  invokeWorker(argument: _esb_agent_v1_InvokeWorkerRequest, callback: grpc.requestCallback<_esb_agent_v1_InvokeWorkerResponse__Output>): grpc.ClientUnaryCall;
  
  ListContainers(argument: _esb_agent_v1_ListContainersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  ListContainers(argument: _esb_agent_v1_ListContainersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  ListContainers(argument: _esb_agent_v1_ListContainersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  ListContainers(argument: _esb_agent_v1_ListContainersRequest, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  listContainers(argument: _esb_agent_v1_ListContainersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  listContainers(argument: _esb_agent_v1_ListContainersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  listContainers(argument: _esb_agent_v1_ListContainersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  listContainers(argument: _esb_agent_v1_ListContainersRequest, callback: grpc.requestCallback<_esb_agent_v1_ListContainersResponse__Output>): grpc.ClientUnaryCall;
  
  PauseContainer(argument: _esb_agent_v1_PauseContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  PauseContainer(argument: _esb_agent_v1_PauseContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  PauseContainer(argument: _esb_agent_v1_PauseContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  PauseContainer(argument: _esb_agent_v1_PauseContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  pauseContainer(argument: _esb_agent_v1_PauseContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  pauseContainer(argument: _esb_agent_v1_PauseContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  pauseContainer(argument: _esb_agent_v1_PauseContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  pauseContainer(argument: _esb_agent_v1_PauseContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_PauseContainerResponse__Output>): grpc.ClientUnaryCall;
  
  ResumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  ResumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  ResumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  ResumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  resumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  resumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  resumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  resumeContainer(argument: _esb_agent_v1_ResumeContainerRequest, callback: grpc.requestCallback<_esb_agent_v1_ResumeContainerResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface AgentServiceHandlers extends grpc.UntypedServiceImplementation {
  DestroyContainer: grpc.handleUnaryCall<_esb_agent_v1_DestroyContainerRequest__Output, _esb_agent_v1_DestroyContainerResponse>;
  
  EnsureContainer: grpc.handleUnaryCall<_esb_agent_v1_EnsureContainerRequest__Output, _esb_agent_v1_WorkerInfo>;
  
  GetContainerMetrics: grpc.handleUnaryCall<_esb_agent_v1_GetContainerMetricsRequest__Output, _esb_agent_v1_GetContainerMetricsResponse>;
  
  InvokeWorker: grpc.handleUnaryCall<_esb_agent_v1_InvokeWorkerRequest__Output, _esb_agent_v1_InvokeWorkerResponse>;
  
  ListContainers: grpc.handleUnaryCall<_esb_agent_v1_ListContainersRequest__Output, _esb_agent_v1_ListContainersResponse>;
  
  PauseContainer: grpc.handleUnaryCall<_esb_agent_v1_PauseContainerRequest__Output, _esb_agent_v1_PauseContainerResponse>;
  
  ResumeContainer: grpc.handleUnaryCall<_esb_agent_v1_ResumeContainerRequest__Output, _esb_agent_v1_ResumeContainerResponse>;
  
}

export interface AgentServiceDefinition extends grpc.ServiceDefinition {
  DestroyContainer: MethodDefinition<_esb_agent_v1_DestroyContainerRequest, _esb_agent_v1_DestroyContainerResponse, _esb_agent_v1_DestroyContainerRequest__Output, _esb_agent_v1_DestroyContainerResponse__Output>
  EnsureContainer: MethodDefinition<_esb_agent_v1_EnsureContainerRequest, _esb_agent_v1_WorkerInfo, _esb_agent_v1_EnsureContainerRequest__Output, _esb_agent_v1_WorkerInfo__Output>
  GetContainerMetrics: MethodDefinition<_esb_agent_v1_GetContainerMetricsRequest, _esb_agent_v1_GetContainerMetricsResponse, _esb_agent_v1_GetContainerMetricsRequest__Output, _esb_agent_v1_GetContainerMetricsResponse__Output>
  InvokeWorker: MethodDefinition<_esb_agent_v1_InvokeWorkerRequest, _esb_agent_v1_InvokeWorkerResponse, _esb_agent_v1_InvokeWorkerRequest__Output, _esb_agent_v1_InvokeWorkerResponse__Output>
  ListContainers: MethodDefinition<_esb_agent_v1_ListContainersRequest, _esb_agent_v1_ListContainersResponse, _esb_agent_v1_ListContainersRequest__Output, _esb_agent_v1_ListContainersResponse__Output>
  PauseContainer: MethodDefinition<_esb_agent_v1_PauseContainerRequest, _esb_agent_v1_PauseContainerResponse, _esb_agent_v1_PauseContainerRequest__Output, _esb_agent_v1_PauseContainerResponse__Output>
  ResumeContainer: MethodDefinition<_esb_agent_v1_ResumeContainerRequest, _esb_agent_v1_ResumeContainerResponse, _esb_agent_v1_ResumeContainerRequest__Output, _esb_agent_v1_ResumeContainerResponse__Output>
}
