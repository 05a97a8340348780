/**
 * What one plugin call is about, in the CNI spec's terms (spec 1.0 §3 "Parameters"; libcni's
 * RuntimeConf): the container id, its netns, the interface name, CNI_ARGS and the
 * capability args (runtimeConfig). network.ts builds one per call from an attachment.
 */
import { performance } from 'node:perf_hooks';
import { AgentError } from '../errors.js';
import { containerIpv4, type CniResult } from './result.js';

/** One worker's place on the network: CNI container id (= worker id) and netns path. */
export interface CniAttachment {
  readonly containerId: string;
  readonly netns: string;
}

/** The per-attachment arguments, kept in the cache so that DEL and CHECK pass the same. */
export interface RuntimeArgs {
  /** CNI_ARGS as key/value pairs. */
  readonly args: readonly (readonly [string, string])[];
  /** runtimeConfig of the plugins that declare the capability. */
  readonly capabilityArgs: Readonly<Record<string, unknown>>;
}

/** One plugin call's runtime parameters (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, …). */
export interface RuntimeConf extends RuntimeArgs {
  readonly containerId: string;
  /** Path of the netns, or '' when it is gone (DEL only). */
  readonly netns: string;
  readonly ifName: string;
}

/** CNI container ids (spec 1.0 §2): alphanumeric first, then alphanumerics, `_`, `.`, `-`. */
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Throws INVALID_ARGUMENT for an id or netns path no plugin should ever see. */
export function checkAttachment(att: CniAttachment, netnsMayBeEmpty = false): void {
  if (!CONTAINER_ID.test(att.containerId))
    throw new AgentError('INVALID_ARGUMENT', `invalid CNI container id ${JSON.stringify(att.containerId)}`);
  if (!(netnsMayBeEmpty && att.netns === '') && !att.netns.startsWith('/')) {
    throw new AgentError('INVALID_ARGUMENT', `netns of ${att.containerId} must be an absolute path, got ${JSON.stringify(att.netns)}`);
  }
}

/** The attachment's IPv4 for a log line; undefined when the result has none. */
export function ipOrUndefined(result: CniResult, ifName: string): string | undefined {
  try {
    return containerIpv4(result, ifName);
  } catch {
    return undefined;
  }
}

/** Milliseconds since `t0`, to one decimal, for log lines. */
export function elapsed(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}
