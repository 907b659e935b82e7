import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { ensureWatchdog } from '../../lib/launch/process-group.js';
import { Mapping } from '../../lib/native/mapping.js';
import { encodeHeader } from '../../lib/protocol/header.js';

// Node keeps one fd on /dev/null open for good after the first child process started
// with an ignored stdin and piped output (launch/ starts back-ends that way), so a spec
// file run on its own counted it as its first test's leak. Opened here, before any snapshot.
await new Promise<void>((resolve) => {
  spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'] })
    .on('close', () => resolve())
    .on('error', () => resolve());
});

// Likewise the process-group watchdog (launch/process-group.ts): started by the first back-end
// launch, it then holds one pipe fd for the life of the process.
ensureWatchdog();

/** Open fds of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/**
 * Mappings this library is responsible for: memfd mappings as the kernel lists
 * them, plus every Mapping not yet closed (anonymous scratch pages included).
 * Raw /proc/self/maps line counts move with V8's heap, so they are not used.
 */
export function mapCount(): number {
  const memfdMaps = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
  return memfdMaps + Mapping.liveCount;
}

export function rssBytes(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Snapshot of what a test may leak; `check()` returns what grew. */
export function resourceSnapshot(): { fds: number; maps: number; leaked(): { fds: number; maps: number } } {
  const fds = fdCount();
  const maps = mapCount();
  return { fds, maps, leaked: () => ({ fds: fdCount() - fds, maps: mapCount() - maps }) };
}

/** Timers (setTimeout/setInterval) alive in this process. */
export function timerCount(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

/**
 * Waits (up to `ms`) for fds and mappings to come back to the snapshot, then
 * returns what is still leaked. Child-process pipes and uv handles close a few
 * event-loop turns after the call that releases them; on a loaded 2-core
 * machine that can take longer than one settle(). A real leak stays.
 */
export async function leakedAfter(snap: ReturnType<typeof resourceSnapshot>, ms = 1000): Promise<{ fds: number; maps: number }> {
  const deadline = Date.now() + ms;
  for (;;) {
    const l = snap.leaked();
    if ((l.fds <= 0 && l.maps <= 0) || Date.now() >= deadline) return l;
    await settle(10);
  }
}

/** Lets pending uv_close callbacks and timers run. */
export function settle(ms = 20): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function expectRejectCode(p: Promise<unknown>, code: string): Promise<Error & { code: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as Error & { code: string };
    if (err.code !== code) throw new Error(`expected ${code}, got ${err.code ?? ''}: ${err.message}`, { cause: e });
    return err;
  }
  throw new Error(`expected rejection with ${code}, but it resolved`);
}

/** A 12-byte header with any field values, for headers no correct peer would send. */
export function rawHeader(request: number, flags: number, size: number): Uint8Array {
  const bytes = new Uint8Array(12);
  encodeHeader({ request, flags, size }, bytes, 0);
  return bytes;
}
