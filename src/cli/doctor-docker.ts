/**
 * `esb-agent doctor` for AGENT_RUNTIME=docker: dockerd answers at DOCKER_HOST, its Engine API
 * is new enough for the agent's client, and CONTAINERS_NETWORK exists (the agent's start-up
 * refuses to run otherwise). containerd, runc and CNI are dockerd's business on such a host.
 */
import type { Config } from '../config/config.js';
import { errorText } from '../errors.js';
import { DockerEngineClient } from '../runtime/docker/engine-client.js';

const TIMEOUT_MS = 3000;

export async function checkDockerd(config: Config): Promise<{ name: string; status: 'OK' | 'FAIL'; message: string; fix?: string }> {
  const name = 'dockerd';
  const client = new DockerEngineClient({ host: config.docker.host });
  const fix = `start dockerd, or point DOCKER_HOST at its API (now ${config.docker.host})`;
  try {
    await client.ping(AbortSignal.timeout(TIMEOUT_MS));
    const v = await client.json<{ Version: string; ApiVersion: string }>({
      method: 'GET',
      path: '/version',
      what: 'dockerd version',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const net = await client.request({
      method: 'GET',
      path: `/networks/${encodeURIComponent(config.docker.network)}`,
      what: 'inspect network',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (net.status === 404) {
      return {
        name,
        status: 'FAIL',
        message: `dockerd ${v.Version} answers, but CONTAINERS_NETWORK ${config.docker.network} does not exist`,
        fix: `create it (docker network create ${config.docker.network}) or set CONTAINERS_NETWORK`,
      };
    }
    return {
      name,
      status: 'OK',
      message: `dockerd ${v.Version} (API ${v.ApiVersion}) at ${config.docker.host}; network ${config.docker.network}`,
    };
  } catch (err) {
    return { name, status: 'FAIL', message: `dockerd at ${config.docker.host} does not answer: ${errorText(err)}`, fix };
  } finally {
    await client.close();
  }
}
