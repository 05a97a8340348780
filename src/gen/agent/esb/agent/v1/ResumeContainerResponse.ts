// Original file: proto/agent/agent.proto


export interface ResumeContainerResponse {
  'success'?: (boolean);
}

export interface ResumeContainerResponse__Output {
  'success': (boolean);
}
