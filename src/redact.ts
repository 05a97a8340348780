/**
 * Text from the host (plugin output, errno messages, command lines) on its way to a log line
 * or a gRPC message: host file paths and the user names inside them are replaced, control
 * characters dropped, and the length capped. A caller with a valid certificate may still be
 * hostile, and the layout of the host's file system is none of its business.
 */

/**
 * Top-level directories whose paths are the host's; a request path such as `/2015-03-31/...` is
 * not among them. A path right after "image's " is inside the caller's own image (the USER
 * lookup names the image's /etc/passwd) and says nothing about the host, so it is kept.
 */
const HOST_PATH =
  /(?<![\w.~-])(?<!image's )\/(?:etc|var|run|opt|usr|home|root|tmp|proc|sys|dev|srv|mnt|media|lib|lib32|lib64|libx32|bin|sbin|boot|snap|nix|app|work)(?:\/[^\s'",;:()[\]{}<>]*)?/g;

/** Longest text kept; plugin output can be arbitrarily long. */
export const MAX_REDACTED_CHARS = 1000;

/** `text` with host paths replaced by `<host path>`, otherwise unchanged. */
export function redactHostPaths(text: string): string {
  return text.replace(HOST_PATH, '<host path>');
}

/** `text` with host paths replaced by `<host path>`, whitespace runs folded, capped. */
export function redactHost(text: string, maxChars = MAX_REDACTED_CHARS): string {
  const t = text
    .replace(HOST_PATH, '<host path>')
    .replace(/\p{Cc}+/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return t.length > maxChars ? `${t.slice(0, maxChars)}…` : t;
}
