/**
 * `esb-agent ctl`: the agent's own API from a shell, for operators. One subcommand per RPC
 * (ensure, list, invoke, pause, resume, metrics, destroy), plaintext or mTLS, JSON or table
 * output, and exit codes scripts can branch on (exit-codes.ts: 0, 1, 64, 10 + gRPC code).
 */
import { readFile } from 'node:fs/promises';
import { errorText } from '../errors.js';
import { AgentClient, isRpcFailure, toRpcFailure, type AgentCredentials } from './agent-client.js';
import { parseCommandLine, parseDurationMs, parseIntFlag, parsePairs } from './args.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exitCodeForGrpcStatus, grpcExitCodeTable } from './exit-codes.js';
import { UsageError, type CliIo } from './io.js';
import {
  containersTable,
  invokeTable,
  metricsTable,
  OUTPUT_FORMATS,
  renderKeyValues,
  toJson,
  workerTable,
  type OutputFormat,
} from './output.js';

/** Where ctl dials when neither --addr nor ESB_AGENT_ADDR says otherwise (the agent's default PORT). */
export const DEFAULT_AGENT_ADDRESS = '127.0.0.1:50051';
/** Default per-call deadline: longer than the agent's own 10 min pull bound, so the agent answers first. */
export const DEFAULT_DEADLINE = '11m';
/** The memory variable EnsureContainer reads (docs/contract.md#ensurecontainer); `--memory` sets it. */
const MEMORY_ENV = 'AWS_LAMBDA_FUNCTION_MEMORY_SIZE';

const GLOBAL_OPTIONS = {
  addr: { type: 'string' },
  owner: { type: 'string' },
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'server-name': { type: 'string' },
  insecure: { type: 'boolean' },
  deadline: { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COMMAND_OPTIONS = {
  image: { type: 'string' },
  env: { type: 'string', multiple: true },
  memory: { type: 'string' },
  data: { type: 'string' },
  'data-file': { type: 'string' },
  path: { type: 'string' },
  header: { type: 'string', multiple: true },
  'timeout-ms': { type: 'string' },
  function: { type: 'string' },
} as const;

type CommandOption = keyof typeof COMMAND_OPTIONS;

interface CommandSpec {
  readonly args: readonly string[];
  readonly options: readonly CommandOption[];
  readonly summary: string;
  readonly details: string;
}

/** The subcommands, their positional arguments and their own options. */
export const CTL_COMMANDS = {
  ensure: {
    args: ['<function-name>'],
    options: ['image', 'env', 'memory'],
    summary: 'EnsureContainer: start a new worker for a function',
    details: `  --image REF        image to run (default: the agent's CONTAINER_REGISTRY/<function>:ESB_TAG)
  --env KEY=VALUE    environment of the worker (repeatable)
  --memory MB        memory limit (sets ${MEMORY_ENV})`,
  },
  list: { args: [], options: [], summary: "ListContainers: the owner's workers", details: '' },
  invoke: {
    args: ['<container-id>'],
    options: ['data', 'data-file', 'path', 'header', 'timeout-ms'],
    summary: 'InvokeWorker: POST one invocation to a worker',
    details: `  --data TEXT        request body (default: {})
  --data-file FILE   request body from a file ('-' = stdin)
  --path PATH        HTTP path (default: the RIE invocation path)
  --header 'K: V'    request header (repeatable; default Content-Type: application/json)
  --timeout-ms N     invocation timeout (default: the agent's AGENT_INVOKE_DEFAULT_TIMEOUT_MS)
  The command succeeds (exit 0) whenever the worker answered, whatever its HTTP status.`,
  },
  pause: { args: ['<container-id>'], options: [], summary: 'PauseContainer: freeze a worker (cgroup freezer)', details: '' },
  resume: { args: ['<container-id>'], options: [], summary: 'ResumeContainer: thaw a paused worker', details: '' },
  metrics: { args: ['<container-id>'], options: [], summary: "GetContainerMetrics: a worker's cgroup numbers", details: '' },
  destroy: {
    args: ['<container-id>'],
    options: ['function'],
    summary: 'DestroyContainer: kill and remove a worker and everything it holds',
    details: '  --function NAME    function name (informational; the agent logs it)',
  },
} as const satisfies Record<string, CommandSpec>;

export type CtlCommand = keyof typeof CTL_COMMANDS;

function isCommand(s: string): s is CtlCommand {
  return Object.hasOwn(CTL_COMMANDS, s);
}

function exitCodeLines(): string {
  return grpcExitCodeTable()
    .map((e) => `  ${String(e.exit).padStart(2)}  ${e.name}`)
    .join('\n');
}

/** `esb-agent ctl --help`. */
export function ctlUsage(): string {
  const commands = (Object.entries(CTL_COMMANDS) as [CtlCommand, CommandSpec][])
    .map(([name, spec]) => `  ${`${name} ${spec.args.join(' ')}`.padEnd(26)} ${spec.summary}`)
    .join('\n');
  return `usage: esb-agent ctl [options] <command> [arguments]

Calls the agent's gRPC API (esb.agent.v1.AgentService) as the gateway does.

commands:
${commands}

options (also after the command):
  --addr HOST:PORT    agent address (env ESB_AGENT_ADDR; default ${DEFAULT_AGENT_ADDRESS})
  --owner ID          owner_id of every call; workers of other owners are invisible (env ESB_AGENT_OWNER; required)
  --ca FILE           CA that signed the agent's certificate: TLS (env ESB_AGENT_CA)
  --cert FILE         client certificate for mTLS (env ESB_AGENT_CERT)
  --key FILE          its private key (env ESB_AGENT_KEY)
  --server-name NAME  name to check the agent's certificate against (default: the host of --addr)
  --insecure          plaintext, for an agent with AGENT_GRPC_TLS_DISABLED=1 (env ESB_AGENT_INSECURE=1)
  --deadline DUR      per-call deadline: 30s, 2m, 500ms; 0 = none (default ${DEFAULT_DEADLINE})
  -o, --output FMT    table (default) or json
  -h, --help          this help; 'esb-agent ctl <command> --help' for one command

exit codes:
   0  the call succeeded
   1  a local failure (a file that cannot be read)
  64  wrong command line
  10 + the gRPC status code when the agent (or the channel) answered with an error:
${exitCodeLines()}
`;
}

/** `esb-agent ctl <command> --help`. */
export function commandUsage(name: CtlCommand): string {
  const spec: CommandSpec = CTL_COMMANDS[name];
  return `usage: esb-agent ctl [options] ${name} ${spec.args.join(' ')}${spec.options.length > 0 ? ' [command options]' : ''}

${spec.summary}
${spec.details === '' ? '' : `\ncommand options:\n${spec.details}\n`}
Connection and output options: esb-agent ctl --help.
`;
}

/** Everything a call needs, resolved from flags and environment. */
export interface CtlSettings {
  readonly command: CtlCommand;
  readonly address: string;
  readonly owner: string;
  readonly credentials: AgentCredentials;
  readonly deadlineMs: number;
  readonly output: OutputFormat;
}

type ParsedValues = Partial<Record<keyof typeof GLOBAL_OPTIONS | CommandOption, string | boolean | string[]>>;

function str(values: ParsedValues, name: keyof typeof GLOBAL_OPTIONS | CommandOption): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function list(values: ParsedValues, name: CommandOption): string[] {
  const v = values[name];
  return Array.isArray(v) ? v : [];
}

/** Resolves the connection settings; throws UsageError for a missing owner or TLS choice. */
export function resolveSettings(command: CtlCommand, values: ParsedValues, env: CliIo['env']): CtlSettings {
  const address = str(values, 'addr') ?? env['ESB_AGENT_ADDR'] ?? DEFAULT_AGENT_ADDRESS;
  const owner = str(values, 'owner') ?? env['ESB_AGENT_OWNER'] ?? '';
  if (owner.trim() === '') throw new UsageError('--owner is required (or set ESB_AGENT_OWNER): every call acts for one owner_id');
  const outputText = str(values, 'output') ?? 'table';
  const output = OUTPUT_FORMATS.find((f) => f === outputText);
  if (output === undefined) throw new UsageError(`--output: expected json or table, got ${JSON.stringify(outputText)}`);
  const deadlineMs = parseDurationMs('--deadline', str(values, 'deadline') ?? DEFAULT_DEADLINE);

  const insecure = values.insecure === true || /^(1|true|yes|on)$/i.test(env['ESB_AGENT_INSECURE'] ?? '');
  const caPath = str(values, 'ca') ?? env['ESB_AGENT_CA'];
  const certPath = str(values, 'cert') ?? env['ESB_AGENT_CERT'];
  const keyPath = str(values, 'key') ?? env['ESB_AGENT_KEY'];
  let credentials: AgentCredentials;
  if (insecure) {
    if (str(values, 'ca') !== undefined || str(values, 'cert') !== undefined || str(values, 'key') !== undefined) {
      throw new UsageError('--insecure cannot be combined with --ca, --cert or --key');
    }
    credentials = { kind: 'insecure' };
  } else {
    if (caPath === undefined) {
      throw new UsageError(
        'choose TLS or plaintext: --ca FILE with --cert/--key for mTLS (the agent default), or --insecure for an agent with AGENT_GRPC_TLS_DISABLED=1',
      );
    }
    if ((certPath === undefined) !== (keyPath === undefined)) throw new UsageError('--cert and --key go together');
    credentials = { kind: 'tls', caPath, certPath, keyPath, serverName: str(values, 'server-name') };
  }
  return { command, address, owner, credentials, deadlineMs, output };
}

/** One parsed `ctl` command line: help, or a call to make. */
export type CtlInvocation =
  | { readonly kind: 'help'; readonly text: string }
  | { readonly kind: 'call'; readonly settings: CtlSettings; readonly args: readonly string[]; readonly values: ParsedValues };

/** Parses a `ctl` command line (the arguments after `ctl`). Throws UsageError. */
export function parseCtl(argv: readonly string[], env: CliIo['env']): CtlInvocation {
  const { values, positionals } = parseCommandLine(argv, { ...GLOBAL_OPTIONS, ...COMMAND_OPTIONS });
  const [name, ...args] = positionals;
  if (name === undefined) {
    if (values.help === true) return { kind: 'help', text: ctlUsage() };
    throw new UsageError('missing command');
  }
  if (!isCommand(name)) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  if (values.help === true) return { kind: 'help', text: commandUsage(name) };
  const spec: CommandSpec = CTL_COMMANDS[name];
  for (const opt of Object.keys(COMMAND_OPTIONS) as CommandOption[]) {
    if (values[opt] !== undefined && !spec.options.includes(opt)) throw new UsageError(`--${opt} does not apply to ${name}`);
  }
  if (args.length !== spec.args.length) {
    throw new UsageError(
      `${name} takes ${spec.args.length === 0 ? 'no arguments' : spec.args.join(' ')}, got ${args.length === 0 ? 'none' : args.map((a) => JSON.stringify(a)).join(' ')}`,
    );
  }
  if (args.some((a) => a.trim() === '')) throw new UsageError(`${name}: ${spec.args.join(' ')} must not be blank`);
  if (values.data !== undefined && values['data-file'] !== undefined) throw new UsageError('--data and --data-file exclude each other');
  return { kind: 'call', settings: resolveSettings(name, values, env), args, values };
}

/** Builds the EnsureContainer env from --env pairs and --memory. */
export function ensureEnv(values: ParsedValues): Record<string, string> {
  const env = parsePairs('--env', list(values, 'env'), '=');
  const memory = str(values, 'memory');
  if (memory !== undefined) env[MEMORY_ENV] = String(parseIntFlag('--memory', memory, 1, 1 << 20));
  return env;
}

/** InvokeWorker headers: --header pairs, with a JSON content type unless one is given. */
export function invokeHeaders(values: ParsedValues): Record<string, string> {
  const headers = parsePairs('--header', list(values, 'header'), ':');
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['Content-Type'] = 'application/json';
  return headers;
}

async function invokePayload(values: ParsedValues, io: CliIo): Promise<Buffer> {
  const file = str(values, 'data-file');
  if (file === undefined) return Buffer.from(str(values, 'data') ?? '{}');
  if (file === '-') return io.readStdin();
  try {
    return await readFile(file);
  } catch (err) {
    throw new Error(`--data-file: cannot read ${file}: ${errorText(err)}`, { cause: err });
  }
}

/** Makes the call and prints the reply; resolves to the exit code. */
async function call(client: AgentClient, inv: Extract<CtlInvocation, { kind: 'call' }>, io: CliIo): Promise<number> {
  const { settings: s, args, values } = inv;
  const owner_id = s.owner;
  const id = args[0] ?? '';
  const json = s.output === 'json';
  const done = (verb: string, success: boolean): number => {
    io.out(json ? toJson({ success }) : `${verb} ${id}: ${success ? 'ok' : 'not done'}\n`);
    return success ? EXIT_OK : EXIT_FAILURE;
  };
  switch (s.command) {
    case 'ensure': {
      const w = await client.ensure({ function_name: id, image: str(values, 'image') ?? '', env: ensureEnv(values), owner_id });
      io.out(json ? toJson(w) : workerTable(w));
      return EXIT_OK;
    }
    case 'list': {
      const r = await client.list({ owner_id });
      io.out(json ? toJson(r) : r.containers.length === 0 ? `no containers for owner ${owner_id}\n` : containersTable(r.containers));
      return EXIT_OK;
    }
    case 'invoke': {
      const timeout = str(values, 'timeout-ms');
      const r = await client.invoke({
        container_id: id,
        owner_id,
        path: str(values, 'path') ?? '',
        payload: await invokePayload(values, io),
        headers: invokeHeaders(values),
        timeout_ms: timeout === undefined ? 0 : parseIntFlag('--timeout-ms', timeout, 1, 2 ** 31 - 1),
      });
      io.out(json ? toJson(r) : invokeTable(r));
      return EXIT_OK;
    }
    case 'pause':
      return done('paused', (await client.pause({ container_id: id, owner_id })).success);
    case 'resume':
      return done('resumed', (await client.resume({ container_id: id, owner_id })).success);
    case 'metrics': {
      const r = await client.metrics({ container_id: id, owner_id });
      io.out(json ? toJson(r) : r.metrics ? metricsTable(r.metrics) : renderKeyValues([['metrics', 'none']]));
      return EXIT_OK;
    }
    case 'destroy':
      return done(
        'destroyed',
        (await client.destroy({ container_id: id, owner_id, function_name: str(values, 'function') ?? '' })).success,
      );
  }
}

/**
 * Runs `esb-agent ctl <argv>`; resolves to the exit code (see exit-codes.ts). Errors go to
 * stderr as `esb-agent ctl: <command>: <CODE>: <details>`; with `-o json` the error is also
 * printed to stdout as `{"error": {"code", "code_number", "details"}}`.
 */
export async function runCtl(argv: readonly string[], io: CliIo): Promise<number> {
  let inv: CtlInvocation;
  try {
    inv = parseCtl(argv, io.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`esb-agent ctl: ${err.message}\n\n${ctlUsage()}`);
    return EXIT_USAGE;
  }
  if (inv.kind === 'help') {
    io.out(inv.text);
    return EXIT_OK;
  }
  const { command, output } = inv.settings;
  let client: AgentClient | undefined;
  try {
    client = new AgentClient({ address: inv.settings.address, credentials: inv.settings.credentials, deadlineMs: inv.settings.deadlineMs });
    return await call(client, inv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`esb-agent ctl: ${err.message}\n\n${commandUsage(command)}`);
      return EXIT_USAGE;
    }
    if (!isRpcFailure(err)) {
      io.err(`esb-agent ctl: ${command}: ${errorText(err)}\n`);
      return EXIT_FAILURE;
    }
    const f = toRpcFailure(err);
    if (output === 'json') io.out(toJson({ error: { code: f.name, code_number: f.code, details: f.details } }));
    io.err(`esb-agent ctl: ${command}: ${f.name}: ${f.details}\n`);
    return exitCodeForGrpcStatus(f.code);
  } finally {
    client?.close();
  }
}
