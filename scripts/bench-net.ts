/**
 * `npm run bench:net`: network throughput of this library's virtio-net driver
 * against DPDK's own virtio-user frontend, both driving the same dpdk-testpmd
 * vhost-user back-end. See scripts/bench/options.ts for the options, and
 * scripts/bench/cell.ts for how one cell is measured.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { isUsageError } from '../lib/cli/args.js';
import { findExecutable, stopAll } from '../lib/launch/backend-process.js';
import { runCell, type CellRun, type CellSpec } from './bench/cell.js';
import { waitForQuiet } from './bench/cpu.js';
import { benchHelp, parseBenchArgs, type BenchOptions } from './bench/options.js';
import { killAllWorkers, OursWorker } from './bench/ours.js';
import { describeRun, exitCodeOf, formatTable, GBPS_BASIS, SOURCES, summarize, toJson, type BenchMeta, type CellOutcome } from './bench/report.js';

/** How long to wait for other programs to calm down before a run starts anyway. */
const QUIET_WAIT_MS = 60_000;

function progress(msg: string): void {
  process.stderr.write(`[bench:net] ${msg}\n`);
}

function dpdkVersion(): string | null {
  try {
    return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'dpdk-dev'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }) || null;
  } catch {
    return null;
  }
}

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? null,
    cpus: cpus.length,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    dpdk: dpdkVersion(),
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * One run of a cell, on a machine that other people share: waits until other programs
 * are quiet, and re-runs a disturbed measurement up to `opts.retries` times, keeping
 * the least disturbed attempt.
 */
async function measureRun(spec: CellSpec, label: string, opts: BenchOptions, signal: AbortSignal): Promise<CellRun> {
  let kept: CellRun | undefined;
  for (let attempt = 1; attempt <= opts.retries + 1; attempt++) {
    await waitForQuiet(opts.maxForeignPct, {
      timeoutMs: QUIET_WAIT_MS,
      signal,
      onBusy: (pct, top) =>
        progress(`${label}: other programs use ${pct.toFixed(0)}% CPU${top.length ? ` (${top.join(', ')})` : ''}; waiting up to ${QUIET_WAIT_MS / 1000} s`),
    });
    progress(`${label}: starting${attempt > 1 ? ` (attempt ${attempt})` : ''}`);
    const measured = await runCell(spec, { signal, log: (m) => progress(`  ${m}`) });
    measured.result.attempts = attempt;
    progress(`${label}: ${describeRun(measured.result)}`);
    const foreign = measured.result.foreignCpuPct;
    if (!kept || (foreign ?? 0) < (kept.result.foreignCpuPct ?? 0)) kept = measured;
    if (foreign === null || foreign <= opts.maxForeignPct) return measured;
    progress(
      `${label}: disturbed (other programs ${foreign.toFixed(0)}% > ${opts.maxForeignPct}% of a CPU); ` +
        (attempt <= opts.retries ? 'measuring again' : 'keeping the least disturbed attempt'),
    );
  }
  kept!.result.attempts = opts.retries + 1;
  return kept!;
}

async function run(opts: BenchOptions, signal: AbortSignal): Promise<number> {
  for (const [exe, pkg] of [['dpdk-testpmd', 'dpdk-dev'], ['taskset', 'util-linux'], ['stdbuf', 'coreutils']] as const) {
    if (!findExecutable(exe)) {
      progress(`${exe} not found (apt-get install ${pkg})`);
      return 1;
    }
  }
  const cpus = os.cpus().length;
  if (Math.max(opts.frontendCore, opts.backendCore) >= cpus) {
    progress(`--cores ${opts.frontendCore},${opts.backendCore}: this machine has CPUs 0..${cpus - 1}`);
    return 2;
  }
  const startedAt = new Date().toISOString();
  const loadBefore = os.loadavg()[0];

  let oursUnavailable: string | null = null;
  if (opts.frontends.includes('ours')) {
    oursUnavailable = await OursWorker.probe();
    if (oursUnavailable) progress(`ours: ${oursUnavailable}; reporting null for ours`);
  }

  const outcomes: CellOutcome[] = [];
  const commands: Record<string, string> = {};
  // Runs alternate between the frontends (dpdk, ours, dpdk, ours, ...) so that a slow
  // phase of the machine (other tenants, the hypervisor) hits both sides alike.
  for (const direction of opts.directions) {
    for (const frameSize of opts.sizes) {
      const cell = opts.frontends.map((frontend): CellOutcome => ({ direction, frameSize, frontend, runs: [], failures: [] }));
      outcomes.push(...cell);
      for (const outcome of cell) {
        if (outcome.frontend === 'ours' && oursUnavailable) outcome.error = oursUnavailable;
      }
      for (let r = 1; r <= opts.repeat; r++) {
        for (const outcome of cell) {
          const { frontend } = outcome;
          // A driver that cannot run at all will not run on the next attempt either; each run it misses is a failed run.
          if (outcome.error && /driver not available/.test(outcome.error)) {
            outcome.failures!.push({ run: r, error: outcome.error });
            continue;
          }
          if (signal.aborted) throw new Error('aborted');
          const spec: CellSpec = {
            direction, frameSize, frontend,
            durationMs: opts.durationMs, warmupMs: opts.warmupMs,
            queueSize: opts.queueSize, burst: opts.burst, txMode: opts.txMode, ringStats: opts.ringStats,
            frontendCore: opts.frontendCore, backendCore: opts.backendCore,
            offload: opts.offload,
          };
          const label = `${direction} ${frameSize} B ${frontend}${opts.repeat > 1 ? ` run ${r}/${opts.repeat}` : ''}`;
          try {
            const { result, commands: cmds } = await measureRun(spec, label, opts, signal);
            commands[`${direction}-${frameSize}-${frontend}-backend`] ??= cmds.backend;
            commands[`${direction}-${frameSize}-${frontend}-frontend`] ??= cmds.frontend;
            outcome.runs.push(result);
          } catch (e) {
            if (signal.aborted) throw e;
            const msg = e instanceof Error ? e.message : String(e);
            progress(`${label}: FAILED: ${msg}`);
            // Either side: a failed run is listed in the report and fails the benchmark.
            outcome.failures!.push({ run: r, error: msg.split('\n')[0]! });
            outcome.error ??= msg.split('\n')[0]!;
          }
        }
      }
    }
  }

  const meta: BenchMeta = {
    durationMs: opts.durationMs,
    warmupMs: opts.warmupMs,
    repeat: opts.repeat,
    queueSize: opts.queueSize,
    burst: opts.burst,
    txMode: opts.txMode,
    offload: opts.offload,
    cores: { frontend: opts.frontendCore, backend: opts.backendCore },
    maxForeignPct: opts.maxForeignPct,
    retries: opts.retries,
    gbpsBasis: GBPS_BASIS,
    source: SOURCES,
    commands,
    machine: { ...machine(), startedAt, loadavgBefore: loadBefore },
  };
  const cases = summarize(outcomes, opts);
  process.stdout.write(opts.json ? `${JSON.stringify(toJson(cases, meta), null, 2)}\n` : formatTable(cases, meta));
  const code = exitCodeOf(cases);
  if (code) progress('FAILED: some runs did not complete (listed in the report)');
  return code;
}

const abort = new AbortController();

async function main(): Promise<number> {
  let opts: BenchOptions | undefined;
  try {
    opts = parseBenchArgs(process.argv.slice(2));
  } catch (e) {
    if (isUsageError(e)) {
      process.stderr.write(`${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
  if (!opts) {
    process.stdout.write(benchHelp());
    return 0;
  }

  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    progress(`${sig}: stopping every process this bench started`);
    abort.abort();
    killAllWorkers();
    void stopAll(1000).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await run(opts, abort.signal);
  } finally {
    killAllWorkers();
    await stopAll();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // Interrupted: the signal handler reports, cleans up and exits.
    if (abort.signal.aborted) return;
    progress(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exitCode = 1;
  },
);
