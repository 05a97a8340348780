/**
 * `esb-agent ctl` command lines: subcommands, where options may go, TLS/plaintext choice,
 * environment defaults, and the usage errors (exit 64) for everything malformed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseDurationMs, parseIntFlag, parsePairs } from '../../../src/cli/args.js';
import { CTL_COMMANDS, ctlUsage, DEFAULT_AGENT_ADDRESS, ensureEnv, invokeHeaders, parseCtl, runCtl } from '../../../src/cli/ctl.js';
import { exitCodeForGrpcStatus, grpcExitCodeTable } from '../../../src/cli/exit-codes.js';
import { UsageError, type CliIo } from '../../../src/cli/io.js';

const BASE = ['--owner', 'ops', '--insecure'];

function call(argv: string[], env: Record<string, string> = {}) {
  const inv = parseCtl(argv, env);
  assert.equal(inv.kind, 'call');
  return inv;
}

function usageError(argv: string[], message: RegExp, env: Record<string, string> = {}): void {
  assert.throws(
    () => parseCtl(argv, env),
    (err: unknown) => err instanceof UsageError && message.test(err.message),
  );
}

describe('parseCtl', () => {
  test('global options before or after the command', () => {
    const a = call([...BASE, '--addr', '10.0.0.1:6000', 'list']);
    const b = call(['list', '--addr', '10.0.0.1:6000', ...BASE]);
    assert.deepEqual(a.settings, b.settings);
    assert.equal(a.settings.address, '10.0.0.1:6000');
    assert.equal(a.settings.command, 'list');
    assert.deepEqual(a.settings.credentials, { kind: 'insecure' });
  });

  test('defaults: address, table output, 11 min deadline; env supplies address, owner and TLS files', () => {
    const d = call([...BASE, 'list']);
    assert.equal(d.settings.address, DEFAULT_AGENT_ADDRESS);
    assert.equal(d.settings.output, 'table');
    assert.equal(d.settings.deadlineMs, 11 * 60_000);
    const e = call(['metrics', 'w1'], {
      ESB_AGENT_ADDR: 'agent:1',
      ESB_AGENT_OWNER: 'gw',
      ESB_AGENT_CA: '/ca',
      ESB_AGENT_CERT: '/c',
      ESB_AGENT_KEY: '/k',
    });
    assert.equal(e.settings.address, 'agent:1');
    assert.equal(e.settings.owner, 'gw');
    assert.deepEqual(e.settings.credentials, { kind: 'tls', caPath: '/ca', certPath: '/c', keyPath: '/k', serverName: undefined });
    assert.deepEqual(e.args, ['w1']);
    const i = call(['list'], { ESB_AGENT_OWNER: 'gw', ESB_AGENT_INSECURE: '1' });
    assert.deepEqual(i.settings.credentials, { kind: 'insecure' });
  });

  test('mTLS flags with a server name; -o json; --deadline', () => {
    const t = call([
      '--owner',
      'o',
      '--ca',
      'ca.pem',
      '--cert',
      'c.pem',
      '--key',
      'k.pem',
      '--server-name',
      'agent.local',
      '-o',
      'json',
      '--deadline',
      '1500ms',
      'pause',
      'w',
    ]);
    assert.deepEqual(t.settings.credentials, {
      kind: 'tls',
      caPath: 'ca.pem',
      certPath: 'c.pem',
      keyPath: 'k.pem',
      serverName: 'agent.local',
    });
    assert.equal(t.settings.output, 'json');
    assert.equal(t.settings.deadlineMs, 1500);
  });

  test('help: general and per command', () => {
    const g = parseCtl(['--help'], {});
    assert.equal(g.kind, 'help');
    const h = parseCtl(['invoke', '-h'], {});
    assert.ok(h.kind === 'help' && h.text.includes('--data-file FILE'));
  });

  const bad: [string, string[], RegExp][] = [
    ['no command', [...BASE], /missing command/],
    ['unknown command', [...BASE, 'reboot'], /unknown command "reboot"/],
    ['unknown option', [...BASE, 'list', '--bogus'], /bogus/],
    ['no owner', ['--insecure', 'list'], /--owner is required/],
    ['neither TLS nor --insecure', ['--owner', 'o', 'list'], /--ca FILE .* or --insecure/],
    ['insecure with a CA', [...BASE, '--ca', 'x', 'list'], /cannot be combined/],
    ['cert without key', ['--owner', 'o', '--ca', 'a', '--cert', 'c', 'list'], /go together/],
    ['bad output', [...BASE, '-o', 'yaml', 'list'], /json or table/],
    ['bad deadline', [...BASE, '--deadline', 'soon', 'list'], /duration/],
    ['missing id', [...BASE, 'pause'], /pause takes <container-id>, got none/],
    ['extra argument', [...BASE, 'list', 'x'], /list takes no arguments/],
    ['blank id', [...BASE, 'destroy', ' '], /must not be blank/],
    ['option of another command', [...BASE, 'list', '--image', 'x'], /--image does not apply to list/],
    ['both payload sources', [...BASE, 'invoke', 'w', '--data', '{}', '--data-file', 'f'], /exclude each other/],
  ];
  for (const [what, argv, message] of bad) {
    test(`usage error: ${what}`, () => {
      usageError(argv, message);
    });
  }
});

describe('request building', () => {
  test('ensure: --env pairs keep = in values; --memory sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE', () => {
    const inv = call([...BASE, 'ensure', 'fn', '--env', 'A=1', '--env', 'B=x=y', '--memory', '256']);
    assert.deepEqual(ensureEnv(inv.values), { A: '1', B: 'x=y', AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256' });
    assert.throws(() => ensureEnv(call([...BASE, 'ensure', 'fn', '--env', 'novalue']).values), UsageError);
    assert.throws(() => ensureEnv(call([...BASE, 'ensure', 'fn', '--memory', 'lots']).values), UsageError);
  });

  test('invoke: headers as "K: V", JSON content type unless given', () => {
    assert.deepEqual(invokeHeaders(call([...BASE, 'invoke', 'w']).values), { 'Content-Type': 'application/json' });
    assert.deepEqual(
      invokeHeaders(call([...BASE, 'invoke', 'w', '--header', 'content-type: text/plain', '--header', 'X-A: b: c']).values),
      { 'content-type': 'text/plain', 'X-A': 'b: c' },
    );
  });
});

describe('value parsers', () => {
  test('durations', () => {
    assert.equal(parseDurationMs('--d', '30s'), 30_000);
    assert.equal(parseDurationMs('--d', '2m'), 120_000);
    assert.equal(parseDurationMs('--d', '250ms'), 250);
    assert.equal(parseDurationMs('--d', '5'), 5000);
    assert.equal(parseDurationMs('--d', '0'), 0);
    assert.throws(() => parseDurationMs('--d', '-1s'), UsageError);
    assert.throws(() => parseDurationMs('--d', '25h'), /longer than 24h/);
  });
  test('integers and pairs', () => {
    assert.equal(parseIntFlag('--n', '42', 1, 100), 42);
    assert.throws(() => parseIntFlag('--n', '4.2', 1, 100), /whole number/);
    assert.throws(() => parseIntFlag('--n', '0', 1, 100), /from 1 to 100/);
    assert.deepEqual(parsePairs('--e', ['A=', 'B=2'], '='), { A: '', B: '2' });
    assert.throws(() => parsePairs('--e', ['=x'], '='), /KEY=VALUE/);
  });
});

describe('exit codes', () => {
  test('10 + gRPC code, documented in --help for every code', () => {
    assert.equal(exitCodeForGrpcStatus(0), 0);
    assert.equal(exitCodeForGrpcStatus(5), 15);
    assert.equal(exitCodeForGrpcStatus(9), 19);
    assert.equal(exitCodeForGrpcStatus(14), 24);
    const table = grpcExitCodeTable();
    assert.equal(table.length, 16);
    const help = ctlUsage();
    for (const e of table) assert.match(help, new RegExp(`\\b${e.exit}  ${e.name}\\b`));
    assert.ok(Object.keys(CTL_COMMANDS).every((c) => help.includes(`  ${c}`)));
  });

  test('runCtl: a usage error exits 64 with the message and usage on stderr', async () => {
    let err = '';
    let out = '';
    const io: CliIo = {
      env: {},
      out: (d) => (out += String(d)),
      err: (t) => (err += t),
      readStdin: () => Promise.resolve(Buffer.alloc(0)),
    };
    assert.equal(await runCtl(['list'], io), 64);
    assert.match(err, /^esb-agent ctl: --owner is required/);
    assert.match(err, /usage: esb-agent ctl/);
    assert.equal(out, '');
    assert.equal(await runCtl(['--help'], io), 0);
    assert.match(out, /usage: esb-agent ctl/);
  });
});
