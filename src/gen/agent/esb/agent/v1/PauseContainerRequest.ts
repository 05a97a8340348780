// Original file: proto/agent/agent.proto


export interface PauseContainerRequest {
  'container_id'?: (string);
  'owner_id'?: (string);
}

export interface PauseContainerRequest__Output {
  'container_id': (string);
  'owner_id': (string);
}
