/**
 * `npm run bench:migrate`: QEMU 7.2's live migration beside this library's
 * migrate(), on the same kind of back-ends: two dpdk-testpmd with io forwarding.
 * Per run, QEMU migrates an iPXE guest (net rings running) from a QEMU on testpmd A
 * to a QEMU on testpmd B, then migrate() moves a net device from a fresh testpmd
 * A' to a fresh B'; every conversation goes through a TraceProxy
 * (spec/parity/precopy.ts). Prints total time, downtime (each front-end's own
 * definition, and one measured the same way for both from the traces), rounds and
 * pages, the ratios library/QEMU, and with --sequences the migration's messages
 * side by side. A run where either side fails fails the benchmark.
 */
import os from 'node:os';
import { stopAll } from '../lib/launch/backend-process.js';
import { findExecutable, qemuAvailable } from '../lib/launch/index.js';
import { ALLOWED, explain } from '../spec/parity/allow-list.js';
import { PRECOPY_PHASES, QEMU_MEMORY_MIB, precopyDiff, recordLibraryMigration, recordQemuMigration, sideBySide, type Cleanup, type LibraryMigration, type QemuMigration } from '../spec/parity/precopy.js';

interface Options {
  runs: number;
  json: boolean;
  sequences: boolean;
  cold: boolean;
  guestMb: number;
}

const HELP = `Usage: npm run bench:migrate -- [--runs N] [--json] [--sequences] [--guest-mb N] [--cold]

QEMU 7.2 (TCG, iPXE guest, 256 MiB) migrated between two dpdk-testpmd (io forwarding),
beside this library's migrate() (net, split rings, 256 MiB guest memory) between two
fresh dpdk-testpmd; each front-end's conversation recorded through a TraceProxy.

  --runs N       runs (each: one QEMU migration, one library migration); default 1
  --json         one JSON object on stdout (runs, summary, sequences, differences)
  --sequences    print the migration's messages side by side (source from logging on;
                 destination init and start)
  --guest-mb N   the library's guest memory, MiB; default 256, QEMU's guest RAM
  --cold         do not connect to the library's destination testpmd once before
                 migrating: its first connection (0.4-0.9 s late in dpdk-testpmd) then
                 falls in the downtime; QEMU's destination connects at start-up, before
                 the migration, so the default warms the library's destination alike
  --help         this text

Downtime, as each front-end defines it:
  QEMU     query-migrate 'downtime': from the source stopping the VM (vhost stop
           included) until the source completed; the destination's vhost start is after it.
  library  migrate()'s downtimeMs: from the first GET_VRING_BASE to the destination
           running (handshake, memory table, rings, DRIVER_OK, SEND_RARP included).
  vhost-user gap (both, from the proxies' clocks): the source's first stopping request
           (SET_STATUS 0 or GET_VRING_BASE) to the destination's DRIVER_OK.
Progress goes to stderr. Exit status 1 when a run fails on either side.
`;

function progress(msg: string): void {
  process.stderr.write(`[bench:migrate] ${msg}\n`);
}

function parse(argv: readonly string[]): Options | null {
  const o: Options = { runs: 1, json: false, sequences: false, cold: false, guestMb: QEMU_MEMORY_MIB };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') return null;
    else if (a === '--json') o.json = true;
    else if (a === '--sequences') o.sequences = true;
    else if (a === '--cold') o.cold = true;
    else if (a === '--guest-mb') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 2 || n > 4096) throw new UsageError(`--guest-mb takes an integer 2..4096, got ${String(argv[i])}`);
      o.guestMb = n;
    }
    else if (a === '--runs') {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1 || n > 50) throw new UsageError(`--runs takes an integer 1..50, got ${String(argv[i])}`);
      o.runs = n;
    } else throw new UsageError(`unknown option ${a} (see --help)`);
  }
  return o;
}

class UsageError extends Error {}

interface Run {
  run: number;
  qemu?: QemuMigration;
  library?: LibraryMigration;
  error?: string;
}

function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const r1 = (x: number | null) => (x === null ? null : Math.round(x * 10) / 10);
const ratio = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : Math.round((a / b) * 100) / 100);

async function oneRun(n: number, opts: Options): Promise<Run> {
  const run: Run = { run: n };
  for (const side of ['qemu', 'library'] as const) {
    const cleanups: Cleanup[] = [];
    try {
      progress(`run ${n}: ${side === 'qemu' ? 'QEMU 7.2 migrates an iPXE guest' : 'migrate() moves a net device'} between two dpdk-testpmd`);
      if (side === 'qemu') run.qemu = await recordQemuMigration(cleanups, { log: (l) => progress(`  ${l}`) });
      else {
        run.library = await recordLibraryMigration(cleanups, { warmDestination: !opts.cold, library: { memorySize: opts.guestMb * 2 ** 20 }, log: (l) => progress(`  ${l}`) });
        if (!run.library.report.verified) throw new Error('migrate() did not verify (see its report in --json)');
      }
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      progress(`run ${n}: ${side} FAILED: ${msg}`);
      run.error = `${side}: ${msg.split('\n')[0]!}`;
    } finally {
      for (const c of cleanups.reverse()) {
        try {
          await c();
        } catch (e) {
          progress(`cleanup: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      await stopAll();
    }
    if (run.error) break;
  }
  return run;
}

function summary(runs: readonly Run[]) {
  const ok = runs.filter((r) => r.qemu && r.library && !r.error);
  const q = (f: (x: QemuMigration) => number | null) => r1(median(ok.map((r) => f(r.qemu!)).filter((x): x is number => x !== null)));
  const l = (f: (x: LibraryMigration) => number | null) => r1(median(ok.map((r) => f(r.library!)).filter((x): x is number => x !== null)));
  const s = {
    runs: ok.length,
    qemu: { totalMs: q((x) => x.result.totalTimeMs), downtimeMs: q((x) => x.result.downtimeMs), vhostGapMs: q((x) => x.vhostDowntimeMs), rounds: q((x) => x.ram.dirtySyncCount) },
    library: { totalMs: l((x) => x.report.totalMs), downtimeMs: l((x) => x.report.downtimeMs), vhostGapMs: l((x) => x.vhostDowntimeMs), rounds: l((x) => x.report.rounds.length) },
    ratio: { totalMs: 0 as number | null, downtimeMs: 0 as number | null, vhostGapMs: 0 as number | null },
  };
  s.ratio = { totalMs: ratio(s.library.totalMs, s.qemu.totalMs), downtimeMs: ratio(s.library.downtimeMs, s.qemu.downtimeMs), vhostGapMs: ratio(s.library.vhostGapMs, s.qemu.vhostGapMs) };
  return s;
}

function differences(run: Run) {
  if (!run.qemu || !run.library) return [];
  return precopyDiff(run.qemu, run.library).map((d) => ({ ...d, allowed: explain(d, 'dpdk-testpmd')?.id ?? null }));
}

function table(runs: readonly Run[], opts: Options): string {
  const out: string[] = [];
  const rows: string[][] = [['run', 'front-end', 'total ms', 'downtime ms', 'vhost-user gap ms', 'rounds', 'pages copied', 'memory']];
  for (const r of runs) {
    if (r.qemu) {
      const q = r.qemu;
      rows.push([String(r.run), 'QEMU 7.2', String(q.result.totalTimeMs), String(q.result.downtimeMs), String(q.vhostDowntimeMs ?? '-'), String(q.ram.dirtySyncCount), `${q.ram.normalPages} (+${q.ram.duplicatePages} zero)`, `${q.memoryMiB} MiB`]);
    }
    if (r.library) {
      const l = r.library.report;
      const pages = l.rounds.reduce((n, x) => n + x.copiedPages, 0);
      rows.push([String(r.run), 'library', String(l.totalMs), String(l.downtimeMs), String(r.library.vhostDowntimeMs ?? '-'), String(l.rounds.length), String(pages), `${(l.memoryBytes / 2 ** 20).toFixed(1)} MiB`]);
    }
    if (r.error) rows.push([String(r.run), 'FAILED', r.error]);
  }
  const s = summary(runs);
  rows.push(['median', 'QEMU 7.2', String(s.qemu.totalMs), String(s.qemu.downtimeMs), String(s.qemu.vhostGapMs), String(s.qemu.rounds), '', '']);
  rows.push(['median', 'library', String(s.library.totalMs), String(s.library.downtimeMs), String(s.library.vhostGapMs), String(s.library.rounds), '', '']);
  rows.push(['ratio', 'library/QEMU', String(s.ratio.totalMs), String(s.ratio.downtimeMs), String(s.ratio.vhostGapMs), '', '', '']);
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r.length > 2 || c < 2 ? (r[c] ?? '').length : 0))));
  for (const r of rows) out.push(r.length <= 3 && r[1] === 'FAILED' ? r.join('  ') : r.map((x, c) => x.padEnd(w[c]!)).join('  ').trimEnd());
  out.push('', 'rounds: QEMU dirty-sync-count; library precopy rounds incl. the full copy and the switchover round.');
  out.push('downtime: each side\'s own definition (see --help); vhost-user gap: the same measure for both, from the trace.');
  const last = [...runs].reverse().find((r) => r.qemu && r.library);
  if (last) {
    const d = differences(last);
    out.push('', `differences in the migration's messages (run ${last.run}): ${d.length}, unexplained ${d.filter((x) => !x.allowed).length}`);
    for (const x of d) out.push(`  ${x.phase}: ${x.kind} ${x.side} ${x.key}${x.allowed ? `  [${x.allowed}]` : '  UNEXPLAINED'}`);
    if (opts.sequences) for (const p of PRECOPY_PHASES) out.push('', sideBySide(p, last.qemu!, last.library!));
  }
  return `${out.join('\n')}\n`;
}

function json(runs: readonly Run[]) {
  return {
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? null, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100), node: process.version },
    summary: summary(runs),
    runs: runs.map((r) => ({
      run: r.run,
      error: r.error ?? null,
      qemu: r.qemu ? { result: r.qemu.result, ram: r.qemu.ram, memoryMiB: r.qemu.memoryMiB, vhostGapMs: r.qemu.vhostDowntimeMs, sourceBases: r.qemu.sourceBases, destinationBases: r.qemu.destinationBases } : null,
      library: r.library
        ? { verified: r.library.report.verified, totalMs: r.library.report.totalMs, downtimeMs: r.library.report.downtimeMs, downtimeParts: r.library.report.downtimeParts, rounds: r.library.report.rounds.map((x) => ({ round: x.round, dirtyPages: x.dirtyPages, copiedPages: x.copiedPages, switchover: x.switchover })), memoryBytes: r.library.report.memoryBytes, vhostGapMs: r.library.vhostDowntimeMs, sourceBases: r.library.sourceBases, destinationBases: r.library.destinationBases }
        : null,
      sequences: r.qemu && r.library ? Object.fromEntries(PRECOPY_PHASES.map((p) => [p, { qemu: r.qemu!.phases[p] ?? [], library: r.library!.phases[p] ?? [] }])) : null,
      differences: differences(r),
    })),
    allowList: ALLOWED.filter((a) => a.phases?.some((p) => p.startsWith('precopy')) ?? false).map((a) => ({ id: a.id, what: a.what })),
  };
}

async function main(): Promise<number> {
  let opts: Options | null;
  try {
    opts = parse(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (!opts) {
    process.stdout.write(HELP);
    return 0;
  }
  if (!qemuAvailable()) {
    progress('qemu-system-x86_64 not found (apt-get install qemu-system-x86)');
    return 1;
  }
  if (!findExecutable('dpdk-testpmd')) {
    progress('dpdk-testpmd not found (apt-get install dpdk-dev)');
    return 1;
  }
  progress(`load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  const runs: Run[] = [];
  for (let n = 1; n <= opts.runs; n++) runs.push(await oneRun(n, opts));
  process.stdout.write(opts.json ? `${JSON.stringify(json(runs), null, 2)}\n` : table(runs, opts));
  const failed = runs.filter((r) => r.error || !r.qemu || !r.library).length;
  if (failed) progress(`FAILED: ${failed} of ${runs.length} runs`);
  return failed ? 1 : 0;
}

let interrupted = false;
const onSignal = (sig: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  progress(`${sig}: stopping every process this bench started`);
  void stopAll(1000).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (e: unknown) => {
    progress(e instanceof Error ? (e.stack ?? e.message) : String(e));
    await stopAll();
    process.exitCode = 1;
  },
);
