/**
 * The `esb-agent` command line and its composition root for the tools: `serve` (the default)
 * runs the agent daemon (main.ts); `ctl`, `import` and `doctor` are operator tools under
 * src/cli/. This module reads `process.env` and hands it to them.
 *
 * Exit codes: those of `serve` (main.ts: 0, 1, 2); 0 for --help/--version; 64 (EX_USAGE) for an
 * unknown command or option; each tool documents its own (src/cli/exit-codes.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { runCtl } from './cli/ctl.js';
import { runDoctor } from './cli/doctor.js';
import { EXIT_USAGE } from './cli/exit-codes.js';
import { runFirewall } from './cli/firewall.js';
import { runImport } from './cli/import.js';
import { processIo } from './cli/io.js';
import { main } from './main.js';
import { PROJECT_ROOT } from './paths.js';

export { EXIT_USAGE };

export const USAGE = `usage: esb-agent [command] [options]

commands:
  serve            run the agent (default): gRPC on PORT, /metrics on AGENT_METRICS_PORT
  ctl <command>    call the agent's API: ensure, list, invoke, pause, resume, metrics, destroy
  import <tar>     load a 'docker save' or OCI-layout tarball into containerd (no registry)
  doctor           check containerd, runc, CNI, cgroups, TLS files, the state dir and the worker firewall
  firewall status|remove   report or remove the worker firewall chains (remove: when uninstalling)

options:
  -h, --help     show this help ('esb-agent <command> --help' for one command)
  -V, --version  print the version

Configuration comes from environment variables (docs/configuration.md).
`;

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Runs the command named by `argv` (the arguments after the program name). `serve` does not
 * return: the agent exits the process itself. Other commands resolve to their exit code.
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  const io = processIo(process.env);
  switch (command) {
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return 0;
    case '-V':
    case '--version':
      process.stdout.write(`esb-agent ${version()}\n`);
      return 0;
    case 'serve':
      if (rest.length === 1 && (rest[0] === '--help' || rest[0] === '-h')) {
        process.stdout.write(
          'usage: esb-agent serve\n\nRuns the agent; configuration comes from environment variables (docs/configuration.md).\nExit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 start-up or shutdown failed, 2 invalid configuration.\n',
        );
        return 0;
      }
      if (rest.length > 0) {
        process.stderr.write(`esb-agent: serve takes no arguments (got ${rest.join(' ')})\n\n${USAGE}`);
        return EXIT_USAGE;
      }
      return main(process.env);
    case 'ctl':
      return runCtl(rest, io);
    case 'import':
      return runImport(rest, io);
    case 'doctor':
      return runDoctor(rest, io);
    case 'firewall':
      return runFirewall(rest, io);
    default:
      process.stderr.write(`esb-agent: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return EXIT_USAGE;
  }
}
