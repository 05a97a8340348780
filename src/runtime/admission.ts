/**
 * Host-wide admission of new workers: AGENT_MAX_WORKERS and AGENT_MAX_TOTAL_MEMORY_MB.
 *
 * One tenant must not be able to take the whole host, and the sum of the workers' memory
 * limits must stay below what the host has, or the kernel's OOM killer picks victims among
 * every tenant (and the agent). An Ensure reserves its slot synchronously, before anything is
 * made, so concurrent Ensures can never together cross a limit; the reservation is released
 * when the worker enters the worker table (from then on the table counts it) or when the
 * Ensure fails.
 *
 * What counts: every worker in the table against AGENT_MAX_WORKERS (a stopped worker still
 * holds a container, snapshot and state files until it is destroyed), and the memory limit
 * of every worker that is not STOPPED against AGENT_MAX_TOTAL_MEMORY_MB (a stopped worker's
 * cgroup holds no memory).
 */
import { AgentError } from '../errors.js';
import type { WorkerState } from './runtime.js';

export interface AdmissionLimits {
  /** 0 = no limit. */
  readonly maxWorkers: number;
  /** MiB; 0 = no limit. */
  readonly maxTotalMemoryMb: number;
}

export type AdmissionLimit = 'workers' | 'memory';

/** A slot held by one Ensure; release() is idempotent. */
export interface Reservation {
  release(): void;
}

export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #workers: () => Iterable<Pick<WorkerState, 'status' | 'memoryMb'>>;
  readonly #onRefused: ((limit: AdmissionLimit) => void) | undefined;
  #pendingWorkers = 0;
  #pendingMemoryMb = 0;

  constructor(
    limits: AdmissionLimits,
    workers: () => Iterable<Pick<WorkerState, 'status' | 'memoryMb'>>,
    onRefused?: (limit: AdmissionLimit) => void,
  ) {
    this.#limits = limits;
    this.#workers = workers;
    this.#onRefused = onRefused;
  }

  /** Workers and memory (MiB) in use or reserved right now. */
  usage(): { workers: number; memoryMb: number } {
    let workers = this.#pendingWorkers;
    let memoryMb = this.#pendingMemoryMb;
    for (const w of this.#workers()) {
      workers++;
      if (w.status !== 'STOPPED') memoryMb += w.memoryMb;
    }
    return { workers, memoryMb };
  }

  /**
   * Reserves room for one worker of `memoryMb`, or throws RESOURCE_EXHAUSTED naming the limit.
   * Synchronous on purpose: no other Ensure can slip in between the check and the reservation.
   */
  reserve(memoryMb: number): Reservation {
    const { maxWorkers, maxTotalMemoryMb } = this.#limits;
    const used = this.usage();
    if (maxWorkers > 0 && used.workers + 1 > maxWorkers) {
      this.#onRefused?.('workers');
      throw new AgentError(
        'RESOURCE_EXHAUSTED',
        `EnsureContainer refused: this host already has ${used.workers} workers (existing or being created), the limit AGENT_MAX_WORKERS=${maxWorkers}; destroy workers or raise the limit`,
      );
    }
    if (maxTotalMemoryMb > 0 && used.memoryMb + memoryMb > maxTotalMemoryMb) {
      this.#onRefused?.('memory');
      throw new AgentError(
        'RESOURCE_EXHAUSTED',
        `EnsureContainer refused: a worker of ${memoryMb} MiB would bring the memory limits of this host's workers to ${used.memoryMb + memoryMb} MiB, over AGENT_MAX_TOTAL_MEMORY_MB=${maxTotalMemoryMb}; destroy workers, ask for less memory or raise the limit`,
      );
    }
    this.#pendingWorkers++;
    this.#pendingMemoryMb += memoryMb;
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.#pendingWorkers--;
        this.#pendingMemoryMb -= memoryMb;
      },
    };
  }
}
