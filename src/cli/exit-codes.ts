/**
 * Exit codes of the `esb-agent` commands, stable so that scripts can branch on them:
 *
 * - 0 success; 1 a local failure (a file that cannot be read, an import or doctor check that
 *   failed); 64 (sysexits EX_USAGE) a wrong command line.
 * - `ctl`: a call the agent answered with a gRPC error exits with 10 + the gRPC status code
 *   (NOT_FOUND 5 → 15, FAILED_PRECONDITION 9 → 19, UNAVAILABLE 14 → 24, …). The range 10–26
 *   never collides with 0, 1, 2 (the agent's own configuration error) or 64.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

export const EXIT_OK = 0;
/** A local failure: unreadable file, failed import, a doctor check that failed. */
export const EXIT_FAILURE = 1;
/** sysexits.h EX_USAGE: the command was used incorrectly. */
export const EXIT_USAGE = 64;
/** `ctl` exits with this plus the gRPC status code of the agent's answer. */
export const GRPC_EXIT_BASE = 10;

/** The exit code of `ctl` for an answer with gRPC status `code` (0 for OK). */
export function exitCodeForGrpcStatus(code: number): number {
  return code === 0 ? EXIT_OK : GRPC_EXIT_BASE + code;
}

/** Every non-OK gRPC status with its exit code, for `--help` and docs/errors.md. */
export function grpcExitCodeTable(): { readonly name: string; readonly code: number; readonly exit: number }[] {
  return (Object.entries(GrpcStatus) as [string, string | number][])
    .filter((e): e is [string, number] => typeof e[1] === 'number' && e[1] !== 0)
    .sort((a, b) => a[1] - b[1])
    .map(([name, code]) => ({ name, code, exit: exitCodeForGrpcStatus(code) }));
}
