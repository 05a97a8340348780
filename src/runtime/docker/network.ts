/**
 * CONTAINERS_NETWORK as the worker firewall needs it: a bridge network with inter-container
 * communication off, its Linux bridge, subnet and gateway (from GET /networks/{id}).
 */
import { AgentError } from '../../errors.js';
import type { WorkerNetwork } from '../../netfilter/rules.js';

/** The fields of a network inspect the firewall reads. */
export interface DockerNetworkInspect {
  readonly Name?: string;
  readonly Id?: string;
  readonly Driver?: string;
  readonly EnableIPv6?: boolean;
  readonly Options?: Readonly<Record<string, string>> | null;
  readonly IPAM?: { readonly Config?: readonly { readonly Subnet?: string; readonly Gateway?: string }[] | null } | null;
}

export const ICC_OPTION = 'com.docker.network.bridge.enable_icc';
const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';

/**
 * The worker network of a docker bridge network. Throws FAILED_PRECONDITION (naming the
 * network and the fix) unless the driver is `bridge` and inter-container communication is
 * off: with it on, dockerd itself accepts worker-to-worker traffic in FORWARD ahead of the
 * agent's chain whenever dockerd (re)starts after the agent.
 */
export function dockerWorkerNetwork(inspect: DockerNetworkInspect, name: string): { network: WorkerNetwork; gateway: string | undefined } {
  const create = `docker network create -o ${ICC_OPTION}=false <name>`;
  if (inspect.Driver !== 'bridge') {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `CONTAINERS_NETWORK ${name} uses the ${inspect.Driver ?? '(unknown)'} driver; workers need a bridge network (${create}), or set AGENT_WORKER_FIREWALL=false if you isolate workers yourself`,
    );
  }
  if (inspect.Options?.[ICC_OPTION] !== 'false') {
    throw new AgentError(
      'FAILED_PRECONDITION',
      `CONTAINERS_NETWORK ${name} lets containers talk to each other (${ICC_OPTION} is not false); workers of different tenants must not: use a network made with ${create}, or set AGENT_WORKER_FIREWALL=false if you isolate workers yourself`,
    );
  }
  return describeDockerNetwork(inspect);
}

/**
 * Bridge, subnet and IPv4 gateway of a docker network, unchecked: what `esb-agent firewall`
 * and `doctor` compare against. The gateway is the workers' DNS server on the host (dockerd's
 * embedded resolver answers inside the worker and never reaches the host's INPUT).
 */
export function describeDockerNetwork(inspect: DockerNetworkInspect): { network: WorkerNetwork; gateway: string | undefined } {
  const bridge = inspect.Options?.[BRIDGE_NAME_OPTION] ?? (inspect.Name === 'bridge' ? 'docker0' : `br-${(inspect.Id ?? '').slice(0, 12)}`);
  const configs = inspect.IPAM?.Config ?? [];
  const subnets = configs.map((c) => c.Subnet ?? '').filter((s) => s !== '');
  const gateway = configs.find((c) => c.Gateway !== undefined && c.Gateway !== '' && !c.Gateway.includes(':'))?.Gateway;
  return {
    network: {
      bridge,
      subnet: subnets.join(',') || '(unknown)',
      ipv6: inspect.EnableIPv6 === true || subnets.some((s) => s.includes(':')),
    },
    gateway,
  };
}
