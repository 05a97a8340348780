// Original file: proto/agent/agent.proto


export interface ListContainersRequest {
  'owner_id'?: (string);
}

export interface ListContainersRequest__Output {
  'owner_id': (string);
}
