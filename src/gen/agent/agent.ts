import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { AgentServiceClient as _esb_agent_v1_AgentServiceClient, AgentServiceDefinition as _esb_agent_v1_AgentServiceDefinition } from './esb/agent/v1/AgentService.js';
import type { ContainerMetrics as _esb_agent_v1_ContainerMetrics, ContainerMetrics__Output as _esb_agent_v1_ContainerMetrics__Output } from './esb/agent/v1/ContainerMetrics.js';
import type { ContainerState as _esb_agent_v1_ContainerState, ContainerState__Output as _esb_agent_v1_ContainerState__Output } from './esb/agent/v1/ContainerState.js';
import type { DestroyContainerRequest as _esb_agent_v1_DestroyContainerRequest, DestroyContainerRequest__Output as _esb_agent_v1_DestroyContainerRequest__Output } from './esb/agent/v1/DestroyContainerRequest.js';
import type { DestroyContainerResponse as _esb_agent_v1_DestroyContainerResponse, DestroyContainerResponse__Output as _esb_agent_v1_DestroyContainerResponse__Output } from './esb/agent/v1/DestroyContainerResponse.js';
import type { EnsureContainerRequest as _esb_agent_v1_EnsureContainerRequest, EnsureContainerRequest__Output as _esb_agent_v1_EnsureContainerRequest__Output } from './esb/agent/v1/EnsureContainerRequest.js';
import type { GetContainerMetricsRequest as _esb_agent_v1_GetContainerMetricsRequest, GetContainerMetricsRequest__Output as _esb_agent_v1_GetContainerMetricsRequest__Output } from './esb/agent/v1/GetContainerMetricsRequest.js';
import type { GetContainerMetricsResponse as _esb_agent_v1_GetContainerMetricsResponse, GetContainerMetricsResponse__Output as _esb_agent_v1_GetContainerMetricsResponse__Output } from './esb/agent/v1/GetContainerMetricsResponse.js';
import type { InvokeWorkerRequest as _esb_agent_v1_InvokeWorkerRequest, InvokeWorkerRequest__Output as _esb_agent_v1_InvokeWorkerRequest__Output } from './esb/agent/v1/InvokeWorkerRequest.js';
import type { InvokeWorkerResponse as _esb_agent_v1_InvokeWorkerResponse, InvokeWorkerResponse__Output as _esb_agent_v1_InvokeWorkerResponse__Output } from './esb/agent/v1/InvokeWorkerResponse.js';
import type { ListContainersRequest as _esb_agent_v1_ListContainersRequest, ListContainersRequest__Output as _esb_agent_v1_ListContainersRequest__Output } from './esb/agent/v1/ListContainersRequest.js';
import type { ListContainersResponse as _esb_agent_v1_ListContainersResponse, ListContainersResponse__Output as _esb_agent_v1_ListContainersResponse__Output } from './esb/agent/v1/ListContainersResponse.js';
import type { PauseContainerRequest as _esb_agent_v1_PauseContainerRequest, PauseContainerRequest__Output as _esb_agent_v1_PauseContainerRequest__Output } from './esb/agent/v1/PauseContainerRequest.js';
import type { PauseContainerResponse as _esb_agent_v1_PauseContainerResponse, PauseContainerResponse__Output as _esb_agent_v1_PauseContainerResponse__Output } from './esb/agent/v1/PauseContainerResponse.js';
import type { ResumeContainerRequest as _esb_agent_v1_ResumeContainerRequest, ResumeContainerRequest__Output as _esb_agent_v1_ResumeContainerRequest__Output } from './esb/agent/v1/ResumeContainerRequest.js';
import type { ResumeContainerResponse as _esb_agent_v1_ResumeContainerResponse, ResumeContainerResponse__Output as _esb_agent_v1_ResumeContainerResponse__Output } from './esb/agent/v1/ResumeContainerResponse.js';
import type { WorkerInfo as _esb_agent_v1_WorkerInfo, WorkerInfo__Output as _esb_agent_v1_WorkerInfo__Output } from './esb/agent/v1/WorkerInfo.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  esb: {
    agent: {
      v1: {
        AgentService: SubtypeConstructor<typeof grpc.Client, _esb_agent_v1_AgentServiceClient> & { service: _esb_agent_v1_AgentServiceDefinition }
        ContainerMetrics: MessageTypeDefinition<_esb_agent_v1_ContainerMetrics, _esb_agent_v1_ContainerMetrics__Output>
        ContainerState: MessageTypeDefinition<_esb_agent_v1_ContainerState, _esb_agent_v1_ContainerState__Output>
        DestroyContainerRequest: MessageTypeDefinition<_esb_agent_v1_DestroyContainerRequest, _esb_agent_v1_DestroyContainerRequest__Output>
        DestroyContainerResponse: MessageTypeDefinition<_esb_agent_v1_DestroyContainerResponse, _esb_agent_v1_DestroyContainerResponse__Output>
        EnsureContainerRequest: MessageTypeDefinition<_esb_agent_v1_EnsureContainerRequest, _esb_agent_v1_EnsureContainerRequest__Output>
        GetContainerMetricsRequest: MessageTypeDefinition<_esb_agent_v1_GetContainerMetricsRequest, _esb_agent_v1_GetContainerMetricsRequest__Output>
        GetContainerMetricsResponse: MessageTypeDefinition<_esb_agent_v1_GetContainerMetricsResponse, _esb_agent_v1_GetContainerMetricsResponse__Output>
        InvokeWorkerRequest: MessageTypeDefinition<_esb_agent_v1_InvokeWorkerRequest, _esb_agent_v1_InvokeWorkerRequest__Output>
        InvokeWorkerResponse: MessageTypeDefinition<_esb_agent_v1_InvokeWorkerResponse, _esb_agent_v1_InvokeWorkerResponse__Output>
        ListContainersRequest: MessageTypeDefinition<_esb_agent_v1_ListContainersRequest, _esb_agent_v1_ListContainersRequest__Output>
        ListContainersResponse: MessageTypeDefinition<_esb_agent_v1_ListContainersResponse, _esb_agent_v1_ListContainersResponse__Output>
        PauseContainerRequest: MessageTypeDefinition<_esb_agent_v1_PauseContainerRequest, _esb_agent_v1_PauseContainerRequest__Output>
        PauseContainerResponse: MessageTypeDefinition<_esb_agent_v1_PauseContainerResponse, _esb_agent_v1_PauseContainerResponse__Output>
        ResumeContainerRequest: MessageTypeDefinition<_esb_agent_v1_ResumeContainerRequest, _esb_agent_v1_ResumeContainerRequest__Output>
        ResumeContainerResponse: MessageTypeDefinition<_esb_agent_v1_ResumeContainerResponse, _esb_agent_v1_ResumeContainerResponse__Output>
        WorkerInfo: MessageTypeDefinition<_esb_agent_v1_WorkerInfo, _esb_agent_v1_WorkerInfo__Output>
      }
    }
  }
}

