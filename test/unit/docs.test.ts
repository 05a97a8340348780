/**
 * The docs stand alone and match the code: every link into docs/ resolves to a heading or an
 * explicit anchor, and the reference pages list exactly what the code defines (configuration
 * variables, Prometheus metrics, error codes). The README starts with its two commands and
 * stays short.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { STATUS_BY_CODE } from '../../src/api/status.js';
import { CONFIG_VARIABLES } from '../../src/config/config.js';
import { AgentMetrics } from '../../src/metrics.js';
import { PROJECT_ROOT } from '../../src/paths.js';

const DOCS = path.join(PROJECT_ROOT, 'docs');

function read(rel: string): string {
  return readFileSync(path.join(PROJECT_ROOT, rel), 'utf8');
}

/** Files under `dir` (relative to the project root) whose names match `ext`. */
function files(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  const abs = path.join(PROJECT_ROOT, dir);
  if (!existsSync(abs)) return out;
  for (const name of readdirSync(abs).sort()) {
    if (name === 'node_modules' || name === 'gen' || name.startsWith('.')) continue;
    const rel = path.join(dir, name);
    if (statSync(path.join(PROJECT_ROOT, rel)).isDirectory()) out.push(...files(rel, ext));
    else if (ext.test(name)) out.push(rel);
  }
  return out;
}

/** GitHub's heading slug: lower-case, punctuation other than '-' and '_' dropped, spaces → '-'. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/<[^>]*>/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Anchors a Markdown file offers: heading slugs (repeats get -1, -2, …) and `<a id="…">`. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) {
      const base = slug(h[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"\s*>/g)) anchors.add(m[1]!);
  }
  return anchors;
}

const anchorCache = new Map<string, Set<string> | undefined>();

/** The anchors of the Markdown file at `abs`, or undefined when it does not exist. */
function anchorsAt(abs: string): Set<string> | undefined {
  if (!anchorCache.has(abs)) anchorCache.set(abs, existsSync(abs) ? anchorsOf(readFileSync(abs, 'utf8')) : undefined);
  return anchorCache.get(abs);
}

/** `| \`NAME\` |` first cells of the tables in a section (`## <title>` up to the next `## `). */
function firstCells(markdown: string, title: string): string[] {
  const start = markdown.indexOf(`\n## ${title}\n`);
  assert.notEqual(start, -1, `has a "## ${title}" section`);
  const end = markdown.indexOf('\n## ', start + 1);
  const text = markdown.slice(start, end === -1 ? undefined : end);
  return [...text.matchAll(/^\| `([A-Za-z_][A-Za-z0-9_]*)` \|/gm)].map((m) => m[1]!);
}

describe('docs', () => {
  test('every docs/<file>.md#<anchor> link in docs, README, src, test and scripts resolves', () => {
    const sources = [
      ...files('docs', /\.md$/),
      'README.md',
      ...(existsSync(path.join(PROJECT_ROOT, 'CONTRIBUTING.md')) ? ['CONTRIBUTING.md'] : []),
      ...files('src', /\.(ts|mjs|js)$/),
      ...files('test', /\.(ts|mjs|js|sh)$/),
      ...files('scripts', /\.(ts|mjs|js|sh)$/),
    ];
    const broken: string[] = [];
    for (const rel of sources) {
      for (const m of read(rel).matchAll(/\bdocs\/([\w./-]+\.md)#([\w-]+)/g)) {
        const anchors = anchorsAt(path.join(DOCS, m[1]!));
        if (anchors === undefined) broken.push(`${rel}: ${m[0]} (no such file)`);
        else if (!anchors.has(m[2]!)) broken.push(`${rel}: ${m[0]} (no such anchor)`);
      }
    }
    assert.deepEqual(broken, []);
  });

  test('relative links in docs, README, CONTRIBUTING and CHANGELOG resolve (files and anchors)', () => {
    const broken: string[] = [];
    const sources = [...files('docs', /\.md$/), 'README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'];
    for (const rel of sources) {
      if (!existsSync(path.join(PROJECT_ROOT, rel))) continue;
      const base = path.join(PROJECT_ROOT, path.dirname(rel));
      for (const m of read(rel).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue;
        const [file = '', anchor] = target.split('#');
        const abs = file === '' ? path.join(PROJECT_ROOT, rel) : path.join(base, file);
        if (!existsSync(abs)) {
          broken.push(`${rel}: ${target} (no such file)`);
          continue;
        }
        if (anchor === undefined || !abs.endsWith('.md')) continue;
        if (!anchorsAt(abs)?.has(anchor)) broken.push(`${rel}: ${target} (no such anchor)`);
      }
    }
    assert.deepEqual(broken, []);
  });

  test('code, tests and scripts cite only docs/, never a document outside the repository', () => {
    // The forms the project's early notes were cited by: section signs into the old contract,
    // note file names, a path to a sibling folder. Their content now lives in docs/.
    const outside = new RegExp(String.raw`\b(?:spec|contract) §\d|\b(?:containerd-api|node-stack|style|agent-api)\.md\b|\.\.\/shared\b`);
    const self = path.join('test', 'unit', 'docs.test.ts');
    const hits: string[] = [];
    for (const rel of [
      ...files('src', /\.(ts|mjs|js)$/),
      ...files('test', /\.(ts|mjs|js|sh)$/),
      ...files('scripts', /\.(ts|mjs|js|sh)$/),
    ]) {
      if (rel === self) continue;
      read(rel)
        .split('\n')
        .forEach((line, i) => {
          if (outside.test(line)) hits.push(`${rel}:${i + 1}: ${line.trim()}`);
        });
    }
    assert.deepEqual(hits, []);
  });

  test('go-agent.md has an anchor for each weakness, w1 to w26', () => {
    const anchors = anchorsAt(path.join(DOCS, 'go-agent.md'));
    assert.ok(anchors);
    const missing = Array.from({ length: 26 }, (_, i) => `w${i + 1}`).filter((a) => !anchors.has(a));
    assert.deepEqual(missing, []);
  });

  test('configuration.md lists every configuration variable, and only real ones', () => {
    const doc = read('docs/configuration.md');
    const rows = firstCells(doc, 'Variables');
    const known = new Set<string>(CONFIG_VARIABLES);
    assert.deepEqual(
      CONFIG_VARIABLES.filter((v) => !rows.includes(v)),
      [],
      'variables missing from docs/configuration.md',
    );
    assert.deepEqual(
      rows.filter((v) => !known.has(v)),
      [],
      'rows of docs/configuration.md that are not in CONFIG_VARIABLES',
    );
    assert.equal(new Set(rows).size, rows.length, 'each variable has one row');
  });

  test('metrics.md lists every Prometheus metric the agent defines', async () => {
    const metrics = new AgentMetrics({ defaultMetrics: false });
    const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
    assert.ok(names.length > 5);
    const rows = firstCells(read('docs/metrics.md'), 'Agent metrics');
    assert.deepEqual(
      names.filter((n) => !rows.includes(n)),
      [],
      'metrics missing from docs/metrics.md',
    );
    assert.deepEqual(
      rows.filter((n) => !names.includes(n)),
      [],
      'rows of docs/metrics.md that the agent does not define',
    );
  });

  test('errors.md lists every error code', () => {
    const codes = Object.keys(STATUS_BY_CODE);
    const rows = firstCells(read('docs/errors.md'), 'Codes');
    assert.deepEqual(
      codes.filter((c) => !rows.includes(c)),
      [],
      'codes missing from docs/errors.md',
    );
    assert.deepEqual(
      rows.filter((c) => !codes.includes(c)),
      [],
      'rows of docs/errors.md that are not error codes',
    );
  });
});

const README = read('README.md');

/** The `## <title>` section of the README, up to the next `## ` heading. */
function readmeSection(title: string): string {
  const start = README.indexOf(`\n## ${title}\n`);
  assert.notEqual(start, -1, `README has a "## ${title}" section`);
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end === -1 ? undefined : end);
}

describe('README', () => {
  test('starts with exactly two commands: the quickstart, then the whole test suite', () => {
    const block = /```[a-z]*\n([\s\S]*?)```/.exec(README);
    assert.ok(block, 'README has a code block');
    const firstHeading = README.indexOf('\n## ');
    assert.ok(firstHeading === -1 || block.index < firstHeading, 'the commands come before the first section');
    const commands = block[1]!
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    assert.deepEqual(commands, ['bash scripts/quickstart.sh', 'bash .ci/run']);
    assert.ok(existsSync(path.join(PROJECT_ROOT, 'scripts', 'quickstart.sh')));
    assert.ok(existsSync(path.join(PROJECT_ROOT, '.ci', 'run')));
  });

  test('stays short: what it is, the two commands, one diagram, links (docs/ holds the rest)', () => {
    const lines = README.split('\n').length;
    assert.ok(lines <= 150, `README is ${lines} lines; move detail to docs/`);
    assert.match(readmeSection('Documentation'), /\(docs\/configuration\.md\)/);
  });
});
