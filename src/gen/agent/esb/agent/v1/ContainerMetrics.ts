// Original file: proto/agent/agent.proto

import type { Long } from '@grpc/proto-loader';

export interface ContainerMetrics {
  'container_id'?: (string);
  'function_name'?: (string);
  'container_name'?: (string);
  'state'?: (string);
  'memory_current'?: (number | string | Long);
  'memory_max'?: (number | string | Long);
  'oom_events'?: (number | string | Long);
  'cpu_usage_ns'?: (number | string | Long);
  'exit_code'?: (number);
  'restart_count'?: (number);
  'exit_time'?: (number | string | Long);
  'collected_at'?: (number | string | Long);
}

export interface ContainerMetrics__Output {
  'container_id': (string);
  'function_name': (string);
  'container_name': (string);
  'state': (string);
  'memory_current': (string);
  'memory_max': (string);
  'oom_events': (string);
  'cpu_usage_ns': (string);
  'exit_code': (number);
  'restart_count': (number);
  'exit_time': (string);
  'collected_at': (string);
}
