/**
 * `esb-agent import <tar>`: loads a `docker save` or OCI image-layout tarball into the agent's
 * containerd namespace and unpacks it, for hosts without a registry. Connection settings come
 * from the agent's own configuration (CONTAINERD_SOCKET, CONTAINERD_NAMESPACE,
 * CONTAINERD_SNAPSHOTTER), optionally read from its environment file; flags override them.
 */
import { loadConfig } from '../config/config.js';
import { ConfigError } from '../config/parse.js';
import { errorText } from '../errors.js';
import { ContainerdClient } from '../runtime/containerd/client.js';
import type { ImageLimits } from '../runtime/containerd/image/image-limits.js';
import { importImageArchive, type ImportResult } from '../runtime/containerd/image/import.js';
import { parseCommandLine, parseDurationMs } from './args.js';
import { readEnvFile } from './env-file.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './exit-codes.js';
import { UsageError, type CliIo } from './io.js';
import { renderTable, toJson } from './output.js';

/** How long containerd may take to answer the first call. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Default bound on a whole import (large images on slow disks). */
const DEFAULT_IMPORT_TIMEOUT = '30m';

export const IMPORT_USAGE = `usage: esb-agent import [options] <archive.tar>

Loads an image tarball into containerd for the agent, with no registry: the output of
'docker save' (any Docker version; gzip-compressed too) or an OCI image layout ('oci-layout',
'index.json', 'blobs/sha256/…'). Blobs are verified against their digests and the host
platform's layers are unpacked, so EnsureContainer finds the image with IMAGE_PULL_POLICY=never.
Images are named from the archive (docker RepoTags, or the io.containerd.image.name /
org.opencontainers.image.ref.name annotations), normalised like EnsureContainer's image
(esb/fn:v1 → docker.io/esb/fn:v1). An existing image of the same name with another digest is
not replaced unless --force is given. The archive and each image must stay within
AGENT_IMAGE_MAX_BYTES, AGENT_IMAGE_MAX_LAYER_BYTES and AGENT_IMAGE_MAX_LAYERS. A failed import
leaves nothing behind.

options:
  --name REF          name the image REF instead (the archive must hold one image)
  --force             replace existing images of the same name that have another digest
  --env-file FILE     read the agent's environment file first (e.g. /etc/esb-agent/env)
  --socket PATH       containerd socket (default CONTAINERD_SOCKET or /run/containerd/containerd.sock)
  --namespace NS      containerd namespace (default CONTAINERD_NAMESPACE or the brand, esb)
  --snapshotter NAME  snapshotter to unpack into (default CONTAINERD_SNAPSHOTTER or overlayfs)
  --timeout DUR       bound on the whole import (default ${DEFAULT_IMPORT_TIMEOUT})
  -o, --output FMT    table (default) or json
  -h, --help          this help

exit codes: 0 imported; 1 the import failed (the message says why); 64 wrong command line.
`;

const OPTIONS = {
  name: { type: 'string' },
  force: { type: 'boolean' },
  'env-file': { type: 'string' },
  socket: { type: 'string' },
  namespace: { type: 'string' },
  snapshotter: { type: 'string' },
  timeout: { type: 'string' },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h' },
} as const;

function summary(file: string, r: ImportResult): string {
  const rows = r.images.flatMap((img) =>
    img.names.map((name) => [
      name,
      img.target.digest,
      img.layersApplied === 0 ? 'already unpacked' : `${img.layersApplied} layer(s) unpacked`,
    ]),
  );
  return `imported ${file} (${r.format}; ${r.blobsWritten} blob(s) written, ${r.blobsPresent} already present)\n${renderTable(['IMAGE', 'DIGEST', 'SNAPSHOTS'], rows)}`;
}

/** Runs `esb-agent import <argv>`; resolves to the exit code. */
export async function runImport(argv: readonly string[], io: CliIo): Promise<number> {
  let file: string;
  let values: ReturnType<typeof parseCommandLine<typeof OPTIONS>>['values'];
  let timeoutMs: number;
  try {
    const parsed = parseCommandLine(argv, OPTIONS);
    values = parsed.values;
    if (values.help === true) {
      io.out(IMPORT_USAGE);
      return EXIT_OK;
    }
    if (parsed.positionals.length !== 1) throw new UsageError(`expected one archive, got ${parsed.positionals.length}`);
    file = parsed.positionals[0]!;
    if (values.output !== undefined && values.output !== 'json' && values.output !== 'table')
      throw new UsageError(`--output: expected json or table, got ${JSON.stringify(values.output)}`);
    timeoutMs = parseDurationMs('--timeout', values.timeout ?? DEFAULT_IMPORT_TIMEOUT);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`esb-agent import: ${err.message}\n\n${IMPORT_USAGE}`);
    return EXIT_USAGE;
  }

  let socket: string;
  let namespace: string;
  let snapshotter: string;
  let limits: ImageLimits;
  try {
    const env = values['env-file'] === undefined ? io.env : { ...io.env, ...readEnvFile(values['env-file']) };
    const config = loadConfig(env);
    socket = values.socket ?? config.containerd.socket;
    namespace = values.namespace ?? config.containerd.namespace;
    snapshotter = values.snapshotter ?? config.containerd.snapshotter;
    limits = config.images;
  } catch (err) {
    io.err(`esb-agent import: ${err instanceof ConfigError ? `invalid configuration: ${err.message}` : errorText(err)}\n`);
    return EXIT_FAILURE;
  }

  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const signal = timeoutMs > 0 ? AbortSignal.any([controller.signal, AbortSignal.timeout(timeoutMs)]) : controller.signal;
  const client = new ContainerdClient({ socket, namespace });
  try {
    await client.waitForReady(CONNECT_TIMEOUT_MS);
    await client.ensureNamespace({ signal });
    const result = await importImageArchive(file, { client, snapshotter, name: values.name, signal, limits, force: values.force === true });
    io.out(values.output === 'json' ? toJson({ file, ...result }) : summary(file, result));
    return EXIT_OK;
  } catch (err) {
    io.err(`esb-agent import: ${errorText(err)}\n`);
    return EXIT_FAILURE;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    client.close();
  }
}
