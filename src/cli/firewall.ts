/**
 * `esb-agent firewall status|remove`: the worker firewall chains of the agent's network (the
 * ones it keeps across restarts), reported or removed. `remove` is the uninstall step: the
 * agent itself never removes them. Also the network lookup `doctor` uses.
 */
import { loadNetworkList } from '../cni/conflist.js';
import { loadConfig, type Config } from '../config/config.js';
import { ConfigError } from '../config/parse.js';
import { errorText } from '../errors.js';
import { silentLogger } from '../log.js';
import { WorkerFirewall } from '../netfilter/firewall.js';
import { networkFromConflist } from '../netfilter/network.js';
import { checkBridgeName, chainNames, type WorkerNetwork } from '../netfilter/rules.js';
import { DockerEngineClient } from '../runtime/docker/engine-client.js';
import { describeDockerNetwork, type DockerNetworkInspect } from '../runtime/docker/network.js';
import { parseCommandLine } from './args.js';
import { readEnvFile } from './env-file.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit-codes.js';
import { UsageError, type CliIo } from './io.js';
import { toJson } from './output.js';

export const FIREWALL_USAGE = `usage: esb-agent firewall status|remove [options]

The worker firewall: iptables chains ESB-IN-<bridge> and ESB-FWD-<bridge> that the agent
installs at start-up and keeps when it stops (docs/network-isolation.md).

  status   report them: present, missing, or partial (some rules or jumps removed or changed)
  remove   delete the jumps to them and the chains (uninstalling; a running agent does not
           put them back until it restarts or meets a new network)

The bridge comes from the agent's configuration: the bridge plugin of CNI_CONF_FILE (or the
network the agent generates), or CONTAINERS_NETWORK's bridge with AGENT_RUNTIME=docker.

options:
  --env-file FILE   read the agent's environment file first (e.g. /etc/esb-agent/env)
  --bridge NAME     this bridge instead of the configured one
  -o, --output FMT  text (default) or json
  -h, --help        this help

exit codes: 0 done (status: present); 1 status not present, or iptables failed; 64 wrong command line.
`;

const OPTIONS = {
  'env-file': { type: 'string' },
  bridge: { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** The network the agent's chains protect and the DNS server its rules open. */
export interface AgentNetwork {
  readonly network: WorkerNetwork;
  readonly dnsServer: string | undefined;
}

/** The agent's network, or a sentence saying why it cannot be told. */
export async function configuredWorkerNetwork(config: Config): Promise<AgentNetwork | string> {
  if (config.runtime === 'docker') {
    const client = new DockerEngineClient({ host: config.docker.host });
    try {
      const res = await client.request({
        method: 'GET',
        path: `/networks/${encodeURIComponent(config.docker.network)}`,
        what: `inspect network ${config.docker.network}`,
        signal: AbortSignal.timeout(5000),
      });
      if (res.status !== 200) return `dockerd answered ${res.status} for CONTAINERS_NETWORK ${config.docker.network}`;
      // The same description, and the same DNS server, the docker runtime installs with.
      const { network, gateway } = describeDockerNetwork(JSON.parse(res.body) as DockerNetworkInspect);
      return { network, dnsServer: gateway };
    } catch (err) {
      return `cannot inspect CONTAINERS_NETWORK ${config.docker.network}: ${errorText(err)}`;
    } finally {
      await client.close();
    }
  }
  let list;
  try {
    list = await loadNetworkList(config.cni.confFile);
  } catch {
    // No conflist (yet): the one the agent generates, from its configuration.
    return { network: { bridge: config.cni.bridge, subnet: config.cni.subnet, ipv6: false }, dnsServer: config.cni.dnsServer };
  }
  const network = networkFromConflist(list);
  return network !== undefined
    ? { network, dnsServer: config.cni.dnsServer }
    : `CNI_CONF_FILE ${config.cni.confFile} has no bridge plugin; the agent learns its bridge from the first CNI ADD (use --bridge)`;
}

/** A firewall with the agent's policy: the one whose rules `status` compares against. */
export function agentFirewall(config: Config, dnsServer: string | undefined): WorkerFirewall {
  return new WorkerFirewall({ policy: { dnsServer, allowedHostPorts: config.workerFirewall.allowedHostPorts }, log: silentLogger() });
}

/** Runs `esb-agent firewall <argv>`; resolves to the exit code. */
export async function runFirewall(argv: readonly string[], io: CliIo): Promise<number> {
  let values: ReturnType<typeof parseCommandLine<typeof OPTIONS>>['values'];
  let action: string;
  try {
    const parsed = parseCommandLine(argv, OPTIONS);
    values = parsed.values;
    if (values.help === true) {
      io.out(FIREWALL_USAGE);
      return EXIT_OK;
    }
    if (parsed.positionals.length !== 1 || !['status', 'remove'].includes(parsed.positionals[0] ?? ''))
      throw new UsageError('expected status or remove');
    action = parsed.positionals[0] ?? '';
    if (values.output !== undefined && values.output !== 'json' && values.output !== 'text')
      throw new UsageError(`--output: expected text or json, got ${JSON.stringify(values.output)}`);
    if (values.bridge !== undefined) {
      try {
        checkBridgeName(values.bridge);
      } catch {
        throw new UsageError(`--bridge: not an interface name: ${JSON.stringify(values.bridge)}`);
      }
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`esb-agent firewall: ${err.message}\n\n${FIREWALL_USAGE}`);
    return EXIT_USAGE;
  }
  let env = io.env;
  let config: Config;
  try {
    if (values['env-file'] !== undefined) env = { ...io.env, ...readEnvFile(values['env-file']) };
    config = loadConfig(env);
  } catch (err) {
    io.err(`esb-agent firewall: ${err instanceof ConfigError ? `invalid configuration: ${err.message}` : errorText(err)}\n`);
    return EXIT_FAILURE;
  }
  const found = await configuredWorkerNetwork(config);
  if (typeof found === 'string' && values.bridge === undefined) {
    io.err(`esb-agent firewall: ${found}\n`);
    return EXIT_FAILURE;
  }
  // --bridge names another bridge; the DNS rule still follows the configured network when known.
  const dnsServer = typeof found === 'string' ? config.cni.dnsServer : found.dnsServer;
  const net = values.bridge !== undefined ? { bridge: values.bridge, subnet: '(given)', ipv6: false } : (found as AgentNetwork).network;
  const fw = agentFirewall(config, dnsServer);
  const names = chainNames(net.bridge);
  try {
    if (action === 'remove') {
      const found = await fw.remove(net);
      const text =
        found === 'missing'
          ? `no worker firewall for bridge ${net.bridge}: nothing to remove`
          : `removed ${names.input}, ${names.forward} and their jumps (bridge ${net.bridge})`;
      io.out(values.output === 'json' ? toJson({ bridge: net.bridge, found, removed: found !== 'missing' }) : `${text}\n`);
      return EXIT_OK;
    }
    const report = await fw.check(net);
    io.out(
      values.output === 'json'
        ? toJson({ bridge: net.bridge, status: report.status, problems: report.problems })
        : `${report.status}: bridge ${net.bridge}, chains ${names.input}, ${names.forward}${report.problems.map((p) => `\n  ${p}`).join('')}\n`,
    );
    return report.status === 'present' ? EXIT_OK : EXIT_FAILURE;
  } catch (err) {
    io.err(`esb-agent firewall: ${errorText(err)}\n`);
    return EXIT_FAILURE;
  }
}
