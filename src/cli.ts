/**
 * The `esb-agent` command line. For now one command, `serve` (the default): run the agent
 * daemon (main.ts). Later commands (ctl, import, doctor) are added here.
 *
 * Exit codes: those of `serve` (main.ts), 0 for --help/--version, 64 (EX_USAGE) for an unknown
 * command or option.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { main } from './main.js';
import { PROJECT_ROOT } from './paths.js';

/** sysexits.h EX_USAGE: the command was used incorrectly. */
export const EXIT_USAGE = 64;

export const USAGE = `usage: esb-agent [command]

commands:
  serve        run the agent (default): gRPC on PORT, /metrics on AGENT_METRICS_PORT

options:
  -h, --help     show this help
  -V, --version  print the version

Configuration comes from environment variables (see the README, "Configuration").
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
      if (rest.length > 0) {
        process.stderr.write(`esb-agent: serve takes no arguments (got ${rest.join(' ')})\n\n${USAGE}`);
        return EXIT_USAGE;
      }
      return main(process.env);
    default:
      process.stderr.write(`esb-agent: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return EXIT_USAGE;
  }
}
