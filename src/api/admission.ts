/**
 * Admission: grpc-js server interceptors that decide, from the call's headers alone, whether a
 * call may run at all. They see every service (AgentService, health, reflection), run before the
 * request message is even read, and answer refusals themselves:
 *
 * - the client allowlist (AGENT_GRPC_ALLOWED_CLIENTS): a certificate of the CA whose identity is
 *   not listed gets PERMISSION_DENIED on every method, health included;
 * - the in-flight cap (AGENT_GRPC_MAX_IN_FLIGHT): beyond it a call gets RESOURCE_EXHAUSTED at
 *   once. Health is exempt: it is answered from memory, and a load balancer must still see
 *   SERVING/NOT_SERVING while the agent is busy (HTTP/2's per-connection stream limit bounds it).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import { ClientAllowlist, clientIdentity, describeIdentity } from './client-identity.js';

/** The health service's path prefix; its calls are not counted against the in-flight cap. */
const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';

/** Refused identities logged individually; beyond this many, one more line says so and the rest are only counted. */
export const MAX_LOGGED_REFUSED_IDENTITIES = 256;

/** Longest identity text copied into a log line. */
const MAX_LOGGED_IDENTITY_CHARS = 256;

/** An interceptor that answers `status` instead of running the call (the message is never read). */
function refuse(call: grpc.ServerInterceptingCallInterface, code: grpc.status, details: string): grpc.ServerInterceptingCall {
  return new grpc.ServerInterceptingCall(call, {
    start: (next) => {
      next({
        onReceiveMetadata: () => {
          call.sendStatus({ code, details, metadata: new grpc.Metadata() });
        },
        onReceiveMessage: () => undefined,
        onReceiveHalfClose: () => undefined,
      });
    },
  });
}

export interface AdmissionOptions {
  /** AGENT_GRPC_ALLOWED_CLIENTS; empty = any certificate of the CA. */
  readonly allowedClients: readonly string[];
  /** AGENT_GRPC_MAX_IN_FLIGHT. */
  readonly maxInFlight: number;
  readonly log: Logger;
  readonly metrics: Pick<AgentMetrics, 'grpcInFlight' | 'grpcRefused'>;
}

/**
 * One interceptor for both checks, so their order is fixed: a client that is not allowed is
 * refused PERMISSION_DENIED without ever taking an in-flight slot.
 */
export class Admission {
  readonly #allowlist: ClientAllowlist;
  readonly #limit: number;
  readonly #log: Logger;
  readonly #metrics: AdmissionOptions['metrics'];
  readonly #loggedRefusals = new Set<string>();
  #overflowLogged = false;
  #count = 0;

  constructor({ allowedClients, maxInFlight, log, metrics }: AdmissionOptions) {
    this.#allowlist = new ClientAllowlist(allowedClients);
    this.#limit = maxInFlight;
    this.#log = log;
    this.#metrics = metrics;
  }

  /** Calls holding an in-flight slot now. */
  get inFlight(): number {
    return this.#count;
  }

  /** The grpc-js interceptor (pass it in the server's `interceptors` option). */
  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    if (!this.#allowlist.open) {
      const id = clientIdentity(call.getAuthContext().sslPeerCertificate);
      if (!this.#allowlist.allows(id)) {
        this.#metrics.grpcRefused.inc({ reason: 'client_not_allowed' });
        this.#logRefusal(describeIdentity(id).slice(0, MAX_LOGGED_IDENTITY_CHARS), call.getPeer());
        return refuse(
          call,
          grpc.status.PERMISSION_DENIED,
          'this client certificate is not allowed to call the agent (AGENT_GRPC_ALLOWED_CLIENTS)',
        );
      }
    }
    if (method.path.startsWith(HEALTH_PATH_PREFIX)) return new grpc.ServerInterceptingCall(call);
    if (this.#count >= this.#limit) {
      this.#metrics.grpcRefused.inc({ reason: 'in_flight_limit' });
      return refuse(
        call,
        grpc.status.RESOURCE_EXHAUSTED,
        `the agent is handling ${this.#limit} calls already (AGENT_GRPC_MAX_IN_FLIGHT); nothing was done, retry later`,
      );
    }
    return this.#admit(method, call);
  };

  /**
   * Holds a slot for the call. Taken now (the call's headers arrived), given back when its
   * status is sent. A unary call cancelled before its handler started (no half-close yet) gives
   * it back on the cancel, since no handler will answer; one whose handler started keeps it
   * until the handler answers, because it is still working (rolling back) after the cancel, so
   * cancelling cannot pile up work beyond the cap. A streaming call gives it back on cancel.
   */
  #admit(method: grpc.ServerMethodDefinition<unknown, unknown>, call: grpc.ServerInterceptingCallInterface): grpc.ServerInterceptingCall {
    this.#count++;
    this.#metrics.grpcInFlight.set(this.#count);
    const unary = !method.requestStream && !method.responseStream;
    let released = false;
    let handlerStarted = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.#count--;
      this.#metrics.grpcInFlight.set(this.#count);
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveHalfClose: (nextHalfClose) => {
            handlerStarted = true;
            nextHalfClose();
          },
          onCancel: () => {
            if (!unary || !handlerStarted) release();
          },
        });
      },
      sendStatus: (status, next) => {
        release();
        next(status);
      },
    });
  }

  /** Each refused identity once, in a bounded set: a client retrying in a loop cannot flood the log. */
  #logRefusal(client: string, peer: string): void {
    if (this.#loggedRefusals.has(client)) return;
    if (this.#loggedRefusals.size < MAX_LOGGED_REFUSED_IDENTITIES) {
      this.#loggedRefusals.add(client);
      this.#log.warn({ client, peer }, 'client certificate not in AGENT_GRPC_ALLOWED_CLIENTS: its calls are refused');
    } else if (!this.#overflowLogged) {
      this.#overflowLogged = true;
      this.#log.warn(
        { limit: MAX_LOGGED_REFUSED_IDENTITIES },
        'more client certificates not in AGENT_GRPC_ALLOWED_CLIENTS; further ones are only counted (esb_agent_grpc_refused_total)',
      );
    }
  }
}
