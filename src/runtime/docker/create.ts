/**
 * The `POST /containers/create` body of a worker: the same limits as a containerd worker
 * (memory without extra swap, cpu shares scaled with memory, pids limit, RLIMIT_NOFILE,
 * no-new-privileges, the agent's capability set and seccomp profile, a read-only root with a
 * /tmp tmpfs) and the same labels, attached to
 * CONTAINERS_NETWORK. Entrypoint, cmd, workdir, user and env come from the image; the request
 * env is added and wins (dockerd merges `Env` over the image's).
 */
import {
  cpuSharesForMemory,
  tmpfsOptions,
  DEFAULT_CAPABILITIES,
  DROPPED_CAPABILITIES,
  WORKER_NOFILE,
  WORKER_PIDS_LIMIT,
} from '../../worker/limits.js';
import { defaultSeccompProfile } from '../../worker/seccomp.js';
import { workerHostname, workerLabels, type LabelInput } from '../../worker/naming.js';

export interface WorkerContainerInput {
  readonly id: string;
  /** Name dockerd knows the image by (pull.ts dockerImageName). */
  readonly image: string;
  /** Request env, as sent. */
  readonly env: Readonly<Record<string, string>>;
  readonly memoryMb: number;
  /** AGENT_WORKER_READONLY_ROOTFS and AGENT_WORKER_TMP_SIZE_MB: the same filesystem model as containerd. */
  readonly readonlyRootfs: boolean;
  readonly tmpSizeMb: number;
  readonly network: string;
  readonly labels: Omit<LabelInput, 'ip' | 'netns' | 'cniNetwork'>;
}

/** Each worker's json-file log is capped so a chatty function cannot fill dockerd's disk. */
const LOG_MAX_SIZE = '10m';
const LOG_MAX_FILES = '2';

/**
 * The labels of a docker worker: containerd's set. The IP and netns labels are left out: on
 * docker the IP lives in the endpoint of CONTAINERS_NETWORK and the netns is dockerd's.
 */
export function dockerWorkerLabels(input: WorkerContainerInput): Record<string, string> {
  const all = workerLabels({ ...input.labels, ip: '', netns: '', cniNetwork: input.network });
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== ''));
}

/** The seccomp profile as dockerd takes it in a `seccomp=` security option (computed once). */
let seccompText: string | undefined;
function seccompJson(): string {
  seccompText ??= JSON.stringify(defaultSeccompProfile(DEFAULT_CAPABILITIES));
  return seccompText;
}

/** The Engine API create body of one worker. */
export function workerContainerBody(input: WorkerContainerInput): Record<string, unknown> {
  const memoryBytes = input.memoryMb * 1024 * 1024;
  return {
    Image: input.image,
    Hostname: workerHostname(input.id),
    Env: Object.entries(input.env).map(([k, v]) => `${k}=${v}`),
    Labels: dockerWorkerLabels(input),
    HostConfig: {
      Memory: memoryBytes,
      // Equal to Memory: no swap on top of the limit, as on containerd.
      MemorySwap: memoryBytes,
      // The worker CPU rule (worker/limits.ts), so both runtimes weigh workers alike.
      CpuShares: cpuSharesForMemory(input.memoryMb),
      PidsLimit: WORKER_PIDS_LIMIT,
      Ulimits: [{ Name: 'nofile', Soft: WORKER_NOFILE, Hard: WORKER_NOFILE }],
      // The containerd worker's capability set and seccomp profile (no CAP_NET_RAW, no
      // io_uring): dockerd's own defaults differ by version, the agent's do not.
      CapDrop: DROPPED_CAPABILITIES.map((c) => c.replace(/^CAP_/, '')),
      SecurityOpt: ['no-new-privileges', `seccomp=${seccompJson()}`],
      ReadonlyRootfs: input.readonlyRootfs,
      Tmpfs: { '/tmp': tmpfsOptions(input.tmpSizeMb).join(',') },
      NetworkMode: input.network,
      RestartPolicy: { Name: 'no' },
      LogConfig: { Type: 'json-file', Config: { 'max-size': LOG_MAX_SIZE, 'max-file': LOG_MAX_FILES } },
    },
    NetworkingConfig: { EndpointsConfig: { [input.network]: {} } },
  };
}
