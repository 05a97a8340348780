/**
 * A private, real OCI registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 with
 * its own storage under a temp dir. Optional auth: `htpasswd` (Basic) or `token` (Bearer; the
 * caller supplies the token server's realm and the cert bundle that signs its tokens).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, startDaemon, stopDaemon, waitFor, type Daemon } from './process.js';

export interface RegistryAuth {
  /** Path of an htpasswd file (bcrypt entries) → Basic auth. */
  readonly htpasswdPath?: string;
  /** Bearer token auth. */
  readonly token?: { readonly realm: string; readonly service: string; readonly issuer: string; readonly rootCertBundle: string };
}

export interface RegistryInstance {
  /** `127.0.0.1:<port>`, the reference prefix for images in it. */
  readonly host: string;
  readonly url: string;
  readonly dir: string;
  /** Stops the daemon without deleting its storage (a "registry down" test). */
  pause(): Promise<void>;
  /** Starts it again on the same port and storage. */
  restart(): Promise<void>;
  /** Stops it and removes its storage. Idempotent. */
  stop(): Promise<void>;
}

function configYaml(dir: string, port: number, auth: RegistryAuth | undefined): string {
  let authYaml = '';
  if (auth?.htpasswdPath) {
    authYaml = `auth:\n  htpasswd:\n    realm: esb-test\n    path: ${auth.htpasswdPath}\n`;
  } else if (auth?.token) {
    const t = auth.token;
    authYaml = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.rootCertBundle}\n`;
  }
  return `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${dir}/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${authYaml}`;
}

/** Starts a registry and waits until `/v2/` answers (200, or 401 when auth is on). */
export async function startRegistry(auth?: RegistryAuth): Promise<RegistryInstance> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'esb-reg-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'config.yml'), configYaml(dir, port, auth));
  const url = `http://127.0.0.1:${port}`;
  let daemon: Daemon | undefined;
  let stopped = false;
  const launch = async (): Promise<void> => {
    daemon = startDaemon('docker-registry', ['serve', path.join(dir, 'config.yml')], path.join(dir, 'registry.log'));
    await waitFor(
      'registry to answer',
      async () => {
        if (daemon?.child.exitCode !== null) throw new Error('docker-registry exited; see ' + path.join(dir, 'registry.log'));
        const res = await fetch(`${url}/v2/`);
        return res.status === 200 || res.status === 401;
      },
      15_000,
      50,
    );
  };
  await launch();
  return {
    host: `127.0.0.1:${port}`,
    url,
    dir,
    async pause() {
      if (daemon) await stopDaemon(daemon);
    },
    async restart() {
      await launch();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (daemon) await stopDaemon(daemon);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
