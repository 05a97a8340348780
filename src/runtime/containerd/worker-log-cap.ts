/**
 * Size cap of the per-worker log files (`<stateDir>/workers/<id>/output.log`, issue 6 §5). A
 * worker that prints without end must not fill the host's disk. The shim opens the log with
 * O_APPEND, so the agent can rotate it under the running worker by copy-truncate: the newest
 * `maxBytes` go to `output.log.1` (replacing the previous one), then the live file is cut to
 * 0 and the shim's next write lands at the new end. Disk use per worker stays at most 2× the
 * cap, plus what the worker writes between two sweeps. What a worker writes while the copy runs
 * is lost; that is the price of not stopping the worker.
 */
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { lstat, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { errnoCode, errorText } from '../../errors.js';
import type { Logger } from '../../log.js';
import { listWorkerFileIds, workerFiles } from './worker-files.js';

/** How often the logs are checked: a worker can outgrow the cap by one interval's output. */
export const WORKER_LOG_SWEEP_INTERVAL_MS = 5_000;

/** The single rotated generation kept next to a log. */
export function rotatedLogPath(logFile: string): string {
  return `${logFile}.1`;
}

export interface LogCapResult {
  /** Size of the live file when it was checked (0 when it does not exist). */
  readonly sizeBytes: number;
  readonly rotated: boolean;
}

const isMissing = (err: unknown): boolean => errnoCode(err) === 'ENOENT';

/**
 * Rotates `logFile` when it is larger than `maxBytes`: its newest `maxBytes` as of the check (and
 * never more) go to `<logFile>.1`, written via a temp file and renamed so the old
 * generation is replaced whole, then `logFile` is truncated to 0. A missing file is not an
 * error (the worker may be gone).
 */
export async function capLogFile(logFile: string, maxBytes: number): Promise<LogCapResult> {
  let sizeBytes: number;
  try {
    const st = await lstat(logFile);
    // Only a regular file is ever read or cut: a symlink, FIFO or device put in its place is
    // never followed or opened (opening a FIFO would wait for a writer for good).
    if (!st.isFile()) return { sizeBytes: 0, rotated: false };
    sizeBytes = st.size;
  } catch (err) {
    if (isMissing(err)) return { sizeBytes: 0, rotated: false };
    throw err;
  }
  if (maxBytes <= 0 || sizeBytes <= maxBytes) return { sizeBytes, rotated: false };
  const rotated = rotatedLogPath(logFile);
  const tmp = `${rotated}.tmp`;
  let fh: FileHandle | undefined;
  try {
    fh = await open(logFile, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
    if (!(await fh.stat()).isFile()) return { sizeBytes: 0, rotated: false };
    // `end` bounds the copy to the newest maxBytes seen at the stat: a worker that writes faster
    // than the copy reads (seen under emulation, and a hostile worker can) would otherwise keep
    // it going and grow `.1` without limit. What arrives during the copy is cut with the rest.
    await pipeline(
      createReadStream('', { fd: fh, start: sizeBytes - maxBytes, end: sizeBytes - 1, autoClose: false }),
      createWriteStream(tmp, { mode: 0o600 }),
    );
    await rename(tmp, rotated);
    await fh.truncate(0);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    if (isMissing(err)) return { sizeBytes, rotated: false };
    throw err;
  } finally {
    await fh?.close();
  }
  return { sizeBytes, rotated: true };
}

export interface WorkerLogCapOptions {
  readonly stateDir: string;
  /** AGENT_WORKER_LOG_MAX_BYTES; 0 turns the cap off. */
  readonly maxBytes: number;
  readonly log: Logger;
  /** Called once per rotation (the Prometheus counter). */
  readonly onRotate: () => void;
  readonly intervalMs?: number;
}

/** Checks every worker's log on a timer and rotates the ones over the cap. */
export class WorkerLogCap {
  readonly #stateDir: string;
  readonly #maxBytes: number;
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #onRotate: () => void;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<number> | undefined;
  #stopped = true;

  constructor(opts: WorkerLogCapOptions) {
    this.#stateDir = opts.stateDir;
    this.#maxBytes = opts.maxBytes;
    this.#intervalMs = opts.intervalMs ?? WORKER_LOG_SWEEP_INTERVAL_MS;
    this.#log = opts.log.child({ module: 'worker-log-cap' });
    this.#onRotate = opts.onRotate;
  }

  /** Starts the periodic sweep; does nothing when the cap is off. The timer never keeps the process alive. */
  start(): void {
    if (this.#maxBytes <= 0 || !this.#stopped) return;
    this.#stopped = false;
    this.#schedule();
  }

  /** Stops the timer and waits for a sweep in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => undefined);
  }

  /** One pass over every worker's log; returns the number of rotations. Never throws. */
  async sweep(): Promise<number> {
    let ids: string[];
    try {
      ids = await listWorkerFileIds(this.#stateDir);
    } catch (err) {
      this.#log.warn({ err: errorText(err), stateDir: this.#stateDir }, 'cannot list worker files to check log sizes');
      return 0;
    }
    let rotations = 0;
    for (const id of ids) {
      const file = workerFiles(this.#stateDir, id).log;
      try {
        const r = await capLogFile(file, this.#maxBytes);
        if (!r.rotated) continue;
        rotations++;
        this.#onRotate();
        this.#log.info(
          { id, sizeBytes: r.sizeBytes, maxBytes: this.#maxBytes, kept: rotatedLogPath(file) },
          'worker log over its size cap; rotated',
        );
      } catch (err) {
        this.#log.warn({ id, err: errorText(err) }, 'could not rotate a worker log');
      }
    }
    return rotations;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.sweep().finally(() => {
        this.#running = undefined;
        this.#schedule();
      });
    }, this.#intervalMs);
    this.#timer.unref();
  }
}
