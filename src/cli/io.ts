/**
 * What a CLI command gets from the process, passed in so that commands stay testable: the
 * environment (read only by the composition root, src/cli.ts) and the two output streams.
 */
import type { Env } from '../config/parse.js';

/** The process as a command sees it. */
export interface CliIo {
  readonly env: Env;
  /** Writes to stdout (text or raw bytes, e.g. an invocation's body). */
  out(data: string | Uint8Array): void;
  /** Writes to stderr. */
  err(text: string): void;
  /** Reads all of stdin (`--data-file -`). */
  readStdin(): Promise<Buffer>;
}

/** A CliIo on the real process streams. */
export function processIo(env: Env): CliIo {
  return {
    env,
    out: (data) => {
      process.stdout.write(data);
    },
    err: (text) => {
      process.stderr.write(text);
    },
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
  };
}

/** The command line was wrong: the command prints the message and its usage, and exits 64. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}
