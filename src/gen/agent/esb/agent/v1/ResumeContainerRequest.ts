// Original file: proto/agent/agent.proto


export interface ResumeContainerRequest {
  'container_id'?: (string);
  'owner_id'?: (string);
}

export interface ResumeContainerRequest__Output {
  'container_id': (string);
  'owner_id': (string);
}
