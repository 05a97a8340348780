// Original file: proto/agent/agent.proto


export interface PauseContainerResponse {
  'success'?: (boolean);
}

export interface PauseContainerResponse__Output {
  'success': (boolean);
}
