#!/usr/bin/env node
// Rewrites citations of documents that are not in this repository into links into docs/.
//
//   node scripts/docs/rewrite-citations.mjs           rewrite src/, test/, scripts/ in place; print each change
//   node scripts/docs/rewrite-citations.mjs --dry-run print what would change, write nothing
//   node scripts/docs/rewrite-citations.mjs --check   exit 1 if an outside citation remains, or if a
//                                                     docs/<file>.md#<anchor> link does not resolve
//   --root DIR                                        work on another checkout (default: this one)
//
// Citations look like `spec §3`, `contract §2`, `W9`, `containerd-api.md §2.4`, `node-stack.md §6`,
// `style.md §4`, `reference-agent.md §1.6` or `agent-api.md §2`, optionally behind a path
// (`../shared/notes/`), with ranges (`§2–3`) and continuations (`spec §3, §7`). Each becomes a
// repository-root path such as `docs/contract.md#ensurecontainer`. The mapping is the tables
// below. Running the rewrite twice changes nothing the second time.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// ------------------------------------------------------------------ the mapping

/** Section of an old document → link. Keys are `<doc>:<section>`. */
const SECTIONS = {
  // The old API contract (cited as `spec`, `contract` or `agent-api.md`).
  'spec:1': 'docs/contract.md#service',
  'spec:2': 'docs/contract.md#rules',
  'spec:3': 'docs/contract.md#rpcs',
  'spec:4': 'docs/state-and-labels.md#labels',
  'spec:5': 'docs/configuration.md#variables',
  'spec:6': 'docs/contract.md#health',
  'spec:7': 'docs/contract.md#gateway',
  // containerd's raw API.
  'containerd:': 'docs/containerd.md',
  'containerd:1': 'docs/containerd.md#connecting',
  'containerd:1.1': 'docs/containerd.md#address-and-options',
  'containerd:1.2': 'docs/containerd.md#metadata-headers',
  'containerd:1.3': 'docs/containerd.md#errors',
  'containerd:1.4': 'docs/containerd.md#proto-loading',
  'containerd:2': 'docs/containerd.md#pulling',
  'containerd:2.1': 'docs/containerd.md#resolve',
  'containerd:2.2': 'docs/containerd.md#registry-auth',
  'containerd:2.3': 'docs/containerd.md#platform-manifest',
  'containerd:2.4': 'docs/containerd.md#content-write',
  'containerd:2.5': 'docs/containerd.md#gc-labels',
  'containerd:2.6': 'docs/containerd.md#leases',
  'containerd:2.7': 'docs/containerd.md#image-records',
  'containerd:3': 'docs/containerd.md#unpack',
  'containerd:4': 'docs/containerd.md#import',
  'containerd:5': 'docs/containerd.md#containers-create',
  'containerd:5.1': 'docs/containerd.md#containers-record',
  'containerd:5.2': 'docs/containerd.md#default-spec',
  'containerd:6': 'docs/containerd.md#tasks',
  'containerd:6.1': 'docs/containerd.md#task-create',
  'containerd:6.2': 'docs/containerd.md#task-lifecycle',
  'containerd:6.3': 'docs/containerd.md#pause-resume',
  'containerd:6.4': 'docs/containerd.md#task-metrics',
  'containerd:6.5': 'docs/containerd.md#exit-status',
  'containerd:6.6': 'docs/containerd.md#deleting-containers',
  'containerd:7': 'docs/containerd.md#cni',
  'containerd:7.1': 'docs/containerd.md#netns',
  'containerd:7.2': 'docs/containerd.md#cni-plugins',
  'containerd:8': 'docs/containerd.md#events',
  'containerd:9': 'docs/containerd.md#versions',
  'containerd:10': 'docs/containerd.md#pull-sequence',
  'containerd:10.1': 'docs/containerd.md#pull-sequence',
  'containerd:10.4': 'docs/containerd.md#pitfalls',
  // Facts about the Node.js libraries.
  'node-stack:': 'docs/design.md#grpc-js',
  'node-stack:2': 'docs/design.md#grpc-js',
  'node-stack:5': 'docs/design.md#reflection',
  'node-stack:6': 'docs/design.md#undici',
  // Code conventions.
  'style:': 'docs/design.md#module-boundaries',
  'style:3': 'docs/design.md#module-boundaries',
  'style:4': 'docs/errors.md#conventions',
  'style:5': 'docs/design.md#options-and-seams',
  'style:6': 'docs/design.md#testing',
  // The reference agent.
  'reference-agent:': 'docs/reference-agent.md',
  'reference-agent:1.6': 'docs/reference-agent.md#cni-network',
  'reference-agent:4': 'docs/contract.md#worker-contract',
};

/** Whole phrases that say more than their section number; tried first, longest first. */
const PHRASES = [
  [/(?:\.\.\/)?(?:shared\/spec\/)?(?:spec|contract|agent-api\.md) §2 error table/g, 'docs/errors.md#codes'],
  [/(?:spec|contract) §3 EnsureContainer/g, 'docs/contract.md#ensurecontainer'],
  [/(?:spec|contract) §3 InvokeWorker/g, 'docs/contract.md#invokeworker'],
  [/(?:spec|contract) §3 table/g, 'docs/contract.md#getcontainermetrics'],
  [/(?:spec|contract) §5 `CNI_CONF_FILE`/g, 'docs/configuration.md#generated-conflist'],
  [/containerd-api\.md §10\.4 pitfall 9/g, 'docs/containerd.md#unpack'],
  [/containerd-api\.md §6\.1 pitfall/g, 'docs/containerd.md#task-create'],
  [/containerd-api\.md §2–3 \(shared notes\)/g, 'docs/containerd.md#pulling, docs/containerd.md#unpack'],
];

/**
 * Per-file choices where a bare section number is too coarse. `[path prefix, section, link]`;
 * the first matching prefix wins.
 */
const FILE_OVERRIDES = [
  ['src/proxy/', 'spec:3', 'docs/contract.md#invokeworker'],
  ['test/unit/proxy/', 'spec:3', 'docs/contract.md#invokeworker'],
  ['test/unit/proxy/', 'spec:7', 'docs/contract.md#gateway'],
  ['src/cgroups/', 'spec:3', 'docs/contract.md#getcontainermetrics'],
  ['test/unit/cgroups/', 'spec:3', 'docs/contract.md#getcontainermetrics'],
  ['test/fixtures/cgroups/', 'spec:3', 'docs/contract.md#getcontainermetrics'],
  ['src/runtime/docker/stats.ts', 'spec:3', 'docs/contract.md#getcontainermetrics'],
  ['src/runtime/docker/pull.ts', 'spec:3', 'docs/contract.md#ensurecontainer'],
  ['src/runtime/containerd/image/', 'spec:3', 'docs/contract.md#ensurecontainer'],
  ['src/runtime/containerd/spec/', 'spec:3', 'docs/contract.md#ensurecontainer'],
  ['src/config/config.ts', 'spec:3', 'docs/contract.md#ensurecontainer'],
  ['src/cli/ctl.ts', 'spec:3', 'docs/contract.md#ensurecontainer'],
  ['test/unit/config.test.ts', 'spec:3', 'docs/contract.md#worker-ids'],
  ['src/api/server.ts', 'spec:4', 'docs/state-and-labels.md#shutdown'],
  ['src/api/server.ts', 'spec:6', 'docs/contract.md#tls'],
  ['src/api/metrics-http.ts', 'spec:6', 'docs/metrics.md#endpoint'],
  ['src/runtime/containerd/runtime.ts', 'spec:4', 'docs/state-and-labels.md#restart-survival'],
  ['src/runtime/docker/errors.ts', 'spec:2', 'docs/errors.md#codes'],
  ['src/runtime/containerd/image/registry-errors.ts', 'spec:2', 'docs/errors.md#codes'],
  ['test/unit/api/status.test.ts', 'spec:2', 'docs/errors.md#codes'],
  ['src/errors.ts', 'spec:2', 'docs/errors.md#codes'],
  ['src/api/service.ts', 'spec:2', 'docs/contract.md#ownership'],
  ['src/cni/exec.ts', 'spec:2', 'docs/errors.md#codes'],
];

/**
 * For `spec §3` with no override: the RPC named on the citation's line, else on the lines
 * around it (nearest first). Order inside one line: the first listed keyword found.
 */
const RPC_KEYWORDS = [
  ['GetContainerMetrics', 'docs/contract.md#getcontainermetrics'],
  ['restart_count', 'docs/contract.md#getcontainermetrics'],
  ['InvokeWorker', 'docs/contract.md#invokeworker'],
  ['timeout_ms', 'docs/contract.md#invokeworker'],
  ['EnsureContainer', 'docs/contract.md#ensurecontainer'],
  ['Destroy', 'docs/contract.md#destroycontainer'],
  ['Pause', 'docs/contract.md#pausecontainer'],
  ['Resume', 'docs/contract.md#resumecontainer'],
  ['ListContainers', 'docs/contract.md#listcontainers'],
];

const W_MAX = 26;

// ------------------------------------------------------------------ matching

/** One citation: optional path, the document, a section, optional range end, continuations. */
const CITATION =
  /(?:(?:\.\.\/)*shared\/(?:notes|spec)\/|(?<![\w/.#-]))(spec|contract|agent-api\.md|containerd-api\.md|node-stack\.md|style\.md|reference-agent\.md)(?: §(\d+(?:\.\d+)*)(?:–(\d+(?:\.\d+)*))?((?:, §\d+(?:\.\d+)*)*))?/g;
const WEAKNESS = /\bW([0-9]{1,2})\b/g;

/** The mapping key's document part for what the text says. */
function docKey(name) {
  if (name === 'spec' || name === 'contract' || name === 'agent-api.md') return 'spec';
  return name.replace(/-api\.md$|\.md$/, '');
}

/** `spec`/`contract` only count when a section follows (the words are ordinary English too). */
function needsSection(name) {
  return name === 'spec' || name === 'contract';
}

function lookup(doc, section, file, lines, lineIndex) {
  const key = `${doc}:${section}`;
  for (const [prefix, k, link] of FILE_OVERRIDES) if (k === key && file.startsWith(prefix)) return link;
  if (key === 'spec:3') {
    for (const d of [0, -1, 1, -2, 2]) {
      const line = lines[lineIndex + d];
      if (line === undefined) continue;
      for (const [word, link] of RPC_KEYWORDS) if (line.includes(word)) return link;
    }
  }
  if (key === 'spec:2') {
    const line = lines[lineIndex] ?? '';
    if (/message limit/.test(line)) return 'docs/contract.md#message-limits';
    if (/PERMISSION_DENIED|owner/.test(line)) return 'docs/contract.md#ownership';
  }
  if (SECTIONS[key] !== undefined) return SECTIONS[key];
  // An unmapped subsection falls back to its section (§2.8 → §2).
  const parent = section.includes('.') ? section.slice(0, section.lastIndexOf('.')) : '';
  if (SECTIONS[`${doc}:${parent}`] !== undefined) return SECTIONS[`${doc}:${parent}`];
  return undefined;
}

/** Ranges `A–B` with the same major number expand to every mapped subsection in between. */
function expandRange(doc, from, to) {
  const out = [from];
  if (to === undefined) return out;
  const [fa, fb] = from.split('.').map(Number);
  const [ta, tb] = to.split('.').map(Number);
  if (fb !== undefined && tb !== undefined && fa === ta) {
    for (let i = fb + 1; i <= tb; i++) out.push(`${fa}.${i}`);
  } else if (fb === undefined && tb === undefined) {
    for (let i = fa + 1; i <= ta; i++) out.push(String(i));
  } else {
    out.push(to);
  }
  return out.filter((s) => SECTIONS[`${doc}:${s}`] !== undefined || s === from);
}

/** Rewrites one file's text. Returns the new text and the list of changes. */
export function rewriteText(text, file) {
  const changes = [];
  const lines = text.split('\n');
  const out = lines.map((line, i) => {
    let next = line;
    for (const [re, link] of PHRASES) {
      next = next.replace(re, (m) => {
        changes.push({ line: i + 1, from: m, to: link });
        return link;
      });
    }
    next = next.replace(CITATION, (m, name, section, rangeEnd, more) => {
      if (section === undefined && needsSection(name)) return m;
      const doc = docKey(name);
      const sections = section === undefined ? [''] : expandRange(doc, section, rangeEnd);
      for (const s of (more ?? '').matchAll(/§(\d+(?:\.\d+)*)/g)) sections.push(s[1]);
      const links = [];
      for (const s of sections) {
        const link = lookup(doc, s, file, lines, i);
        if (link === undefined) return m; // unknown: leave it for --check to report
        if (!links.includes(link)) links.push(link);
      }
      const to = links.join(', ');
      changes.push({ line: i + 1, from: m, to });
      return to;
    });
    next = next.replace(WEAKNESS, (m, n) => {
      const k = Number(n);
      if (k < 1 || k > W_MAX) return m;
      const to = `docs/reference-agent.md#w${k}`;
      changes.push({ line: i + 1, from: m, to });
      return to;
    });
    return next;
  });
  return { text: out.join('\n'), changes };
}

// ------------------------------------------------------------------ files

const SCANNED_DIRS = ['src', 'test', 'scripts'];
const EXTENSIONS = /\.(ts|mts|mjs|js|sh|md)$/;
const SKIP = new Set(['node_modules', '.tmp', 'dist', 'gen']);
const SELF = 'scripts/docs/rewrite-citations.mjs';
/** Files that name the old documents on purpose (this script, the docs test): never rewritten. */
const EXEMPT = new Set([SELF, 'test/unit/docs.test.ts']);

function walk(root, dir, out) {
  let names;
  try {
    names = readdirSync(path.join(root, dir));
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    if (SKIP.has(name)) continue;
    const rel = `${dir}/${name}`;
    const st = statSync(path.join(root, rel));
    if (st.isDirectory()) walk(root, rel, out);
    else if (EXTENSIONS.test(name) && !EXEMPT.has(rel)) out.push(rel);
  }
  return out;
}

// ------------------------------------------------------------------ anchors

/** GitHub's heading slug: lower-case, drop punctuation except '-' and '_', spaces → '-'. */
export function slug(heading) {
  return heading
    .trim()
    .toLowerCase()
    .replace(/<[^>]*>/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Every anchor a Markdown file offers: heading slugs (with -1, -2 for repeats) and `<a id>`s. */
export function anchorsOf(markdown) {
  const anchors = new Set();
  const seen = new Map();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) {
      const base = slug(h[1]);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"\s*>/g)) anchors.add(m[1]);
  }
  return anchors;
}

const DOC_LINK = /\bdocs\/([\w./-]+\.md)#([\w-]+)/g;

/** `docs/<file>.md#<anchor>` links in `text` that do not resolve under `root`. */
function brokenDocLinks(root, text, cache) {
  const broken = [];
  for (const m of text.matchAll(DOC_LINK)) {
    const file = path.join(root, 'docs', m[1]);
    if (!cache.has(file)) {
      try {
        cache.set(file, anchorsOf(readFileSync(file, 'utf8')));
      } catch {
        cache.set(file, undefined);
      }
    }
    const anchors = cache.get(file);
    if (anchors === undefined) broken.push(`${m[0]} (no such file)`);
    else if (!anchors.has(m[2])) broken.push(`${m[0]} (no such anchor)`);
  }
  return broken;
}

/** Relative `[text](file.md#anchor)` links inside docs/*.md that do not resolve. */
function brokenRelativeLinks(root, rel, text, cache) {
  const broken = [];
  for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1];
    if (/^[a-z]+:/i.test(target)) continue;
    const [file, anchor] = target.split('#');
    // README-draft.md is written for the repository root, where it will replace README.md.
    const base = rel === 'docs/README-draft.md' ? root : path.join(root, path.dirname(rel));
    const abs = file === '' ? path.join(root, rel) : path.join(base, file);
    let st;
    try {
      st = statSync(abs);
    } catch {
      broken.push(`${target} (no such file)`);
      continue;
    }
    if (anchor === undefined || !abs.endsWith('.md') || st.isDirectory()) continue;
    if (!cache.has(abs)) cache.set(abs, anchorsOf(readFileSync(abs, 'utf8')));
    if (!cache.get(abs).has(anchor)) broken.push(`${target} (no such anchor)`);
  }
  return broken;
}

// ------------------------------------------------------------------ main

function main() {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const dryRun = args.includes('--dry-run');
  const rootArg = args.indexOf('--root');
  const root = rootArg >= 0 ? path.resolve(args[rootArg + 1]) : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

  const files = SCANNED_DIRS.flatMap((d) => walk(root, d, []));
  let remaining = 0;
  let changed = 0;
  for (const rel of files) {
    const text = readFileSync(path.join(root, rel), 'utf8');
    const { text: next, changes } = rewriteText(text, rel);
    if (changes.length === 0) continue;
    if (check) {
      remaining += changes.length;
      for (const c of changes) console.log(`${rel}:${c.line}: outside citation "${c.from}" (→ ${c.to})`);
      continue;
    }
    changed++;
    for (const c of changes) console.log(`${rel}:${c.line}: "${c.from}" → ${c.to}`);
    if (!dryRun) writeFileSync(path.join(root, rel), next);
  }
  // Whatever the rewrite could not map stays visible to --check.
  const leftover = /(?:\bspec §|\bcontract §|(?<![\w/.#-])(?:containerd-api|node-stack|style|reference-agent|agent-api)\.md\b|\bW(?:[1-9]|1[0-9]|2[0-6])\b)/;
  if (check) {
    for (const rel of files) {
      const lines = readFileSync(path.join(root, rel), 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (leftover.test(line) && rewriteText(line, rel).changes.length === 0) {
          remaining++;
          console.log(`${rel}:${i + 1}: unmapped outside citation: ${line.trim()}`);
        }
      });
    }
  }

  let broken = 0;
  if (check) {
    const cache = new Map();
    const linkFiles = [...files, ...walk(root, 'docs', []), 'README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'].filter((f) => {
      try {
        return statSync(path.join(root, f)).isFile();
      } catch {
        return false;
      }
    });
    for (const rel of linkFiles) {
      if (rel === SELF) continue;
      const text = readFileSync(path.join(root, rel), 'utf8');
      const problems = brokenDocLinks(root, text, cache);
      if (rel.endsWith('.md')) problems.push(...brokenRelativeLinks(root, rel, text, cache));
      for (const p of problems) console.log(`${rel}: broken link ${p}`);
      broken += problems.length;
    }
  }

  if (check) {
    console.log(`${remaining} outside citation(s) left, ${broken} broken docs link(s)`);
    process.exit(remaining > 0 || broken > 0 ? 1 : 0);
  }
  console.log(`${dryRun ? 'would change' : 'changed'} ${changed} file(s)`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
