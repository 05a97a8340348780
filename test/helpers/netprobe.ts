/**
 * Network probes for the worker isolation tests: connection attempts made from inside a
 * worker's network namespace (`nsenter -t <pid> -n node ...`), listeners on the host, and the
 * test-made addresses they aim at (veth pairs, a netns with a link-local address). Everything
 * here only ever talks to loopback and to addresses a test created.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export type ProbeResult = 'connected' | 'refused' | 'timeout' | 'unreachable' | `error:${string}`;

export interface Target {
  readonly host: string;
  readonly port: number;
  readonly proto?: 'tcp' | 'udp';
}

/**
 * Runs in the worker's netns: for each target a TCP connect (or a UDP datagram waiting for
 * an answer), bounded by a timeout; prints one JSON line of results.
 */
const PROBE_SCRIPT = `
const net = require('node:net');
const dgram = require('node:dgram');
const [targets, timeoutMs] = [JSON.parse(process.argv[1]), Number(process.argv[2])];
const one = (t) => new Promise((resolve) => {
  const t0 = Date.now();
  const done = (result) => resolve({ result, ms: Date.now() - t0 });
  const classify = (e) => e.code === 'ECONNREFUSED' ? 'refused' : (e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH') ? 'unreachable' : 'error:' + e.code;
  if (t.proto === 'udp') {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => { s.close(); done('timeout'); }, timeoutMs);
    s.on('message', () => { clearTimeout(timer); s.close(); done('connected'); });
    s.on('error', (e) => { clearTimeout(timer); s.close(); done(classify(e)); });
    s.connect(t.port, t.host, () => s.send('ping'));
    return;
  }
  const s = net.connect({ host: t.host, port: t.port });
  s.setTimeout(timeoutMs, () => { s.destroy(); done('timeout'); });
  s.on('connect', () => { s.destroy(); done('connected'); });
  s.on('error', (e) => done(classify(e)));
});
Promise.all(targets.map(one)).then((r) => process.stdout.write(JSON.stringify(r)));
`;

/**
 * Probes every target at once from the netns of `pid`; each result comes within `timeoutMs`.
 * Asynchronous on purpose: the listeners answering (the UDP stand-in for DNS) run in this
 * process, whose event loop must keep turning while the probe waits.
 */
export async function probeFrom(pid: number, targets: readonly Target[], timeoutMs = 3000): Promise<{ result: ProbeResult; ms: number }[]> {
  const { stdout } = await execFileP(
    'nsenter',
    ['-t', String(pid), '-n', process.execPath, '-e', PROBE_SCRIPT, JSON.stringify(targets), String(timeoutMs)],
    { encoding: 'utf8', timeout: timeoutMs + 15_000 },
  );
  return JSON.parse(stdout) as { result: ProbeResult; ms: number }[];
}

/** One probe from the host itself (the positive controls). */
export function probeFromHost(target: Target, timeoutMs = 3000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    if (target.proto === 'udp') {
      const s = dgram.createSocket('udp4');
      const timer = setTimeout(() => {
        s.close();
        resolve('timeout');
      }, timeoutMs);
      s.on('message', () => {
        clearTimeout(timer);
        s.close();
        resolve('connected');
      });
      s.connect(target.port, target.host, () => {
        s.send('ping');
      });
      return;
    }
    const s = net.connect({ host: target.host, port: target.port });
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      resolve('timeout');
    });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      resolve(e.code === 'ECONNREFUSED' ? 'refused' : `error:${e.code ?? '?'}`);
    });
  });
}

/** A TCP listener that accepts and closes; `port` 0 = ephemeral. */
export async function tcpListener(host: string, port = 0): Promise<{ port: number; close: () => Promise<void> }> {
  // A probe resets the connection right after connecting: that is not an error here.
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end('ok');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      resolve();
    });
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  };
}

/** A UDP socket answering every datagram. */
export async function udpEcho(host: string, port: number): Promise<{ close: () => Promise<void> }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, rinfo) => {
    s.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, host, () => {
      resolve();
    });
  });
  return {
    close: () =>
      new Promise<void>((resolve) =>
        s.close(() => {
          resolve();
        }),
      ),
  };
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function tryIp(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    // already gone
  }
}

/** A veth pair on the host whose first end carries `address` (/32): another host address. */
export function hostAddress(tag: string, address: string): { address: string; remove: () => void } {
  const a = `esbha${tag}`;
  const b = `esbhb${tag}`;
  ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
  const remove = (): void => {
    tryIp('link', 'del', a);
  };
  try {
    ip('addr', 'add', `${address}/32`, 'dev', a);
    ip('link', 'set', a, 'up');
    ip('link', 'set', b, 'up');
  } catch (err) {
    remove();
    throw err;
  }
  return { address, remove };
}

/**
 * A netns holding link-local `remote` (/32) behind a veth from the host, whose host end has
 * link-local `local`; a TCP listener on remote:port inside it; and a route back to
 * `workerSubnet` so that a worker's connection would be answered if nothing refused it.
 */
export async function linkLocalPeer(
  tag: string,
  local: string,
  remote: string,
  port: number,
  workerSubnet: string,
): Promise<{ remove: () => void }> {
  const ns = `esbll${tag}`;
  const a = `esbla${tag}`;
  const b = `esblb${tag}`;
  let listener: ChildProcess | undefined;
  const remove = (): void => {
    listener?.kill('SIGKILL');
    tryIp('link', 'del', a);
    tryIp('netns', 'del', ns);
  };
  try {
    ip('netns', 'add', ns);
    ip('link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    ip('link', 'set', b, 'netns', ns);
    ip('addr', 'add', `${local}/32`, 'dev', a);
    ip('link', 'set', a, 'up');
    ip('route', 'add', `${remote}/32`, 'dev', a);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${remote}/32`, 'dev', b);
    ip('-n', ns, 'link', 'set', b, 'up');
    ip('-n', ns, 'route', 'add', `${local}/32`, 'dev', b);
    ip('-n', ns, 'route', 'add', workerSubnet, 'via', local, 'dev', b, 'onlink');
    listener = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `require('node:net').createServer((s) => { s.on('error', () => {}); s.end('ok'); }).listen(${port}, '${remote}', () => console.log('listening'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error('link-local listener did not start'));
      }, 10_000);
      listener?.stdout?.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      listener?.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`link-local listener exited (${code ?? 'signal'})`));
      });
    });
  } catch (err) {
    remove();
    throw err;
  }
  return { remove };
}
