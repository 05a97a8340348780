import { fileURLToPath } from 'node:url';
import path from 'node:path';

/**
 * The project root, found from this file's location so that both `src/` (tsx) and `dist/`
 * (compiled) resolve the proto directory the same way, whatever the working directory.
 */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const AGENT_PROTO_DIR = path.join(PROJECT_ROOT, 'proto', 'agent');
export const CONTAINERD_PROTO_DIR = path.join(PROJECT_ROOT, 'proto', 'containerd');
