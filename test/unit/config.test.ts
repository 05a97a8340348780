import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { CONFIG_VARIABLES, loadConfig, plaintextExposed } from '../../src/config/config.js';
import { safeName } from '../../src/worker/safe-name.js';
import {
  ConfigError,
  hostPort,
  ipv4ToString,
  isLoopbackAddress,
  parseIpv4Cidr,
  readBool,
  readEnum,
  readInt,
  readIpv4,
  readString,
  readUnixSocket,
} from '../../src/config/parse.js';

/** Asserts `fn` throws a ConfigError for `variable` whose message starts with the variable's name. */
function configError(fn: () => unknown, variable: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.variable, variable);
    assert.ok(err.message.startsWith(`${variable}: `), err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('loadConfig defaults (docs/configuration.md#variables)', () => {
  const c = loadConfig({ HOME: '/home/agent' });
  const cases: [string, unknown, unknown][] = [
    ['PORT', c.port, 50051],
    ['AGENT_RUNTIME', c.runtime, 'containerd'],
    ['ENV', c.env, 'default'],
    ['ESB_BRAND_SLUG', c.brand, 'esb'],
    ['CONTAINERD_SOCKET', c.containerd.socket, '/run/containerd/containerd.sock'],
    ['CONTAINERD_NAMESPACE', c.containerd.namespace, 'esb'],
    ['CONTAINERD_RUNTIME', c.containerd.runtime, 'io.containerd.runc.v2'],
    ['CONTAINERD_SNAPSHOTTER', c.containerd.snapshotter, 'overlayfs'],
    ['CNI_CONF_DIR', c.cni.confDir, '/etc/cni/net.d'],
    ['CNI_CONF_FILE', c.cni.confFile, '/etc/cni/net.d/10-esb-net.conflist'],
    ['CNI_BIN_DIR', c.cni.binDirs, ['/opt/cni/bin']],
    ['CNI_SUBNET', c.cni.subnet, '10.88.0.0/16'],
    ['CNI_BRIDGE', c.cni.bridge, 'esb0'],
    ['CNI_GW_IP', c.cni.gatewayIp, '10.88.0.1'],
    ['CNI_DNS_SERVER', c.cni.dnsServer, '10.88.0.1'],
    ['CNI_NET_DIR', c.cni.netDir, '/var/lib/cni/networks'],
    ['AGENT_STATE_DIR', c.stateDir, '/var/lib/esb-agent'],
    ['CONTAINER_REGISTRY', c.registry.defaultRegistry, 'registry:5010'],
    ['CONTAINER_REGISTRY_INSECURE', c.registry.insecure, []],
    ['AGENT_ALLOWED_REGISTRIES', c.registry.allowed, [{ kind: 'exact', hostname: 'registry', port: '5010' }]],
    ['AGENT_MAX_CONCURRENT_PULLS', c.images.maxConcurrentPulls, 2],
    ['AGENT_IMAGE_MAX_LAYERS', c.images.maxLayers, 128],
    ['AGENT_IMAGE_MAX_LAYER_BYTES', c.images.maxLayerBytes, 2 * 1024 ** 3],
    ['AGENT_IMAGE_MAX_BYTES', c.images.maxImageBytes, 4 * 1024 ** 3],
    ['CONTAINER_REGISTRY_CA_FILE', c.registry.caFile, undefined],
    ['DOCKER_CONFIG', c.registry.dockerConfigDir, '/home/agent/.docker'],
    ['ESB_TAG', c.tag, 'latest'],
    ['IMAGE_PULL_POLICY', c.pullPolicy, 'if-not-present'],
    ['AGENT_DEFAULT_MEMORY_MB', c.defaultMemoryMb, 128],
    ['AGENT_INVOKE_MAX_RESPONSE_SIZE', c.invoke.maxResponseBytes, 10_485_760],
    ['AGENT_INVOKE_DEFAULT_TIMEOUT_MS', c.invoke.defaultTimeoutMs, 30_000],
    ['AGENT_GRPC_CERT_PATH', c.tls?.certPath, '/app/config/ssl/server.crt'],
    ['AGENT_GRPC_KEY_PATH', c.tls?.keyPath, '/app/config/ssl/server.key'],
    ['AGENT_GRPC_CA_CERT_PATH', c.tls?.caCertPath, '/usr/local/share/ca-certificates/rootCA.crt'],
    ['AGENT_GRPC_REFLECTION', c.reflection, false],
    ['AGENT_METRICS_PORT', c.metricsPort, 9091],
    ['AGENT_LOG_LEVEL', c.logLevel, 'info'],
    ['AGENT_LOG_FORMAT', c.logFormat, 'json'],
    ['AGENT_SHUTDOWN_POLICY', c.shutdownPolicy, 'keep'],
    ['AGENT_WORKER_LOG_MAX_BYTES', c.workerLogMaxBytes, 10_485_760],
    ['DOCKER_HOST', c.docker.host, 'unix:///var/run/docker.sock'],
    ['CONTAINERS_NETWORK', c.docker.network, 'bridge'],
    ['AGENT_GRPC_ADDRESS', c.grpcAddress, '0.0.0.0'],
    ['AGENT_METRICS_ADDRESS', c.metricsAddress, '127.0.0.1'],
    ['AGENT_GRPC_ALLOWED_CLIENTS', c.allowedClients, []],
    ['AGENT_GRPC_MAX_IN_FLIGHT', c.grpcMaxInFlight, 512],
    ['AGENT_GRPC_MAX_CONCURRENT_STREAMS', c.grpcMaxConcurrentStreams, 1024],
    ['AGENT_INVOKE_MAX_QUEUE', c.invoke.maxQueue, 32],
  ];
  for (const [variable, actual, expected] of cases) {
    test(`${variable} defaults to ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(actual, expected);
    });
  }
  test('mTLS is on by default (AGENT_GRPC_TLS_DISABLED unset)', () => {
    assert.notEqual(c.tls, undefined);
  });
  test('the result is frozen, nested objects too', () => {
    assert.ok(Object.isFrozen(c));
    assert.ok(Object.isFrozen(c.containerd));
    assert.ok(Object.isFrozen(c.cni.binDirs));
  });
  test('registry lists: 1/true = the CONTAINER_REGISTRY host, 0/false = none, else host patterns; a blank CONTAINER_REGISTRY allows docker.io', () => {
    const on = loadConfig({ CONTAINER_REGISTRY: 'Reg.example:5000/esb', CONTAINER_REGISTRY_INSECURE: 'true' });
    assert.deepEqual(on.registry.insecure, [{ kind: 'exact', hostname: 'reg.example', port: '5000' }]);
    assert.deepEqual(on.registry.allowed, on.registry.insecure);
    assert.deepEqual(loadConfig({ CONTAINER_REGISTRY_INSECURE: '0' }).registry.insecure, []);
    assert.deepEqual(loadConfig({ CONTAINER_REGISTRY_INSECURE: ' 127.0.0.1:5000 , *.lan ' }).registry.insecure, [
      { kind: 'exact', hostname: '127.0.0.1', port: '5000' },
      { kind: 'suffix', suffix: '.lan', port: undefined },
    ]);
    assert.deepEqual(loadConfig({ CONTAINER_REGISTRY: '' }).registry.allowed, [{ kind: 'exact', hostname: 'docker.io', port: undefined }]);
    assert.deepEqual(loadConfig({ AGENT_ALLOWED_REGISTRIES: '*' }).registry.allowed, [{ kind: 'any' }]);
  });
  test('DOCKER_CONFIG falls back to the OS home when HOME is unset', () => {
    assert.equal(loadConfig({}).registry.dockerConfigDir, path.join(os.homedir(), '.docker'));
  });
  test('CONFIG_VARIABLES lists every variable of the spec table', () => {
    for (const [variable] of cases) assert.ok((CONFIG_VARIABLES as readonly string[]).includes(variable), variable);
  });
});

describe('listen addresses and client allowlist', () => {
  test('plaintext defaults to loopback; an explicit address is kept and marked explicit', () => {
    const plain = loadConfig({ AGENT_GRPC_TLS_DISABLED: '1' });
    assert.equal(plain.grpcAddress, '127.0.0.1');
    assert.equal(plain.grpcAddressExplicit, false);
    assert.equal(plaintextExposed(plain), false);
    const open = loadConfig({ AGENT_GRPC_TLS_DISABLED: '1', AGENT_GRPC_ADDRESS: '0.0.0.0' });
    assert.equal(open.grpcAddress, '0.0.0.0');
    assert.equal(open.grpcAddressExplicit, true);
    assert.equal(plaintextExposed(open), true);
    assert.equal(plaintextExposed(loadConfig({ AGENT_GRPC_ADDRESS: '0.0.0.0' })), false, 'mTLS on any address is not plaintext exposure');
    assert.equal(loadConfig({ AGENT_GRPC_ADDRESS: '[::1]', AGENT_METRICS_ADDRESS: '::' }).grpcAddress, '::1');
    assert.equal(loadConfig({ AGENT_METRICS_ADDRESS: '::' }).metricsAddress, '::');
  });
  test('addresses must be IP literals', () => {
    for (const bad of ['localhost', '0.0.0.0:50051', '10.0.0.256', 'http://1.2.3.4', '::1::2']) {
      configError(() => loadConfig({ AGENT_GRPC_ADDRESS: bad }), 'AGENT_GRPC_ADDRESS', /IPv4 or IPv6 address/);
      configError(() => loadConfig({ AGENT_METRICS_ADDRESS: bad }), 'AGENT_METRICS_ADDRESS', /IPv4 or IPv6 address/);
    }
  });
  test('AGENT_GRPC_ALLOWED_CLIENTS: comma-separated, trimmed; refused without TLS and with spaces inside an entry', () => {
    assert.deepEqual(loadConfig({ AGENT_GRPC_ALLOWED_CLIENTS: ' gw.example , spiffe://esb/gw,,' }).allowedClients, [
      'gw.example',
      'spiffe://esb/gw',
    ]);
    configError(
      () => loadConfig({ AGENT_GRPC_TLS_DISABLED: '1', AGENT_GRPC_ALLOWED_CLIENTS: 'gw' }),
      'AGENT_GRPC_ALLOWED_CLIENTS',
      /needs TLS/,
    );
    configError(() => loadConfig({ AGENT_GRPC_ALLOWED_CLIENTS: 'a b' }), 'AGENT_GRPC_ALLOWED_CLIENTS');
  });
  test('bounds are positive integers (the invoke queue may be 0: no waiting at all)', () => {
    configError(() => loadConfig({ AGENT_GRPC_MAX_IN_FLIGHT: '0' }), 'AGENT_GRPC_MAX_IN_FLIGHT');
    configError(() => loadConfig({ AGENT_GRPC_MAX_CONCURRENT_STREAMS: '0' }), 'AGENT_GRPC_MAX_CONCURRENT_STREAMS');
    configError(() => loadConfig({ AGENT_INVOKE_MAX_QUEUE: '-1' }), 'AGENT_INVOKE_MAX_QUEUE');
    assert.equal(loadConfig({ AGENT_INVOKE_MAX_QUEUE: '0' }).invoke.maxQueue, 0);
  });
  test('isLoopbackAddress: 127/8, ::1 and IPv4-mapped loopback only', () => {
    for (const a of ['127.0.0.1', '127.9.8.7', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) assert.equal(isLoopbackAddress(a), true, a);
    for (const a of ['0.0.0.0', '::', '10.0.0.1', '::ffff:10.0.0.1', 'fe80::1', '128.0.0.1']) assert.equal(isLoopbackAddress(a), false, a);
  });
  test('hostPort brackets IPv6', () => {
    assert.equal(hostPort('::1', 5), '[::1]:5');
    assert.equal(hostPort('127.0.0.1', 5), '127.0.0.1:5');
  });
});

describe('loadConfig derived values', () => {
  test('brand drives namespace, bridge and conflist name; CNI values follow CNI_SUBNET', () => {
    const c = loadConfig({ ESB_BRAND_SLUG: 'Acme Corp', CNI_SUBNET: '10.99.3.7/24', CNI_CONF_DIR: '/tmp/cni' });
    assert.equal(c.brand, 'acme-corp');
    assert.equal(c.containerd.namespace, 'acme-corp');
    assert.equal(c.cni.bridge, 'acme-corp0');
    assert.equal(c.cni.confFile, '/tmp/cni/10-acme-corp-net.conflist');
    assert.equal(c.cni.subnet, '10.99.3.0/24');
    assert.equal(c.cni.gatewayIp, '10.99.3.1');
    assert.equal(c.cni.dnsServer, '10.99.3.1');
  });
  test('AGENT_GRPC_TLS_DISABLED=1 → no TLS; AGENT_LOG_LEVEL wins over LOG_LEVEL', () => {
    const c = loadConfig({ AGENT_GRPC_TLS_DISABLED: '1', AGENT_LOG_LEVEL: 'debug', LOG_LEVEL: 'error' });
    assert.equal(c.tls, undefined);
    assert.equal(c.logLevel, 'debug');
    assert.equal(loadConfig({ LOG_LEVEL: 'warn' }).logLevel, 'warn');
  });
  test('CNI_BIN_DIR takes a colon-separated list; CONTAINER_REGISTRY loses trailing slashes; blank values mean unset', () => {
    const c = loadConfig({ CNI_BIN_DIR: '/opt/cni/bin:/usr/lib/cni', CONTAINER_REGISTRY: 'reg.example:5000/team/', PORT: '  ' });
    assert.deepEqual(c.cni.binDirs, ['/opt/cni/bin', '/usr/lib/cni']);
    assert.equal(c.registry.defaultRegistry, 'reg.example:5000/team');
    assert.equal(c.port, 50051);
  });
});

describe('loadConfig rejects bad values, naming the variable', () => {
  const cases: [Record<string, string>, string][] = [
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '65536' }, 'PORT'],
    [{ PORT: '-1' }, 'PORT'],
    [{ AGENT_RUNTIME: 'podman' }, 'AGENT_RUNTIME'],
    [{ IMAGE_PULL_POLICY: 'sometimes' }, 'IMAGE_PULL_POLICY'],
    [{ AGENT_INVOKE_MAX_RESPONSE_SIZE: '-1' }, 'AGENT_INVOKE_MAX_RESPONSE_SIZE'],
    [{ AGENT_INVOKE_MAX_RESPONSE_SIZE: '10MB' }, 'AGENT_INVOKE_MAX_RESPONSE_SIZE'],
    [{ AGENT_INVOKE_DEFAULT_TIMEOUT_MS: '0' }, 'AGENT_INVOKE_DEFAULT_TIMEOUT_MS'],
    [{ AGENT_GRPC_TLS_DISABLED: 'maybe' }, 'AGENT_GRPC_TLS_DISABLED'],
    [{ AGENT_GRPC_REFLECTION: '2' }, 'AGENT_GRPC_REFLECTION'],
    [{ CONTAINER_REGISTRY_INSECURE: 'http://reg' }, 'CONTAINER_REGISTRY_INSECURE'],
    [{ AGENT_ALLOWED_REGISTRIES: 'reg:99999' }, 'AGENT_ALLOWED_REGISTRIES'],
    [{ AGENT_ALLOWED_REGISTRIES: 'a/b' }, 'AGENT_ALLOWED_REGISTRIES'],
    [{ AGENT_MAX_CONCURRENT_PULLS: '0' }, 'AGENT_MAX_CONCURRENT_PULLS'],
    [{ AGENT_IMAGE_MAX_LAYERS: 'many' }, 'AGENT_IMAGE_MAX_LAYERS'],
    [{ CNI_SUBNET: '10.0.0.0/40' }, 'CNI_SUBNET'],
    [{ CNI_SUBNET: '10.0.0.0' }, 'CNI_SUBNET'],
    [{ CNI_SUBNET: '300.0.0.0/16' }, 'CNI_SUBNET'],
    [{ CNI_GW_IP: '10.88.0.256' }, 'CNI_GW_IP'],
    [{ CNI_DNS_SERVER: 'dns.example' }, 'CNI_DNS_SERVER'],
    [{ CNI_BRIDGE: 'a-bridge-name-too-long' }, 'CNI_BRIDGE'],
    [{ CNI_BIN_DIR: 'relative/bin' }, 'CNI_BIN_DIR'],
    [{ AGENT_LOG_FORMAT: 'xml' }, 'AGENT_LOG_FORMAT'],
    [{ AGENT_LOG_LEVEL: 'loud' }, 'AGENT_LOG_LEVEL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ AGENT_SHUTDOWN_POLICY: 'nuke' }, 'AGENT_SHUTDOWN_POLICY'],
    [{ AGENT_SHUTDOWN_GRACE_MS: 'soon' }, 'AGENT_SHUTDOWN_GRACE_MS'],
    [{ AGENT_METRICS_PORT: '70000' }, 'AGENT_METRICS_PORT'],
    [{ AGENT_DEFAULT_MEMORY_MB: '1' }, 'AGENT_DEFAULT_MEMORY_MB'],
    [{ AGENT_WORKER_LOG_MAX_BYTES: '-1' }, 'AGENT_WORKER_LOG_MAX_BYTES'],
    [{ AGENT_WORKER_LOG_MAX_BYTES: '10MiB' }, 'AGENT_WORKER_LOG_MAX_BYTES'],
    [{ CONTAINERD_SOCKET: 'run/containerd.sock' }, 'CONTAINERD_SOCKET'],
    [{ CONTAINER_REGISTRY: 'https://registry:5010' }, 'CONTAINER_REGISTRY'],
    [{ DOCKER_HOST: 'http://localhost:2375' }, 'DOCKER_HOST'],
    [{ ESB_BRAND_SLUG: '---' }, 'ESB_BRAND_SLUG'],
    [{ ENV: '!!!' }, 'ENV'],
    [{ CONTAINERD_RUNTIME: 'io.containerd.runtime.v1.linux' }, 'CONTAINERD_RUNTIME'],
    [{ CONTAINERD_RUNTIME: 'io.containerd.runc.v1' }, 'CONTAINERD_RUNTIME'],
    [{ AGENT_WORKER_READONLY_ROOTFS: 'perhaps' }, 'AGENT_WORKER_READONLY_ROOTFS'],
    [{ AGENT_WORKER_TMP_SIZE_MB: '0' }, 'AGENT_WORKER_TMP_SIZE_MB'],
    [{ AGENT_WORKER_TMP_SIZE_MB: '512M' }, 'AGENT_WORKER_TMP_SIZE_MB'],
    [{ AGENT_MAX_WORKERS: '-1' }, 'AGENT_MAX_WORKERS'],
    [{ AGENT_MAX_TOTAL_MEMORY_MB: 'lots' }, 'AGENT_MAX_TOTAL_MEMORY_MB'],
  ];
  for (const [env, variable] of cases) {
    test(`${JSON.stringify(env)} → ConfigError ${variable}`, () => {
      configError(() => loadConfig(env), variable);
    });
  }
});

describe('parsers', () => {
  test('readString: trimmed, blank → undefined', () => {
    assert.equal(readString({ A: '  x ' }, 'A'), 'x');
    assert.equal(readString({ A: '   ' }, 'A'), undefined);
    assert.equal(readString({}, 'A'), undefined);
  });

  const ints: [string | undefined, number | null][] = [
    [undefined, 7],
    ['0', 0],
    ['10', 10],
    [' 10 ', 10],
    ['11', null],
    ['-1', null],
    ['1.5', null],
    ['1e3', null],
    ['0x10', null],
    ['abc', null],
    ['99999999999999999999', null],
  ];
  for (const [raw, expected] of ints) {
    test(`readInt(${JSON.stringify(raw)}, fallback 7, range 0..10) → ${expected ?? 'ConfigError'}`, () => {
      const env = raw === undefined ? {} : { N: raw };
      if (expected === null) configError(() => readInt(env, 'N', 7, 0, 10), 'N', /expected an integer/);
      else assert.equal(readInt(env, 'N', 7, 0, 10), expected);
    });
  }

  const bools: [string | undefined, boolean | null][] = [
    [undefined, false],
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['yes', true],
    ['on', true],
    ['0', false],
    ['false', false],
    ['no', false],
    ['Off', false],
    ['maybe', null],
    ['2', null],
    ['y', null],
  ];
  for (const [raw, expected] of bools) {
    test(`readBool(${JSON.stringify(raw)}) → ${expected ?? 'ConfigError'}`, () => {
      const env = raw === undefined ? {} : { B: raw };
      if (expected === null) configError(() => readBool(env, 'B', false), 'B', /expected 1\/true\/yes\/on or 0\/false\/no\/off/);
      else assert.equal(readBool(env, 'B', false), expected);
    });
  }

  test('readEnum: exact words only (case matters), message lists the choices', () => {
    assert.equal(readEnum({ E: 'b' }, 'E', 'a', ['a', 'b']), 'b');
    assert.equal(readEnum({}, 'E', 'a', ['a', 'b']), 'a');
    configError(() => readEnum({ E: 'B' }, 'E', 'a', ['a', 'b']), 'E', /expected one of a, b, got "B"/);
  });

  const cidrs: [string, { network: string; prefix: number } | null][] = [
    ['10.88.0.0/16', { network: '10.88.0.0', prefix: 16 }],
    ['10.88.7.9/16', { network: '10.88.0.0', prefix: 16 }],
    ['192.168.1.0/30', { network: '192.168.1.0', prefix: 30 }],
    ['10.0.0.0/8', { network: '10.0.0.0', prefix: 8 }],
    ['10.0.0.0/7', null],
    ['10.0.0.0/31', null],
    ['10.0.0.0/40', null],
    ['10.0.0/16', null],
    ['10.0.0.256/16', null],
    ['fd00::/64', null],
  ];
  for (const [raw, expected] of cidrs) {
    test(`parseIpv4Cidr(${raw}) → ${expected ? `${expected.network}/${expected.prefix}` : 'ConfigError'}`, () => {
      if (expected === null) configError(() => parseIpv4Cidr('CNI_SUBNET', raw), 'CNI_SUBNET');
      else {
        const r = parseIpv4Cidr('CNI_SUBNET', raw);
        assert.deepEqual({ network: ipv4ToString(r.network), prefix: r.prefix }, expected);
      }
    });
  }

  test('readIpv4', () => {
    assert.equal(readIpv4({ I: '10.0.0.1' }, 'I'), '10.0.0.1');
    assert.equal(readIpv4({}, 'I'), undefined);
    configError(() => readIpv4({ I: '10.0.0' }, 'I'), 'I');
    configError(() => readIpv4({ I: '1.2.3.999' }, 'I'), 'I');
  });

  test('readUnixSocket: absolute path or unix:///path', () => {
    assert.equal(readUnixSocket({}, 'S', '/run/x.sock'), '/run/x.sock');
    assert.equal(readUnixSocket({ S: 'unix:///run/y.sock' }, 'S', '/run/x.sock'), '/run/y.sock');
    assert.equal(readUnixSocket({ S: '/run/z.sock' }, 'S', '/run/x.sock'), '/run/z.sock');
    configError(() => readUnixSocket({ S: 'unix://run/y.sock' }, 'S', '/x'), 'S');
    configError(() => readUnixSocket({ S: 'tcp://1.2.3.4:1' }, 'S', '/x'), 'S');
  });
});

describe('safeName (docs/contract.md#worker-ids: lower-case, keep [a-z0-9._-], fold separator runs, trim them)', () => {
  const cases: [string, string][] = [
    ['hello', 'hello'],
    ['Hello-World', 'hello-world'],
    ['my_func.v2', 'my_func.v2'],
    ['My Function', 'my-function'],
    ['a  b', 'a-b'],
    ['a--b', 'a-b'],
    ['a.-_b', 'a-b'],
    ['a..b', 'a-b'],
    ['a/b:c@d', 'a-b-c-d'],
    ['--edge--', 'edge'],
    ['..dots..', 'dots'],
    ['_x_', 'x'],
    ['  spaced  ', 'spaced'],
    ['Ünïcödé', 'n-c-d'],
    ['関数', ''],
    ['!!!', ''],
    ['', ''],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} → ${JSON.stringify(expected)}`, () => {
      assert.equal(safeName(input), expected);
    });
  }
});

test('worker firewall: on by default; allowed host ports parse as port or port/proto', () => {
  const base = loadConfig({});
  assert.equal(base.workerFirewall.enabled, true);
  assert.deepEqual(base.workerFirewall.allowedHostPorts, []);
  assert.equal(loadConfig({ AGENT_WORKER_FIREWALL: 'false' }).workerFirewall.enabled, false);
  assert.deepEqual(loadConfig({ AGENT_WORKER_ALLOWED_HOST_PORTS: ' 3128, 8125/udp ,443/TCP,3128/tcp' }).workerFirewall.allowedHostPorts, [
    { port: 3128, proto: 'tcp' },
    { port: 8125, proto: 'udp' },
    { port: 443, proto: 'tcp' },
  ]);
  for (const bad of ['0', '65536', 'http', '53/sctp', '1-100', '22/']) {
    assert.throws(() => loadConfig({ AGENT_WORKER_ALLOWED_HOST_PORTS: bad }), /AGENT_WORKER_ALLOWED_HOST_PORTS/, bad);
  }
  assert.throws(() => loadConfig({ AGENT_WORKER_FIREWALL: 'maybe' }), /AGENT_WORKER_FIREWALL/);
});
