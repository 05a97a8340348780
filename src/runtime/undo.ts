/**
 * An undo stack for multi-step operations (EnsureContainer): each step that creates something
 * registers how to remove it *before* it runs (removal is idempotent), so a step interrupted
 * half-way is still undone. `run` undoes in reverse under its own deadline — never the
 * caller's signal (docs/contract.md#rules; the reference agent leaked here: docs/go-agent.md#w2).
 */
import type { Logger } from '../log.js';

export type UndoStep = (signal: AbortSignal) => Promise<void>;

export class UndoStack {
  readonly #steps: { name: string; fn: UndoStep }[] = [];

  /** Registers an undo step; returns a function that drops it again (e.g. on an id clash). */
  push(name: string, fn: UndoStep): () => void {
    const entry = { name, fn };
    this.#steps.push(entry);
    return () => {
      const i = this.#steps.indexOf(entry);
      if (i >= 0) this.#steps.splice(i, 1);
    };
  }

  /** Forgets every step (the operation succeeded). */
  clear(): void {
    this.#steps.length = 0;
  }

  /**
   * Runs every step in reverse order, each even if an earlier one failed, all within
   * `deadlineMs`. Returns the names of steps that failed (logged); an empty array is a clean undo.
   */
  async run(log: Logger, deadlineMs: number): Promise<string[]> {
    const signal = AbortSignal.timeout(deadlineMs);
    const failed: string[] = [];
    for (const { name, fn } of this.#steps.reverse()) {
      try {
        await fn(signal);
      } catch (err) {
        failed.push(name);
        log.error({ err, step: name }, 'rollback step failed; reconciliation will remove the leftover');
      }
    }
    this.#steps.length = 0;
    return failed;
  }
}
