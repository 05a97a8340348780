/** Assertions on the errors the CNI layer throws (src/cni/exec.ts). */
import { pluginOutputOf } from '../../src/cni/exec.js';
import { AgentError, type ErrorCode } from '../../src/errors.js';

/**
 * Matches an AgentError by code and message; `output`, when given, must be in the plugin output
 * kept for the log (pluginOutputOf) and never in the message itself.
 */
export function isAgentError(code: ErrorCode, re = /./, output?: string): (err: unknown) => boolean {
  return (err: unknown) =>
    err instanceof AgentError &&
    err.code === code &&
    re.test(err.message) &&
    (output === undefined || ((pluginOutputOf(err) ?? '').includes(output) && !err.message.includes(output)));
}
