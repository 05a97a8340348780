// Original file: proto/agent/agent.proto

import type { ContainerState as _esb_agent_v1_ContainerState, ContainerState__Output as _esb_agent_v1_ContainerState__Output } from '../../../esb/agent/v1/ContainerState.js';

export interface ListContainersResponse {
  'containers'?: (_esb_agent_v1_ContainerState)[];
}

export interface ListContainersResponse__Output {
  'containers': (_esb_agent_v1_ContainerState__Output)[];
}
