/**
 * The worker firewall as the runtimes use it: one WorkerFirewall per agent, built from the
 * configuration, or none when AGENT_WORKER_FIREWALL=false.
 */
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { WorkerFirewall } from './firewall.js';

/** The firewall for workers whose DNS server is `dnsServer`; undefined when turned off. */
export function createWorkerFirewall(
  config: Config,
  dnsServer: string | undefined,
  deps: { log: Logger; metrics: AgentMetrics },
): WorkerFirewall | undefined {
  if (!config.workerFirewall.enabled) {
    deps.log.warn(
      'AGENT_WORKER_FIREWALL=false: workers can reach every port of the host, each other and link-local addresses unless your own filter stops them',
    );
    return undefined;
  }
  return new WorkerFirewall({
    policy: { dnsServer, allowedHostPorts: config.workerFirewall.allowedHostPorts },
    log: deps.log,
    onInstall: (found) => {
      deps.metrics.workerFirewallInstalls.inc({ found });
    },
  });
}
