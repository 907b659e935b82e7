import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import os from 'node:os';
import { expect } from 'chai';

/** Asserts that no process has this pid any more. */
export function expectGone(pid: number): void {
  expect(() => process.kill(pid, 0)).to.throw().with.property('code', 'ESRCH');
}

export function expectRemoved(p: string): void {
  expect(existsSync(p), `${p} still exists`).to.equal(false);
}

/** Names of entries in os.tmpdir() starting with `prefix`. */
export async function tmpEntries(prefix: string): Promise<Set<string>> {
  return new Set((await readdir(os.tmpdir())).filter((n) => n.startsWith(prefix)));
}

/** Awaits `p`, which must reject; returns the rejection. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  expect.fail('expected a rejection');
}
