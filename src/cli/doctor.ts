/**
 * `esb-agent doctor`: checks the host the way the agent's start-up would meet it (configuration,
 * containerd, runc, CNI, cgroups, TLS files, state dir), prints one OK/WARN/FAIL line per check
 * with a fix for anything not OK, and exits 0 when nothing failed, 1 otherwise.
 */
import { loadConfig, type Config } from '../config/config.js';
import { ConfigError } from '../config/parse.js';
import { errorText } from '../errors.js';
import { parseCommandLine } from './args.js';
import {
  checkCgroups,
  checkCni,
  checkContainerd,
  checkFirewall,
  checkListen,
  checkRunc,
  checkStateDir,
  checkTls,
  type CheckResult,
} from './doctor-checks.js';
import { checkCompat } from './doctor-compat.js';
import { checkDockerd } from './doctor-docker.js';
import { readEnvFile } from './env-file.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit-codes.js';
import { UsageError, type CliIo } from './io.js';
import { toJson } from './output.js';

export const DOCTOR_USAGE = `usage: esb-agent doctor [options]

Checks what the agent needs on this host, with the agent's own configuration (environment
variables, see docs/configuration.md):

  config      every variable parses
  containerd  CONTAINERD_SOCKET exists and containerd answers (its version)
  runc        runc and containerd-shim-runc-v2 on PATH (runc's version)
  cni         CNI_CONF_FILE parses; every plugin it names is in CNI_BIN_DIR and speaks its cniVersion
  cgroups     cgroup v1 (legacy or hybrid) or v2 (unified), with the controllers the agent uses
  compat      cgroup version and driver, containerd, runc and CNI plugin versions, and whether
              that combination is tested, audited only or unsupported
  tls         (unless AGENT_GRPC_TLS_DISABLED=1) certificate, key and CA read, parse, match, not expired
  listen      AGENT_GRPC_ADDRESS and AGENT_METRICS_ADDRESS exist here; plaintext only on loopback; an
              AGENT_GRPC_ALLOWED_CLIENTS list with mTLS
  state-dir   AGENT_STATE_DIR is writable (or can be created)
  firewall    the worker firewall chains of the agent's bridge: present, missing (WARN: the
              agent installs them at start-up) or partly removed (FAIL: restart the agent)

With AGENT_RUNTIME=docker, containerd, runc, cni and compat are replaced by:

  dockerd     DOCKER_HOST answers (its version) and CONTAINERS_NETWORK exists

Each prints OK, WARN or FAIL with a fix.

options:
  --env-file FILE   read the agent's environment file first (e.g. /etc/esb-agent/env)
  -o, --output FMT  text (default) or json
  -h, --help        this help

exit codes: 0 nothing failed (warnings allowed); 1 at least one check failed; 64 wrong command line.
`;

const OPTIONS = {
  'env-file': { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Runs every check for `env`; a configuration that does not load fails alone (the rest need it). */
export async function runChecks(env: CliIo['env']): Promise<CheckResult[]> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    const message = err instanceof ConfigError ? `invalid configuration: ${err.message}` : errorText(err);
    return [
      {
        name: 'config',
        status: 'FAIL',
        message,
        fix: 'fix that variable (docs/configuration.md); the other checks need a valid configuration',
      },
      await checkCgroups(),
    ];
  }
  const results: CheckResult[] = [
    {
      name: 'config',
      status: 'OK',
      message: `AGENT_RUNTIME=${config.runtime}, ENV=${config.env}, namespace ${config.containerd.namespace}`,
    },
  ];
  if (config.runtime === 'docker') {
    // containerd, runc and CNI are dockerd's own on such a host.
    results.push(
      await checkDockerd(config),
      await checkCgroups(),
      checkTls(config),
      await checkListen(config),
      await checkStateDir(config),
      await checkFirewall(config),
    );
    return results;
  }
  results.push(
    await checkContainerd(config),
    await checkRunc(config, env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'),
    await checkCni(config),
    await checkCgroups(),
    { name: 'compat', ...(await checkCompat(config)) },
    checkTls(config),
    await checkListen(config),
    await checkStateDir(config),
    await checkFirewall(config),
  );
  return results;
}

/** The text report: one line per check, an indented fix under anything not OK, a summary. */
export function formatReport(results: readonly CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.name.length));
  const lines = results.flatMap((r) => [
    `${r.status.padEnd(4)}  ${r.name.padEnd(width)}  ${r.message}`,
    ...(r.fix === undefined ? [] : [`${' '.repeat(6 + width + 2)}fix: ${r.fix}`]),
  ]);
  const count = (s: CheckResult['status']): number => results.filter((r) => r.status === s).length;
  lines.push('', `${count('FAIL')} failed, ${count('WARN')} warning(s), ${count('OK')} ok`);
  return `${lines.join('\n')}\n`;
}

/** Runs `esb-agent doctor <argv>`; resolves to the exit code. */
export async function runDoctor(argv: readonly string[], io: CliIo): Promise<number> {
  let values: ReturnType<typeof parseCommandLine<typeof OPTIONS>>['values'];
  try {
    const parsed = parseCommandLine(argv, OPTIONS);
    values = parsed.values;
    if (parsed.positionals.length > 0) throw new UsageError(`doctor takes no arguments (got ${parsed.positionals.join(' ')})`);
    if (values.output !== undefined && values.output !== 'json' && values.output !== 'text')
      throw new UsageError(`--output: expected text or json, got ${JSON.stringify(values.output)}`);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`esb-agent doctor: ${err.message}\n\n${DOCTOR_USAGE}`);
    return EXIT_USAGE;
  }
  if (values.help === true) {
    io.out(DOCTOR_USAGE);
    return EXIT_OK;
  }
  let env = io.env;
  if (values['env-file'] !== undefined) {
    try {
      env = { ...io.env, ...readEnvFile(values['env-file']) };
    } catch (err) {
      io.err(`esb-agent doctor: ${errorText(err)}\n`);
      return EXIT_FAILURE;
    }
  }
  const results = await runChecks(env);
  io.out(values.output === 'json' ? toJson({ checks: results }) : formatReport(results));
  return results.some((r) => r.status === 'FAIL') ? EXIT_FAILURE : EXIT_OK;
}
