// Original file: proto/agent/agent.proto


export interface InvokeWorkerRequest {
  'path'?: (string);
  'payload'?: (Buffer | Uint8Array | string);
  'headers'?: ({[key: string]: string});
  'timeout_ms'?: (number);
  'container_id'?: (string);
  'owner_id'?: (string);
}

export interface InvokeWorkerRequest__Output {
  'path': (string);
  'payload': (Buffer);
  'headers': ({[key: string]: string});
  'timeout_ms': (number);
  'container_id': (string);
  'owner_id': (string);
}
