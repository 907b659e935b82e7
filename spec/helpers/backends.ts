import { findExecutable } from '../../lib/launch/backend-process.js';

/**
 * In a suite's `before`: skips the suite when `exe` is not installed and prints
 * why (mocha has no skip reason, and the reporter has already printed the title).
 */
export function skipWithout(ctx: Mocha.Context, exe: string, pkg: string): void {
  if (!findExecutable(exe)) {
    process.stdout.write(`      skipped: ${exe} is not installed (apt-get install ${pkg})\n`);
    ctx.skip();
  }
}
