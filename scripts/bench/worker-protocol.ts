/**
 * The line protocol between the bench (parent) and `ours-worker.js` (child).
 *
 * Parent -> worker, one word a line on stdin: `go` (start the busy loop), `mark`
 * (report your counters now), `stop` (leave the loop, report, close, exit).
 * Worker -> parent, one JSON object a line on stdout (see {@link WorkerMessage}).
 * The worker checks stdin between 20 ms slices of its loop, so a `mark` is answered
 * within about 20 ms; the answer carries the worker's own monotonic timestamp.
 */

import type { RingStats } from './ring-stats.js';

/** Exit status of a worker that could not load or use the driver. */
export const EXIT_UNAVAILABLE = 3;

export type WorkerMessage =
  | { type: 'probe'; available: true }
  | { type: 'ready'; info?: Record<string, unknown> }
  /** `tNs`: `process.hrtime.bigint()` as a decimal string (same clock as the parent's). */
  | { type: 'mark'; tNs: string; packets: number; bytes: number }
  /** `rejected` (tx): frames offered to sendBurst that it did not take (ring full). */
  | { type: 'done'; packets: number; bytes: number; rejected?: number; idleSlices: number; stats?: unknown; ringStats?: RingStats | null }
  | { type: 'error'; message: string; unavailable?: boolean };

export function encodeMessage(m: WorkerMessage): string {
  return `${JSON.stringify(m)}\n`;
}

/** Parses one stdout line; `undefined` for anything that is not a protocol message. */
export function decodeMessage(line: string): WorkerMessage | undefined {
  const t = line.trim();
  if (!t.startsWith('{')) return undefined;
  try {
    const m = JSON.parse(t) as { type?: unknown };
    return typeof m.type === 'string' ? (m as WorkerMessage) : undefined;
  } catch {
    return undefined;
  }
}
