// Original file: proto/agent/agent.proto


export interface InvokeWorkerResponse {
  'status_code'?: (number);
  'headers'?: ({[key: string]: string});
  'body'?: (Buffer | Uint8Array | string);
}

export interface InvokeWorkerResponse__Output {
  'status_code': (number);
  'headers': ({[key: string]: string});
  'body': (Buffer);
}
