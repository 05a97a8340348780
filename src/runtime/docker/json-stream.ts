/**
 * dockerd's streaming answers (`/images/create` progress, `/events`) are JSON objects, one per
 * line. A pull that fails after the 200 status only says so in such a line:
 * `{"errorDetail":{"message":"…"},"error":"…"}` — the reference agent ignored it (docs/go-agent.md#w14).
 */

/** Splits a byte stream into parsed JSON lines; a line that is not JSON is yielded as `{ raw }`. */
export async function* jsonLines(body: AsyncIterable<Buffer | string>): AsyncGenerator {
  let buf = '';
  const decoder = new TextDecoder();
  const parse = (line: string): unknown => {
    try {
      return JSON.parse(line) as unknown;
    } catch {
      return { raw: line };
    }
  };
  for await (const chunk of body) {
    buf += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line !== '') yield parse(line);
    }
  }
  buf += decoder.decode();
  if (buf.trim() !== '') yield parse(buf.trim());
}

/** The error text of one progress message, or undefined when it reports progress. */
export function progressError(msg: unknown): string | undefined {
  if (typeof msg !== 'object' || msg === null) return undefined;
  const m = msg as { error?: unknown; errorDetail?: { message?: unknown } | null };
  const detail = typeof m.errorDetail?.message === 'string' && m.errorDetail.message !== '' ? m.errorDetail.message : undefined;
  if (detail !== undefined) return detail;
  if (typeof m.error === 'string' && m.error !== '') return m.error;
  return undefined;
}

/** The `status` text of a progress message ('' when none), for debug logs. */
export function progressStatus(msg: unknown): string {
  const s = (msg as { status?: unknown } | null)?.status;
  return typeof s === 'string' ? s : '';
}
