/**
 * Reads an environment file the way systemd's `EnvironmentFile=` does for the simple cases an
 * operator writes (packaging/env.example): `KEY=VALUE` lines, `#`/`;` comments, blank lines,
 * an optional `export ` prefix, and values in single or double quotes. `doctor` and `import`
 * use it (`--env-file /etc/esb-agent/env`) to see the configuration the service sees.
 */
import { readFileSync } from 'node:fs';
import { errorText } from '../errors.js';

/** Parses the text of an environment file. Throws Error naming the line of a malformed entry. */
export function parseEnvFile(text: string, source: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new Error(`${source}:${i + 1}: expected KEY=VALUE, got ${JSON.stringify(line)}`);
    let value = m[2]!;
    const q = value[0];
    if ((q === '"' || q === "'") && value.length >= 2 && value.endsWith(q)) {
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\(["\\$`])/g, '$1');
    }
    out[m[1]!] = value;
  });
  return out;
}

/** Reads and parses an environment file; throws Error saying which file and why. */
export function readEnvFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the environment file ${file}: ${errorText(err)}`, { cause: err });
  }
  return parseEnvFile(text, file);
}
