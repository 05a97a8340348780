// Original file: proto/agent/agent.proto


export interface DestroyContainerResponse {
  'success'?: (boolean);
}

export interface DestroyContainerResponse__Output {
  'success': (boolean);
}
