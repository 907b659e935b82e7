/** What the cell runner needs from a frontend under test (DPDK's or ours). */
import type { CounterSample } from './rate.js';
import type { RingStats } from './ring-stats.js';

export interface BenchFrontend {
  /** The command line that started it, for the report. */
  readonly command: string;
  /** The process whose CPU time counts as the frontend's. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Start transmitting (tx cells) or receiving (rx cells). */
  start(): Promise<void>;
  /** The frontend's own count of frames sent (tx) or received (rx), for cross-checking. */
  sample(): Promise<CounterSample | null>;
  /**
   * Stop the traffic; the process stays. A transmitting frontend returns how many
   * frames its TX ring took and how many it offered in vain (ring full) since start.
   */
  stopTraffic(): Promise<SenderTotals | null>;
  /** End the process (by pid) and remove its files. Idempotent. */
  close(): Promise<void>;
  /** Recent output, for error messages. */
  outputTail(): string;
}

/** Frames a sender's ring accepted, and frames it offered that found the ring full. */
export interface SenderTotals {
  accepted: number;
  rejected: number;
  /** Our worker with --ring-stats: what its TX ring did. */
  ringStats?: RingStats | null;
}

/** Shell-like rendering of an argument vector, for humans. */
export function renderCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
