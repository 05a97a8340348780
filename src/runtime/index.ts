/**
 * Picks the runtime named by AGENT_RUNTIME. The one place that knows the concrete classes.
 */
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { ContainerdRuntime } from './containerd/runtime.js';
import { DockerRuntime } from './docker/runtime.js';
import type { Runtime } from './runtime.js';

export function createRuntime(config: Config, deps: { log: Logger; metrics: AgentMetrics }): Runtime {
  switch (config.runtime) {
    case 'containerd':
      return new ContainerdRuntime(config, deps);
    case 'docker':
      return new DockerRuntime(config, deps);
  }
}
