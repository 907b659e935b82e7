/**
 * Runs checks against one back-end: each check on fresh connections, under a
 * deadline, its resources released whatever the outcome. With `spawn` the runner
 * owns the back-end process: it starts it, notices when a check made it exit or
 * crash (a finding of that check), and starts it again for the next check.
 */
import { VhostUserError } from '../errors.js';
import { makeTempDir, spawnBackend, type ExitStatus } from '../launch/backend-process.js';
import { appliesTo, Finding, matchesOnly, Skip, type Check, type CheckResult, type CheckStatus, type ConformanceDevice } from './check.js';
import { allChecks } from './checks/index.js';
import { CheckRun } from './context.js';

/** What the runner needs of a back-end it started (BackendProcess and the typed handles of lib/launch fit). */
export interface SpawnedBackend {
  readonly pid: number;
  readonly socketPath: string;
  readonly running: boolean;
  readonly exited: Promise<ExitStatus>;
  output(): string;
  stop(graceMs?: number): Promise<void>;
}

export interface ConformanceOptions {
  /** The back-end socket; with a spawn command, where the command makes the back-end listen. */
  socket?: string;
  /** Default 'generic': device-independent checks only. */
  device?: ConformanceDevice;
  /**
   * Start the back-end for the suite: a shell command (run as `sh -c 'exec CMD'`,
   * ready once `socket` exists) or a function (e.g. `() => startTestpmd({...})`).
   * A command runs in a process group of its own, stopped as a whole, so what a
   * wrapper in it (npx, sh -c, stdbuf, env) started is stopped too.
   */
  spawn?: string | (() => Promise<SpawnedBackend>);
  /**
   * With `spawn`: start a fresh back-end after every failed check (default true), so a back-end
   * left in a bad state by one finding (memory corrupted by a malformed message it accepted)
   * does not produce findings in the checks after it.
   */
  restartAfterFail?: boolean;
  /** Wait this long after a spawned back-end's socket appears (default 300 ms for a command, 0 for a function). */
  spawnSettleMs?: number;
  /** Comma-separated id patterns (see matchesOnly). */
  only?: string;
  /** Deadline per reply, and how long a back-end gets to refuse a malformed message (default 2000 ms). */
  timeoutMs?: number;
  /** Deadline per check unless the check sets its own (default 10 000 ms). */
  checkTimeoutMs?: number;
  /** The back-end's pid when not spawned (enables the leak checks). */
  backendPid?: number;
  /** Name in the report (default: the spawn command, or the socket). */
  backendName?: string;
  /** Default: every check. */
  checks?: readonly Check[];
  /** Called before each check. */
  onStart?: (check: Check, index: number, total: number) => void;
  /** Called with each result as it is known. */
  onResult?: (result: CheckResult, index: number, total: number) => void;
}

export interface ConformanceReport {
  /** `crashes`: checks during which a spawned back-end was killed by a signal or exited non-zero; `restarts`: fresh back-ends started after the first. */
  backend: { name: string; socket: string; device: ConformanceDevice; spawned: boolean; crashes: number; restarts: number };
  checks: CheckResult[];
  summary: Record<CheckStatus, number>;
  ms: number;
}

function describeExit(s: ExitStatus | undefined): string {
  if (!s) return 'exited';
  return s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`;
}

function tail(text: string, lines = 5): string {
  return text.split('\n').filter((l) => l.trim() !== '').slice(-lines).join(' | ');
}

/** Lines of `now` not already in `before` (the capture keeps the last 200 lines, so this is best effort). */
function outputSince(before: string, now: string): string[] {
  const fresh = now.startsWith(before) ? now.slice(before.length) : now.split('\n').slice(-5).join('\n');
  return fresh.split('\n').filter((l) => l.trim() !== '').slice(-20);
}

async function spawnCommand(command: string, socket: string): Promise<SpawnedBackend> {
  const tempDir = await makeTempDir('vhost-conformance-');
  // stdin stays an open pipe: dpdk-testpmd exits on EOF on stdin.
  return spawnBackend({ command: '/bin/sh', args: ['-c', `exec ${command}`], socketPath: socket, tempDir, stdin: 'pipe', mergeStderr: true });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `p`'s value, or undefined after `ms`; the timer does not outlive the wait. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `check`; never throws. */
async function runOne(check: Check, run: CheckRun, deadlineMs: number): Promise<{ status: CheckStatus; detail: string }> {
  let timer: NodeJS.Timeout | undefined;
  const work = check.run(run);
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Finding(`no outcome within ${deadlineMs} ms: the back-end stopped answering or doing the work`)), deadlineMs);
  });
  try {
    const detail = await Promise.race([work, timeout]);
    return { status: 'pass', detail: detail ?? '' };
  } catch (e) {
    if (e instanceof Skip) return { status: 'skip', detail: e.message };
    if (e instanceof Finding) return { status: 'fail', detail: e.message };
    if (e instanceof VhostUserError) return { status: 'fail', detail: e.toLine() };
    return { status: 'fail', detail: `internal error in the check: ${e instanceof Error ? e.message : String(e)}` };
  } finally {
    clearTimeout(timer);
    run.close();
    // Closing the connections makes a check that overran unwind; wait briefly for it.
    await within(work.catch(() => undefined), 1000);
  }
}

export async function runConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  const device = options.device ?? 'generic';
  const timeoutMs = options.timeoutMs ?? 2000;
  const checkTimeoutMs = options.checkTimeoutMs ?? 10_000;
  const spawn = options.spawn;
  if (typeof spawn === 'string' && !options.socket) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'a spawn command needs the socket path it makes the back-end listen on');
  }
  if (!spawn && !options.socket) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'give a socket path or a back-end to spawn');
  const settleMs = options.spawnSettleMs ?? (typeof spawn === 'string' ? 300 : 0);
  const start = async (): Promise<SpawnedBackend> => {
    const b = typeof spawn === 'string' ? await spawnCommand(spawn, options.socket!) : await spawn!();
    if (settleMs) await sleep(settleMs);
    return b;
  };

  const selected = (options.checks ?? allChecks).filter((c) => appliesTo(c, device) && matchesOnly(c.id, options.only));
  const results: CheckResult[] = [];
  const t0 = Date.now();
  let backend: SpawnedBackend | null = spawn ? await start() : null;
  let restarts = 0;
  let crashes = 0;
  let restartError: string | null = null;
  const restart = async (): Promise<void> => {
    await backend!.stop(0);
    restarts++;
    try {
      backend = await start();
    } catch (e) {
      restartError = e instanceof VhostUserError ? e.toLine() : String(e);
    }
  };
  const name = options.backendName ?? (typeof spawn === 'string' ? spawn : (options.socket ?? backend?.socketPath ?? ''));
  try {
    for (const [i, check] of selected.entries()) {
      options.onStart?.(check, i, selected.length);
      const began = Date.now();
      let outcome: { status: CheckStatus; detail: string };
      let evidence: string[] = [];
      let ms = 0;
      if (restartError) {
        outcome = { status: 'fail', detail: `not run: the back-end could not be restarted (${restartError})` };
      } else {
        const socket = backend?.socketPath ?? options.socket!;
        const run = new CheckRun(socket, device, timeoutMs, backend?.pid ?? options.backendPid ?? null);
        const outputBefore = backend?.output() ?? '';
        outcome = await runOne(check, run, check.timeoutMs ?? checkTimeoutMs);
        ms = Date.now() - began; // the check's own time, not a restart after it
        evidence = run.evidence.list();
        if (backend) {
          // What the back-end printed meanwhile (its complaints, a crash message) belongs to the evidence.
          for (const line of outputSince(outputBefore, backend.output())) evidence.push(`back-end output: ${line}`);
          if (backend.running) await within(backend.exited, 20);
          if (!backend.running) {
            const status = await within(backend.exited, 1500);
            const said = tail(outputSince(outputBefore, backend.output()).join('\n'));
            if (status?.code === 0) {
              // A back-end that serves one front-end and then exits cleanly (virtiofsd) has not
              // crashed: the check's own outcome stands (a fresh connection it failed to serve is
              // that check's finding); note the exit and start it again.
              outcome = { ...outcome, detail: `${outcome.detail ? `${outcome.detail}; ` : ''}the back-end exited with code 0` };
            } else {
              const before = outcome.status === 'fail' ? ` (${outcome.detail})` : '';
              outcome = { status: 'fail', detail: `the back-end (pid ${backend.pid}) ${describeExit(status)} during the check${before}; its output meanwhile: ${said || '(none)'}` };
              crashes++;
            }
            await restart();
          } else if (outcome.status === 'fail' && (options.restartAfterFail ?? true)) {
            await restart();
          }
        }
      }
      const result: CheckResult = {
        id: check.id,
        rule: check.rule,
        title: check.title,
        status: outcome.status,
        detail: outcome.detail,
        evidence: outcome.status === 'fail' ? evidence : [],
        ms,
      };
      results.push(result);
      options.onResult?.(result, i, selected.length);
    }
  } finally {
    await backend?.stop();
  }
  const summary: Record<CheckStatus, number> = { pass: 0, fail: 0, skip: 0 };
  for (const r of results) summary[r.status]++;
  return {
    backend: { name, socket: options.socket ?? backend?.socketPath ?? '', device, spawned: spawn !== undefined, crashes, restarts },
    checks: results,
    summary,
    ms: Date.now() - t0,
  };
}
