/**
 * Which cgroup hierarchy the host runs. Decides the parts of a worker's spec that differ
 * between v1 and v2 (runc refuses `linux.resources.unified` on v1; swap and CPU weight need
 * it on v2). Read once at start-up: the hierarchy cannot change under a running system.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

export type CgroupVersion = 1 | 2;

/** 2 when `root` is the unified hierarchy (it has `cgroup.controllers`), else 1 (legacy or hybrid). */
export function detectCgroupVersion(root = '/sys/fs/cgroup'): CgroupVersion {
  return existsSync(path.join(root, 'cgroup.controllers')) ? 2 : 1;
}
