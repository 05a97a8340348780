/**
 * Keeps every worker's `last_used_at` across agent restarts. Everything else about a worker
 * lives in runtime labels, but writing a label on every invocation would cost a runtime call
 * per request; instead the times go to one small JSON file in the state dir, written
 * atomically every few seconds when they changed and at close. A restart loses at most that
 * interval of touches, and the idle sweep never sees a busy worker as idle because its clock
 * fell back to `created_at`.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { isAtomicTempOf, writeFileAtomic } from '../atomic-file.js';
import { errnoCode } from '../errors.js';
import type { Logger } from '../log.js';

export const LAST_USED_FILE = 'last-used.json';
export const LAST_USED_FLUSH_MS = 5_000;

export class LastUsedFile {
  readonly #file: string;
  readonly #log: Logger;
  readonly #snapshot: () => ReadonlyMap<string, number>;
  #written = '';
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();

  /** `snapshot` returns id → last used (Unix seconds) of the workers alive now. */
  constructor(stateDir: string, log: Logger, snapshot: () => ReadonlyMap<string, number>) {
    this.#file = path.join(stateDir, LAST_USED_FILE);
    this.#log = log;
    this.#snapshot = snapshot;
  }

  /** The saved times; empty when there is no file or it is unreadable (logged). */
  async load(): Promise<Map<string, number>> {
    // A write cut off by a crash leaves its temp file (named after the dead process).
    const dir = path.dirname(this.#file);
    for (const n of await readdir(dir).catch(() => [] as string[])) {
      // `last-used.json.tmp-<pid>` is the name older versions used.
      if (isAtomicTempOf(n, this.#file) || n.startsWith(`${LAST_USED_FILE}.tmp-`)) await rm(path.join(dir, n), { force: true });
    }
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT')
        this.#log.warn({ err, file: this.#file }, 'cannot read the last-used times; starting from created_at');
      return new Map();
    }
    try {
      const parsed = JSON.parse(text) as unknown;
      const out = new Map<string, number>();
      if (parsed && typeof parsed === 'object') {
        for (const [id, t] of Object.entries(parsed)) if (typeof t === 'number' && Number.isFinite(t)) out.set(id, t);
      }
      this.#written = text;
      return out;
    } catch (err) {
      this.#log.warn({ err, file: this.#file }, 'the last-used file is corrupt; starting from created_at');
      return new Map();
    }
  }

  /** Starts the periodic flush (an unref'd timer: it never keeps the process alive). */
  start(intervalMs = LAST_USED_FLUSH_MS): void {
    this.#timer ??= setInterval(() => {
      void this.flush();
    }, intervalMs).unref();
  }

  /** Writes the times if they changed since the last write. Never throws (logs instead). */
  flush(): Promise<void> {
    this.#writing = this.#writing.then(async () => {
      const text = JSON.stringify(Object.fromEntries([...this.#snapshot()].sort(([a], [b]) => a.localeCompare(b))));
      if (text === this.#written) return;
      try {
        // No fsync: losing the last few seconds of touches is the accepted cost (see above).
        await writeFileAtomic(this.#file, text, { mode: 0o600, sync: false });
        this.#written = text;
      } catch (err) {
        this.#log.warn({ err, file: this.#file }, 'cannot save the last-used times');
      }
    });
    return this.#writing;
  }

  /** Stops the timer and writes a last time. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
}
