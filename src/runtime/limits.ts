/**
 * Worker resource limits shared by every runtime (containerd and docker apply the same rule).
 */
import { AgentError } from '../errors.js';

/** The Lambda variable that carries the function's memory size in MiB. */
export const MEMORY_ENV = 'AWS_LAMBDA_FUNCTION_MEMORY_SIZE';
export const MIN_MEMORY_MB = 16;
export const MAX_MEMORY_MB = 256 * 1024;

/** Memory limit in MiB from the request env, else the default. Bad values → INVALID_ARGUMENT. */
export function memoryMbFor(env: Readonly<Record<string, string>>, defaultMb: number): number {
  const raw = env[MEMORY_ENV];
  if (raw === undefined) return defaultMb;
  const v = raw.trim();
  if (!/^\d+$/.test(v) || Number(v) < MIN_MEMORY_MB || Number(v) > MAX_MEMORY_MB) {
    throw new AgentError('INVALID_ARGUMENT', `${MEMORY_ENV} must be a whole number of MiB from ${MIN_MEMORY_MB} to ${MAX_MEMORY_MB}, got ${JSON.stringify(raw)}`);
  }
  return Number(v);
}
