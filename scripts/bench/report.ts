/**
 * Results of the net bench: per-run measurements, their per-cell summary, and
 * the two output forms (text table, JSON document). Pure; no I/O.
 */
import { gbpsOf, median, ratioOf, spread } from './rate.js';
import { describeRingStats, type RingStats } from './ring-stats.js';
import type { BenchOptions, Direction, FrontendKind } from './options.js';

/** One measured window of one frontend against one fresh back-end. */
export interface RunResult {
  /** From the back-end's counters: rx-packets (tx cells) or tx-packets (rx cells). */
  mpps: number;
  gbps: number;
  packets: number;
  bytes: number;
  elapsedMs: number;
  /** Back-end bytes / packets over the window; should equal the frame size. */
  bytesPerPacket: number | null;
  /**
   * Of the frames the sender offered (frontend in tx cells, back-end in rx cells),
   * the % that found the ring full, over the whole forwarding period (warm-up
   * included). High: the receiver is the bottleneck; near 0: the sender is.
   */
  senderRingFullPct: number | null;
  /** The frontend's own count over (nearly) the same window, for cross-checking; null if unknown. */
  frontendMpps: number | null;
  /** Half the time the counter reads took (their timestamps are midpoints). */
  readUncertaintyMs: number;
  /**
   * CPU other programs used during the window, in % of one CPU (see cpu.ts). With a
   * poller on every core, anything here was taken from the pollers.
   */
  foreignCpuPct: number | null;
  /** The other processes that used most of it, e.g. `node[1234] 97%`. */
  foreignTop?: string[];
  /** Back-end rate over each ~1 s slice of the window (the result itself is first to last read). */
  intervalMpps?: number[];
  /** Hypervisor steal time during the window, % of one CPU (null where unknown). */
  stealPct?: number | null;
  /** Measurements made for this run (more than 1: earlier ones were disturbed). */
  attempts?: number;
  /** Our TX cells with --ring-stats: what the TX ring did (over the whole forwarding period). */
  ringStats?: RingStats;
}

export interface SideSummary {
  /** Median over runs. */
  mpps: number;
  /** L2 frame rate of the median, without preamble/IFG/FCS. */
  gbps: number;
  /** Mpps of every run, in run order. */
  runs: number[];
  /** (max - min) / median over runs; null with one run. */
  spread: number | null;
  frontendMpps: number | null;
  bytesPerPacket: number | null;
  /** Per run, like `runs`. */
  senderRingFullPct: (number | null)[];
  /** Per run, like `runs`. */
  foreignCpuPct: (number | null)[];
  /** Per run: the busiest other processes. */
  foreignTop: string[][];
  /** Per run: the rate of each ~1 s slice. */
  intervalMpps: number[][];
  /** Per run. */
  stealPct: (number | null)[];
  /** The fastest run. */
  best: number;
  /** Per run: measurements made (see {@link RunResult.attempts}). */
  attempts: number[];
}

/** Above this share of ring-full offers the receiver is the bottleneck; below {@link SENDER_LIMITED_PCT}, the sender. */
export const RECEIVER_LIMITED_PCT = 20;
export const SENDER_LIMITED_PCT = 5;

/**
 * Which side could not keep up, from how often the sender found the ring full:
 * the sender is the frontend in tx cells and the back-end in rx cells.
 */
export function limitedBy(direction: Direction, ringFullPct: number | null | undefined): 'frontend' | 'back-end' | 'both' | null {
  if (ringFullPct == null) return null;
  const receiver = direction === 'tx' ? 'back-end' : 'frontend';
  const sender = direction === 'tx' ? 'frontend' : 'back-end';
  if (ringFullPct > RECEIVER_LIMITED_PCT) return receiver;
  if (ringFullPct < SENDER_LIMITED_PCT) return sender;
  return 'both';
}

/** A run whose slowest ~1 s slice is below this fraction of its fastest one is flagged as unsteady. */
export const UNSTEADY_RATIO = 0.75;

/** Whether the per-slice rates of a run moved by more than {@link UNSTEADY_RATIO}. */
export function unsteady(intervals: readonly number[]): boolean {
  if (intervals.length < 2) return false;
  const max = Math.max(...intervals);
  return max > 0 && Math.min(...intervals) / max < UNSTEADY_RATIO;
}

/** Runs with more foreign CPU than this (in % of one CPU) are flagged as disturbed. */
export const DISTURBED_CPU_PCT = 10;

/** A run that produced no measurement: the benchmark fails when there is any. */
export interface RunFailure {
  /** 1-based, in the order of `--repeat`. */
  run: number;
  /** First line of the error. */
  error: string;
}

export interface CaseSummary {
  direction: Direction;
  frameSize: number;
  ours: SideSummary | null;
  dpdk: SideSummary | null;
  /** Ratio of the medians. */
  ratio: number | null;
  /** Ratio of the fastest runs: steadier than `ratio` on a machine with slow phases. */
  ratioBest: number | null;
  /** Why a side is null (not run, driver not available, failed). */
  errors?: Partial<Record<FrontendKind, string>>;
  /** Runs of each side that failed; the medians are of the other runs only, so any entry fails the benchmark. */
  failures?: Partial<Record<FrontendKind, RunFailure[]>>;
}

export interface CellOutcome {
  direction: Direction;
  frameSize: number;
  frontend: FrontendKind;
  runs: RunResult[];
  /** Runs that failed (or could not start), each listed in the report. */
  failures?: RunFailure[];
  error?: string;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function summarizeSide(runs: readonly RunResult[], frameSize: number): SideSummary | null {
  if (runs.length === 0) return null;
  const mpps = median(runs.map((r) => r.mpps))!;
  const front = runs.map((r) => r.frontendMpps).filter((x): x is number => x !== null);
  const bpp = runs.map((r) => r.bytesPerPacket).filter((x): x is number => x !== null);
  return {
    mpps,
    gbps: gbpsOf(mpps, frameSize),
    runs: runs.map((r) => r.mpps),
    spread: spread(runs.map((r) => r.mpps)),
    frontendMpps: median(front),
    bytesPerPacket: median(bpp),
    senderRingFullPct: runs.map((r) => r.senderRingFullPct),
    foreignCpuPct: runs.map((r) => r.foreignCpuPct),
    foreignTop: runs.map((r) => r.foreignTop ?? []),
    intervalMpps: runs.map((r) => r.intervalMpps ?? []),
    stealPct: runs.map((r) => r.stealPct ?? null),
    best: Math.max(...runs.map((r) => r.mpps)),
    attempts: runs.map((r) => r.attempts ?? 1),
  };
}

/** Groups outcomes into one case per (direction, frame size), in the order given by the options. */
export function summarize(
  outcomes: readonly CellOutcome[],
  opts: Pick<BenchOptions, 'directions' | 'sizes' | 'frontends'>,
): CaseSummary[] {
  const cases: CaseSummary[] = [];
  for (const direction of opts.directions) {
    for (const frameSize of opts.sizes) {
      const c: CaseSummary = { direction, frameSize, ours: null, dpdk: null, ratio: null, ratioBest: null };
      const errors: Partial<Record<FrontendKind, string>> = {};
      const failures: Partial<Record<FrontendKind, RunFailure[]>> = {};
      for (const kind of ['dpdk', 'ours'] as const) {
        const mine = outcomes.filter((o) => o.direction === direction && o.frameSize === frameSize && o.frontend === kind);
        const runs = mine.flatMap((o) => o.runs);
        c[kind] = summarizeSide(runs, frameSize);
        const failed = mine.flatMap((o) => o.failures ?? []);
        if (failed.length) failures[kind] = failed;
        const err = mine.find((o) => o.error)?.error;
        if (err) errors[kind] = err;
        else if (!opts.frontends.includes(kind)) errors[kind] = 'not run (--only)';
      }
      c.ratio = ratioOf(c.ours?.mpps, c.dpdk?.mpps);
      c.ratioBest = ratioOf(c.ours?.best, c.dpdk?.best);
      if (Object.keys(errors).length) c.errors = errors;
      if (Object.keys(failures).length) c.failures = failures;
      cases.push(c);
    }
  }
  return cases;
}

/** Every failed run, case by case, dpdk before ours. */
export function failedRuns(cases: readonly CaseSummary[]): (RunFailure & { direction: Direction; frameSize: number; frontend: FrontendKind })[] {
  return cases.flatMap((c) =>
    (['dpdk', 'ours'] as const).flatMap((frontend) => (c.failures?.[frontend] ?? []).map((f) => ({ direction: c.direction, frameSize: c.frameSize, frontend, ...f }))),
  );
}

/** The bench's exit code for these results: 1 when a run of either side failed, else 0. */
export function exitCodeOf(cases: readonly CaseSummary[]): number {
  return failedRuns(cases).length > 0 ? 1 : 0;
}

export interface BenchMeta {
  durationMs: number;
  warmupMs: number;
  repeat: number;
  maxForeignPct?: number;
  retries?: number;
  queueSize: number;
  burst: number;
  /** How our TX cells filled frames (absent: 'copy'). */
  txMode?: 'copy' | 'in-place';
  /** --offload: 'csum' or 'tso' cells (absent or null: none). */
  offload?: 'csum' | 'tso' | null;
  cores: { frontend: number; backend: number };
  /** How Gbit/s is computed. */
  gbpsBasis: string;
  /** Which counter each direction's rate comes from. */
  source: Record<Direction, string>;
  commands?: Record<string, string>;
  machine?: Record<string, unknown>;
}

export const GBPS_BASIS =
  'L2 frame rate: Mpps x frameSize x 8 / 1000; frameSize is Ethernet header + payload, ' +
  'without FCS and without the 20-byte preamble + inter-frame gap';

export const SOURCES: Record<Direction, string> = {
  tx: "back-end port 0 rx-packets (frames the back-end took from the frontend's TX ring)",
  rx: "back-end port 0 tx-packets (frames the back-end put into the frontend's RX ring)",
};

function sideJson(s: SideSummary | null, direction: Direction): Record<string, unknown> | null {
  if (!s) return null;
  const full = median(s.senderRingFullPct.filter((x): x is number => x !== null));
  return {
    mpps: round(s.mpps, 4),
    gbps: round(s.gbps, 4),
    runs: s.runs.map((x) => round(x, 4)),
    spread: s.spread === null ? null : round(s.spread, 4),
    frontendMpps: s.frontendMpps === null ? null : round(s.frontendMpps, 4),
    bytesPerPacket: s.bytesPerPacket === null ? null : round(s.bytesPerPacket, 2),
    senderRingFullPct: s.senderRingFullPct.map((x) => (x === null ? null : round(x, 2))),
    limitedBy: limitedBy(direction, full),
    foreignCpuPct: s.foreignCpuPct.map((x) => (x === null ? null : round(x, 1))),
    foreignTop: s.foreignTop,
    intervalMpps: s.intervalMpps.map((r) => r.map((x) => round(x, 3))),
    stealPct: s.stealPct.map((x) => (x === null ? null : round(x, 1))),
    best: round(s.best, 4),
    attempts: s.attempts,
  };
}

/** The `--json` document. */
export function toJson(cases: readonly CaseSummary[], meta: BenchMeta): Record<string, unknown> {
  return {
    cases: cases.map((c) => ({
      direction: c.direction,
      frameSize: c.frameSize,
      offload: meta.offload ?? null,
      ours: sideJson(c.ours, c.direction),
      dpdk: sideJson(c.dpdk, c.direction),
      ratio: c.ratio === null ? null : round(c.ratio, 4),
      ratioBest: c.ratioBest === null ? null : round(c.ratioBest, 4),
      ...(c.errors ? { errors: c.errors } : {}),
      ...(c.failures ? { failures: c.failures } : {}),
    })),
    failedRuns: failedRuns(cases).length,
    ...meta,
  };
}

function fmt(x: number | null | undefined, digits: number): string {
  return x == null ? '-' : x.toFixed(digits);
}

function mppsCell(s: SideSummary | null, failed: number): string {
  const mark = failed ? ` [${failed} failed]` : '';
  if (!s) return `-${mark}`;
  if (s.runs.length < 2) return `${fmt(s.mpps, 2)}${mark}`;
  return `${fmt(s.mpps, 2)} (${fmt(Math.min(...s.runs), 2)}-${fmt(Math.max(...s.runs), 2)})${mark}`;
}

/** Right-aligned columns, first column left-aligned. */
export function alignColumns(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd());
}

/** The human-readable result: a table, then how to read it, then why any cell is empty. */
export function formatTable(cases: readonly CaseSummary[], meta: BenchMeta): string {
  const multi = cases.some((c) => (c.dpdk?.runs.length ?? 0) > 1 || (c.ours?.runs.length ?? 0) > 1);
  const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
  const rows: string[][] = [
    ['dir', 'frame', 'DPDK Mpps', 'DPDK Gbit/s', 'ours Mpps', 'ours Gbit/s', 'ours/DPDK', ...(multi ? ['best/best'] : [])],
  ];
  for (const c of cases) {
    rows.push([
      c.direction,
      `${c.frameSize} B`,
      mppsCell(c.dpdk, c.failures?.dpdk?.length ?? 0),
      fmt(c.dpdk?.gbps, 2),
      mppsCell(c.ours, c.failures?.ours?.length ?? 0),
      fmt(c.ours?.gbps, 2),
      pct(c.ratio),
      ...(multi ? [pct(c.ratioBest)] : []),
    ]);
  }
  const lines = alignColumns(rows);
  lines.push(
    '',
    `Mpps: ${meta.repeat > 1 ? `median of ${meta.repeat} runs (min-max), dpdk and ours alternating; best/best: ratio of the fastest runs; ` : ''}` +
      `back-end counters over ${meta.durationMs} ms after ${meta.warmupMs} ms warm-up, a fresh back-end per run.`,
    `  tx: ${SOURCES.tx}`,
    `  rx: ${SOURCES.rx}`,
    `Gbit/s: ${GBPS_BASIS}.`,
    `Pollers: frontend on CPU ${meta.cores.frontend}, back-end forwarding lcore on CPU ${meta.cores.backend}; ` +
      `queue size ${meta.queueSize}, burst ${meta.burst}.`,
    meta.txMode === 'in-place'
      ? 'Our tx: sendInPlace, headers rewritten in the TX slots (zero copy), as DPDK txonly rewrites headers in its mbufs.'
      : 'Our tx: sendBurst, every frame byte copied into the TX slot (DPDK txonly writes only headers): see --tx-mode in-place.',
  );
  if (meta.offload) {
    lines.push(
      meta.offload === 'tso'
        ? 'Offload tso: every frame is one TCP GSO frame (NEEDS_CSUM, gso_type TCPV4, gso_size 1448) the back-end takes whole; DPDK\'s frontend replays it from a pcap vdev through the csum engine (a copy per frame, as our sendBurst).'
        : 'Offload csum: UDP frames with NEEDS_CSUM (the pseudo-header sum only); DPDK\'s frontend replays one from a pcap vdev through the csum engine (csum set udp hw).',
    );
  }
  const bottlenecks: string[][] = [];
  for (const c of cases) {
    const row = [`${c.direction}`, `${c.frameSize} B`];
    for (const kind of ['dpdk', 'ours'] as const) {
      const full = median((c[kind]?.senderRingFullPct ?? []).filter((x): x is number => x !== null));
      const who = limitedBy(c.direction, full);
      row.push(who === null ? `${kind}: -` : `${kind}: ${who} (${full!.toFixed(1)}%)`);
    }
    bottlenecks.push(row);
  }
  if (bottlenecks.some((r) => r.some((x) => /\(/.test(x)))) {
    lines.push(
      '',
      `Likely bottleneck, from the share of the frames the sender offered that found the ring full (in brackets; ` +
        `>${RECEIVER_LIMITED_PCT}%: the receiver, <${SENDER_LIMITED_PCT}%: the sender; a sender that retries cheaply scores higher):`,
      ...alignColumns(bottlenecks).map((l) => `  ${l}`),
    );
  }
  const notes: string[] = [];
  for (const c of cases) {
    for (const [kind, msg] of Object.entries(c.errors ?? {})) notes.push(`  ${c.direction} ${c.frameSize} B ${kind}: ${msg}`);
    for (const kind of ['dpdk', 'ours'] as const) {
      const bpp = c[kind]?.bytesPerPacket;
      if (bpp != null && Math.abs(bpp - c.frameSize) > 0.5) {
        notes.push(`  ${c.direction} ${c.frameSize} B ${kind}: the back-end counted ${bpp.toFixed(1)} bytes per frame`);
      }
      const limit = meta.maxForeignPct ?? DISTURBED_CPU_PCT;
      const busy = (c[kind]?.foreignCpuPct ?? []).filter((x): x is number => x !== null && x > limit);
      const shaky = (c[kind]?.intervalMpps ?? []).filter(unsteady);
      if (shaky.length) {
        const lo = Math.min(...shaky.flat());
        const hi = Math.max(...shaky.flat());
        notes.push(
          `  ${c.direction} ${c.frameSize} B ${kind}: ${shaky.length} run(s) unsteady, 1-s rates from ` +
            `${lo.toFixed(2)} to ${hi.toFixed(2)} Mpps`,
        );
      }
      if (busy.length) {
        notes.push(
          `  ${c.direction} ${c.frameSize} B ${kind}: ${busy.length} run(s) disturbed, other programs took up to ` +
            `${Math.max(...busy).toFixed(0)}% of a CPU from the pollers`,
        );
      }
    }
  }
  if (notes.length) lines.push('', 'Notes:', ...dedupeNotes(notes));
  const failed = failedRuns(cases);
  if (failed.length) {
    lines.push(
      '',
      `FAILED: ${failed.length} run(s) did not complete; the medians above leave them out, so the benchmark fails:`,
      ...failed.map((f) => `  ${f.direction} ${f.frameSize} B ${f.frontend} run ${f.run}/${meta.repeat}: ${f.error}`),
    );
  }
  return lines.join('\n') + '\n';
}

function dedupeNotes(notes: readonly string[]): string[] {
  return [...new Set(notes)];
}

/** One progress line for a finished run. */
export function describeRun(r: RunResult): string {
  const parts = [`${r.packets} frames in ${r.elapsedMs.toFixed(1)} ms`];
  if (r.bytesPerPacket !== null) parts.push(`${r.bytesPerPacket.toFixed(1)} B/frame`);
  if (r.senderRingFullPct !== null) parts.push(`sender found the ring full for ${r.senderRingFullPct.toFixed(1)}% of frames`);
  if (r.frontendMpps !== null) parts.push(`frontend counted ${r.frontendMpps.toFixed(3)} Mpps`);
  if (r.intervalMpps?.length) {
    parts.push(`1-s slices ${Math.min(...r.intervalMpps).toFixed(2)}..${Math.max(...r.intervalMpps).toFixed(2)} Mpps`);
  }
  if (r.foreignCpuPct !== null) {
    const top = r.foreignTop?.length ? ` (${r.foreignTop.join(', ')})` : '';
    parts.push(`other programs ${r.foreignCpuPct.toFixed(0)}% CPU${top}`);
  }
  if (r.stealPct) parts.push(`steal ${r.stealPct.toFixed(0)}%`);
  if (r.ringStats) parts.push(describeRingStats(r.ringStats));
  return `${r.mpps.toFixed(3)} Mpps [${parts.join(', ')}]`;
}
