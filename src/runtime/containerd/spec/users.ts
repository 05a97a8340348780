/**
 * Resolves an image's `User` (`name`, `uid`, `name:group`, `uid:gid`, `uid:group`, `name:gid`)
 * to numeric ids from the text of the image's /etc/passwd and /etc/group, with containerd's
 * rules: blank → root with additional gid 0; a numeric uid without a passwd entry gets gid 0;
 * additional gids are the primary gid plus the /etc/group memberships of the user's name. Reading the files safely is image-user.ts's job; this is only parsing.
 */
import { AgentError } from '../../../errors.js';
import type { OciUser } from './types.js';

/** The image's account files; undefined = the image has no such file. */
export interface AccountFiles {
  readonly passwd: string | undefined;
  readonly group: string | undefined;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

const isNumeric = (s: string): boolean => /^\d+$/.test(s);

/** A USER string fit for an error message: it comes from the image, so it is cut short and stripped to safe characters. */
export function safeUserText(user: string): string {
  const clean = user.replace(/[^A-Za-z0-9._:@+-]/g, '?');
  return clean.length > 64 ? `${clean.slice(0, 64)}…` : clean;
}

/** `user` split into its user and optional group parts. */
function splitUser(user: string): { u: string; g: string | undefined } {
  const i = user.indexOf(':');
  return i < 0 ? { u: user, g: undefined } : { u: user.slice(0, i), g: user.slice(i + 1) };
}

/**
 * The ids of `user` when no file is needed: blank (root) or numeric `uid:gid`. Undefined when
 * the image's files must be read.
 */
export function numericUser(user: string | undefined): OciUser | undefined {
  const spec = (user ?? '').trim();
  if (spec === '') return { uid: 0, gid: 0, additionalGids: [0] };
  const { u, g } = splitUser(spec);
  if (g !== undefined && isNumeric(u) && isNumeric(g)) {
    const uid = Number(u);
    const gid = Number(g);
    if (Number.isSafeInteger(uid) && Number.isSafeInteger(gid)) return { uid, gid, additionalGids: [gid] };
  }
  return undefined;
}

function parseColonFile(text: string | undefined): string[][] {
  if (text === undefined) return [];
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'));
}

/** A numeric id field of an account file, or undefined when it is not one. */
function idField(s: string | undefined): number | undefined {
  if (s === undefined || !isNumeric(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) && n <= 0xffffffff ? n : undefined;
}

/**
 * Numeric user for the spec from the image's account files. A user or group that is not in
 * them → INVALID_ARGUMENT naming the image and the (sanitised) USER.
 */
export function resolveUser(user: string | undefined, files: AccountFiles, imageName: string): OciUser {
  const fast = numericUser(user);
  if (fast) return fast;
  const spec = (user ?? '').trim();
  const { u, g } = splitUser(spec);
  const shown = safeUserText(spec);
  const refuse = (what: string): AgentError => new AgentError('INVALID_ARGUMENT', `image ${imageName}: USER "${shown}": ${what}`);
  if (u === '') throw refuse('no user name or uid before the ":"');
  const passwd: PasswdEntry[] = [];
  for (const f of parseColonFile(files.passwd)) {
    const uid = idField(f[2]);
    const gid = idField(f[3]);
    if (uid !== undefined && gid !== undefined) passwd.push({ name: f[0] ?? '', uid, gid });
  }
  const groups = parseColonFile(files.group);

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (isNumeric(u)) {
    const n = idField(u);
    if (n === undefined) throw refuse('the uid is out of range');
    uid = n;
    entry = passwd.find((p) => p.uid === uid);
  } else {
    entry = passwd.find((p) => p.name === u);
    if (!entry)
      throw refuse(
        files.passwd === undefined
          ? "the user needs the image's /etc/passwd, and there is none"
          : "the user is not in the image's /etc/passwd",
      );
    uid = entry.uid;
  }
  let gid: number;
  if (g === undefined) gid = entry?.gid ?? 0;
  else if (isNumeric(g)) {
    const n = idField(g);
    if (n === undefined) throw refuse('the gid is out of range');
    gid = n;
  } else {
    const grp = groups.find((f) => f[0] === g);
    const n = idField(grp?.[2]);
    if (n === undefined)
      throw refuse(
        files.group === undefined
          ? "the group needs the image's /etc/group, and there is none"
          : "the group is not in the image's /etc/group",
      );
    gid = n;
  }
  const name = entry?.name;
  const extra =
    name !== undefined
      ? groups
          .filter((f) => (f[3] ?? '').split(',').includes(name))
          .flatMap((f) => {
            const n = idField(f[2]);
            return n === undefined ? [] : [n];
          })
      : [];
  return { uid, gid, additionalGids: [...new Set([gid, ...extra])] };
}
