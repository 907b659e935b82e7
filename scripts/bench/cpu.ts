/**
 * How much CPU other programs took while a cell was measured. On a 2-core machine
 * with one poller per core, anything else that runs (a compiler, someone else's
 * tests) steals time from a poller; this puts a number on it for each run.
 * Linux /proc only; parsing is pure and exported for the spec.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Aggregate `cpu` line of /proc/stat, in clock ticks. */
export interface SystemTicks {
  /** Everything but idle and iowait; includes steal. */
  busy: number;
  total: number;
  /** Time the hypervisor ran something else while a vCPU wanted to run (0 where not reported). */
  steal: number;
}

/** Parses the first (`cpu `) line of /proc/stat. Busy = total - idle - iowait (steal included). */
export function parseProcStat(text: string): SystemTicks {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('no aggregate cpu line in /proc/stat');
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
  const total = f.slice(0, 8).reduce((s, x) => s + (x || 0), 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total, steal: f[7] ?? 0 };
}

/** utime + stime (all threads) from /proc/PID/stat; the comm field may contain spaces and parentheses. */
export function parsePidStat(text: string): number {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return Number(rest[11]) + Number(rest[12]);
}

/** The comm field of /proc/PID/stat (the program name, at most 15 bytes). */
export function parsePidComm(text: string): string {
  return text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
}

export interface CpuSnapshot {
  system: SystemTicks;
  /** Ticks of each of our processes, by pid (missing if it had already exited). */
  ours: Map<number, number>;
  /** Ticks and name of every other process, by pid (to name what disturbed a run). */
  others?: Map<number, { comm: string; ticks: number }>;
}

export function snapshot(pids: readonly number[]): CpuSnapshot {
  const ours = new Map<number, number>();
  const others = new Map<number, { comm: string; ticks: number }>();
  const mine = new Set(pids);
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    // no /proc listing: totals only
  }
  for (const pid of new Set([...pids, ...entries.map(Number)])) {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ticks = parsePidStat(text);
      if (mine.has(pid)) ours.set(pid, ticks);
      else others.set(pid, { comm: parsePidComm(text), ticks });
    } catch {
      // gone
    }
  }
  return { system: parseProcStat(readFileSync('/proc/stat', 'utf8')), ours, others };
}

/**
 * The other processes that used the most CPU between two snapshots, as
 * `comm[pid] NN%` (percent of one CPU), at most `n`, only those above `minPct`.
 */
export function topForeign(a: CpuSnapshot, b: CpuSnapshot, cpus: number, n = 3, minPct = 5): string[] {
  const total = b.system.total - a.system.total;
  if (total <= 0 || !a.others || !b.others) return [];
  const rows: [string, number][] = [];
  for (const [pid, now] of b.others) {
    const then = a.others.get(pid);
    // A process started inside the window counts from zero.
    const pct = ((now.ticks - (then?.ticks ?? 0)) / total) * cpus * 100;
    if (pct >= minPct) rows.push([`${now.comm}[${pid}]`, pct]);
  }
  return rows
    .sort((x, y) => y[1] - x[1])
    .slice(0, n)
    .map(([name, pct]) => `${name} ${pct.toFixed(0)}%`);
}

/**
 * CPU used by everything except `ours` between two snapshots, as a percentage of
 * one CPU (100 = one whole core's worth). Null if the counters cannot be compared.
 */
export function foreignCpuPercent(a: CpuSnapshot, b: CpuSnapshot, cpus: number): number | null {
  const total = b.system.total - a.system.total;
  if (total <= 0 || cpus <= 0) return null;
  let oursTicks = 0;
  for (const [pid, t1] of b.ours) {
    const t0 = a.ours.get(pid);
    if (t0 !== undefined) oursTicks += t1 - t0;
  }
  const steal = b.system.steal - a.system.steal;
  const foreign = Math.max(0, b.system.busy - a.system.busy - steal - oursTicks);
  // `total` counts ticks of all CPUs together.
  return (foreign / total) * cpus * 100;
}

/** Steal time between two snapshots in % of one CPU: the hypervisor took the vCPUs away. */
export function stealPercent(a: CpuSnapshot, b: CpuSnapshot, cpus: number): number | null {
  const total = b.system.total - a.system.total;
  if (total <= 0 || cpus <= 0) return null;
  return ((b.system.steal - a.system.steal) / total) * cpus * 100;
}

/**
 * Waits until other programs use at most `maxPct`% of a CPU (measured over
 * `sampleMs`), or `timeoutMs` passes. Resolves with the last measurement.
 */
export async function waitForQuiet(
  maxPct: number,
  opts: { timeoutMs?: number; sampleMs?: number; onBusy?: (pct: number, top: string[]) => void; signal?: AbortSignal } = {},
): Promise<number | null> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  const cpus = Math.max(1, (await import('node:os')).cpus().length);
  let said = false;
  for (;;) {
    const a = snapshot([process.pid]);
    await new Promise((r) => setTimeout(r, opts.sampleMs ?? 500));
    const b = snapshot([process.pid]);
    const pct = foreignCpuPercent(a, b, cpus);
    if (pct === null || pct <= maxPct || Date.now() >= deadline || opts.signal?.aborted) return pct;
    if (!said) opts.onBusy?.(pct, topForeign(a, b, cpus));
    said = true;
  }
}
