import { findExecutable } from '../../lib/launch/backend-process.js';

/**
 * In a suite's `before`: skips the suite when `exe` is not installed, and says so
 * in the suite's title (mocha has no skip reason of its own).
 */
export function skipWithout(ctx: Mocha.Context, exe: string, pkg: string): void {
  if (!findExecutable(exe)) {
    ctx.test!.parent!.title += ` (skipped: ${exe} not installed, apt-get install ${pkg})`;
    ctx.skip();
  }
}
