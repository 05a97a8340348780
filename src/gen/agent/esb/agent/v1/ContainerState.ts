// Original file: proto/agent/agent.proto

import type { Long } from '@grpc/proto-loader';

export interface ContainerState {
  'container_id'?: (string);
  'function_name'?: (string);
  'status'?: (string);
  'last_used_at'?: (number | string | Long);
  'container_name'?: (string);
  'created_at'?: (number | string | Long);
  'owner_id'?: (string);
}

export interface ContainerState__Output {
  'container_id': (string);
  'function_name': (string);
  'status': (string);
  'last_used_at': (string);
  'container_name': (string);
  'created_at': (string);
  'owner_id': (string);
}
