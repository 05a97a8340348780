/**
 * The Prometheus endpoint: `GET /metrics` on AGENT_METRICS_ADDRESS:AGENT_METRICS_PORT, served with node:http
 * from the agent's own registry. Everything else is 404 (405 for other methods on /metrics).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { hostPort } from '../config/parse.js';
import { errorText } from '../errors.js';
import type { Logger } from '../log.js';

/** Bounds on a scrape request, so a slow or idle client cannot hold a socket for long. */
export const METRICS_HEADERS_TIMEOUT_MS = 5000;
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;

export interface MetricsServerOptions {
  readonly registry: Registry;
  /** 0 = an ephemeral port. */
  readonly port: number;
  /** The address to bind (AGENT_METRICS_ADDRESS); the endpoint has no authentication. */
  readonly host: string;
  readonly log: Logger;
}

/** The `/metrics` HTTP server. */
export class MetricsServer {
  readonly #server: http.Server;
  readonly #registry: Registry;
  readonly #port: number;
  readonly #host: string;
  readonly #log: Logger;
  #boundPort: number | undefined;

  constructor({ registry, port, host, log }: MetricsServerOptions) {
    this.#registry = registry;
    this.#port = port;
    this.#host = host;
    this.#log = log.child({ module: 'metrics-http' });
    this.#server = http.createServer(
      { headersTimeout: METRICS_HEADERS_TIMEOUT_MS, requestTimeout: METRICS_REQUEST_TIMEOUT_MS },
      (req, res) => {
        this.#handle(req, res).catch((err: unknown) => {
          this.#log.error({ err }, 'metrics request failed');
          if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
          res.end();
        });
      },
    );
  }

  /** The bound port; throws before `listen()` resolved. */
  get port(): number {
    if (this.#boundPort === undefined) throw new Error('the metrics server is not listening yet');
    return this.#boundPort;
  }

  /** Binds and resolves to the bound port; rejects (naming the variables) when it cannot. */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(
          new Error(`cannot listen on ${hostPort(this.#host, this.#port)} (AGENT_METRICS_ADDRESS, AGENT_METRICS_PORT): ${errorText(err)}`, {
            cause: err,
          }),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen(this.#port, this.#host, () => {
        this.#server.removeListener('error', onError);
        this.#server.on('error', (err) => {
          this.#log.error({ err }, 'metrics server error');
        });
        this.#boundPort = (this.#server.address() as AddressInfo).port;
        resolve(this.#boundPort);
      });
    });
  }

  /** Stops listening and closes every connection, idle or not. Idempotent. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.#server.listening) {
        resolve();
        return;
      }
      this.#server.close(() => {
        resolve();
      });
      // Keep-alive scrapers would otherwise hold close() open.
      this.#server.closeAllConnections();
    });
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (pathname !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'Content-Type': 'text/plain; charset=utf-8', Allow: 'GET, HEAD' });
      res.end('method not allowed: use GET\n');
      return;
    }
    const body = await this.#registry.metrics();
    res.writeHead(200, { 'Content-Type': this.#registry.contentType, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}

/** Creates the `/metrics` server (not yet listening). */
export function createMetricsServer(opts: MetricsServerOptions): MetricsServer {
  return new MetricsServer(opts);
}
