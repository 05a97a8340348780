/**
 * The clean-up list a test file fills as it creates things (listeners, veths, daemons) and
 * empties in an `after` hook: last made, first undone, and one failure does not stop the rest
 * (every test leaves nothing behind, also when it fails).
 */
export async function runCleanups(cleanups: (() => unknown)[]): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      console.error('cleanup failed:', err);
    }
  }
}
