/**
 * The agent as the soak runs it: unchanged, plus one soak-only hook. Started with
 * `node --expose-gc`, SIGUSR2 runs a full garbage collection, so that each sample measures
 * live memory rather than garbage V8 has not collected yet. Not used in production.
 */
import { main } from '../../src/main.js';

const gc = (globalThis as { gc?: () => void }).gc;
process.on('SIGUSR2', () => {
  gc?.();
});
void main(process.env);
