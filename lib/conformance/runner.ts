/**
 * Runs checks against one back-end: each check on fresh connections, under a
 * deadline, its resources released whatever the outcome. With `spawn` the runner
 * owns the back-end process: it starts it, notices when a check made it crash (a
 * finding of that check), and starts it again for the next check.
 *
 * Some back-ends serve one front-end and exit with code 0 when it leaves (virtiofsd,
 * rust-vmm's vhost-device-* daemons): a *one-shot* back-end. That is their design, not
 * a finding: the runner detects it (a connection that reads GET_FEATURES and closes
 * is followed by an exit with code 0), starts it again for every check that connected
 * and, within a check, wherever the check needs a new front-end to be served
 * (CheckContext.nextFrontEnd). An exit with a non-zero code or by a signal stays a crash.
 */
import { VhostUserError } from '../errors.js';
import { FrontendRequest as R } from '../protocol/constants.js';
import { makeTempDir, spawnBackend, type ExitStatus } from '../launch/backend-process.js';
import { appliesTo, fail, Finding, matchesOnly, Skip, type Check, type CheckResult, type CheckStatus, type ConformanceDevice } from './check.js';
import { allChecks } from './checks/index.js';
import { CheckRun, type BackendTarget } from './context.js';
import { Evidence } from './evidence.js';
import { RawSession } from './raw-session.js';
import { UnixListener } from '../transport/unix-listener.js';

/** What the runner needs of a back-end it started (BackendProcess and the typed handles of lib/launch fit). */
export interface SpawnedBackend {
  /** pid of the process started (the group leader); lets the leak checks read /proc/PID/fd. */
  readonly pid: number;
  /** Where the back-end listens; the runner connects there once it exists. */
  readonly socketPath: string;
  /** False once the process has exited. */
  readonly running: boolean;
  /** Resolves with how the process ended; never rejects. */
  readonly exited: Promise<ExitStatus>;
  /** The process's recent output (stdout and stderr), quoted in findings when it crashes. */
  output(): string;
  /** Stops the process (SIGTERM, then SIGKILL after `graceMs`) and resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** What {@link runConformance} checks, against which back-end, and how. */
export interface ConformanceOptions {
  /** The back-end socket; with a spawn command, where the command makes the back-end listen. */
  socket?: string;
  /**
   * Server mode instead of `socket`: listen here, and take every connection a check needs from
   * the back-end connecting to it (OVS `dpdkvhostuserclient`, DPDK `client=1`; both reconnect
   * by themselves, about once a second, after a check closed the previous connection). Checks
   * that need two connections at once wait for a second one such back-ends never open.
   */
  listen?: string;
  /** Server mode: how long a check waits for the back-end to connect (default 5000 ms). */
  acceptTimeoutMs?: number;
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
  /**
   * With `spawn`: whether the back-end serves one front-end and exits with code 0 when it
   * leaves. Default: detected once it is started (see the module comment), and learnt
   * whenever it exits with code 0 after a check.
   */
  oneShot?: boolean;
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

/** What {@link runConformance} found; the formatters (text, JSON, JUnit) print it. */
export interface ConformanceReport {
  /** The back-end the suite ran against. */
  backend: {
    /** {@link ConformanceOptions.backendName}, or the spawn command, or the socket. */
    name: string;
    /** The socket path the first back-end listened on. */
    socket: string;
    /** The device the checks were selected for. */
    device: ConformanceDevice;
    /** The suite started (and stopped) the back-end itself. */
    spawned: boolean;
    /** The spawned back-end serves one front-end and exits with code 0 when it leaves. */
    oneShot: boolean;
    /** Checks during which a spawned back-end was killed by a signal or exited non-zero. */
    crashes: number;
    /** Fresh back-ends started after the first (after a crash, a failed check, or a one-shot exit). */
    restarts: number;
  };
  /** One result per selected check, in the order they ran. */
  checks: CheckResult[];
  /** How many checks ended in each status. */
  summary: Record<CheckStatus, number>;
  /** Wall-clock milliseconds for the whole run, back-end starts included. */
  ms: number;
}

function describeExit(s: ExitStatus | undefined): string {
  if (!s) return 'exited';
  return s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`;
}

/** `SIGSEGV` or `exit 1`: how a crash is recorded in CheckResult.crash. */
function crashName(s: ExitStatus | undefined): string {
  if (!s) return 'exit';
  return s.signal ?? `exit ${s.code}`;
}

function exitedCleanly(s: ExitStatus | undefined): boolean {
  return s !== undefined && s.code === 0 && s.signal === null;
}

/**
 * How long a one-shot back-end gets to exit once its front-end has left. virtiofsd takes
 * about 3 ms here; the bound allows for a loaded 2-core machine and is only waited out by a
 * back-end that does not exit, which is then stopped.
 */
const ONE_SHOT_EXIT_MS = 3000;
/** How long detection waits for that exit: a back-end that keeps serving costs this once per run. */
const ONE_SHOT_PROBE_MS = 500;

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

/**
 * Whether `backend` exits with code 0 once a front-end that read GET_FEATURES has left.
 * The probe is a complete, well-formed (if short) front-end session, which any back-end
 * must survive; a back-end that does not answer it is left for the checks to judge.
 */
async function probeOneShot(backend: SpawnedBackend, timeoutMs: number): Promise<boolean> {
  let session: RawSession | undefined;
  try {
    session = await RawSession.open(backend.socketPath, new Evidence(), timeoutMs);
    await session.u64(R.GET_FEATURES);
  } catch {
    return false;
  } finally {
    session?.close();
  }
  return exitedCleanly(await within(backend.exited, ONE_SHOT_PROBE_MS));
}

/**
 * Runs the selected checks, one after another, against the back-end `options` name or
 * start. Check outcomes, crashes included, go into the report; it rejects only when the
 * options are invalid or the back-end cannot be started the first time. A spawned
 * back-end is stopped before it settles.
 */
export async function runConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  const device = options.device ?? 'generic';
  const timeoutMs = options.timeoutMs ?? 2000;
  const checkTimeoutMs = options.checkTimeoutMs ?? 10_000;
  const spawn = options.spawn;
  if (typeof spawn === 'string' && !options.socket) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'a spawn command needs the socket path it makes the back-end listen on');
  }
  if (options.listen !== undefined && (spawn || options.socket)) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'listen is instead of a socket path or a back-end to spawn');
  if (!spawn && !options.socket && options.listen === undefined) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'give a socket path, a path to listen on, or a back-end to spawn');
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
  let oneShot = options.oneShot ?? false;
  const restart = async (): Promise<void> => {
    await backend!.stop(0);
    restarts++;
    try {
      backend = await start();
    } catch (e) {
      restartError = e instanceof VhostUserError ? e.toLine() : String(e);
    }
  };
  try {
    if (backend && options.oneShot === undefined) {
      oneShot = await probeOneShot(backend, timeoutMs);
      if (!backend.running) await restart();
    }
  } catch (e) {
    await backend?.stop();
    throw e;
  }
  const name = options.backendName ?? (typeof spawn === 'string' ? spawn : (options.socket ?? (options.listen !== undefined ? `listen:${options.listen}` : undefined) ?? backend?.socketPath ?? ''));
  const listener = options.listen !== undefined ? UnixListener.listen(options.listen) : null;

  /** The back-end for a check's next front-end (CheckContext.nextFrontEnd). */
  const target: BackendTarget = {
    listener,
    acceptTimeoutMs: options.acceptTimeoutMs ?? 5000,
    get socketPath() {
      return backend?.socketPath ?? options.socket ?? options.listen!;
    },
    get pid() {
      return backend?.pid ?? options.backendPid ?? null;
    },
    async nextFrontEnd(run: CheckRun) {
      if (!backend || run.connections === 0) return;
      const status = backend.running ? (oneShot ? await within(backend.exited, ONE_SHOT_EXIT_MS) : undefined) : await within(backend.exited, 1500);
      if (status === undefined) {
        if (oneShot) run.note(`the one-shot back-end (pid ${backend.pid}) was still running ${ONE_SHOT_EXIT_MS} ms after its front-end left`);
        return;
      }
      // Not clean: left as it is for the runner, which reports the crash once the check ends.
      if (!exitedCleanly(status)) fail(`it ${describeExit(status)} once its front-end had left`);
      oneShot = true;
      const old = backend.pid;
      await restart();
      if (restartError) fail(`the one-shot back-end (pid ${old}) exited with code 0 once its front-end left and could not be started again: ${restartError}`);
      run.connections = 0;
      run.note(`the one-shot back-end (pid ${old}) exited with code 0 once its front-end left; started again as pid ${backend.pid}`);
    },
  };

  try {
    for (const [i, check] of selected.entries()) {
      options.onStart?.(check, i, selected.length);
      const began = Date.now();
      let outcome: { status: CheckStatus; detail: string };
      let evidence: string[] = [];
      let crash: string | undefined;
      let ms = 0;
      if (restartError) {
        outcome = { status: 'fail', detail: `not run: the back-end could not be restarted (${restartError})` };
      } else {
        const run = new CheckRun(target, device, timeoutMs);
        const outputBefore = backend?.output() ?? '';
        outcome = await runOne(check, run, check.timeoutMs ?? checkTimeoutMs);
        ms = Date.now() - began; // the check's own time, not a restart after it
        evidence = run.evidence.list();
        if (backend) {
          // What the back-end printed meanwhile (its complaints, a crash message) belongs to the evidence.
          for (const line of outputSince(outputBefore, backend.output())) evidence.push(`back-end output: ${line}`);
          // A one-shot back-end exits once the check's connections are closed: wait for it, so
          // the next check does not connect to one that is going away.
          const settle = oneShot && run.connections > 0 ? ONE_SHOT_EXIT_MS : 20;
          if (backend.running) await within(backend.exited, settle);
          if (!backend.running) {
            const status = await within(backend.exited, 1500);
            if (exitedCleanly(status)) {
              // Serving one front-end and then exiting cleanly is a design, not a crash: the
              // check's own outcome stands; the next check gets a new back-end.
              oneShot = true;
            } else {
              const said = tail(outputSince(outputBefore, backend.output()).join('\n'));
              const before = outcome.status === 'fail' ? ` (${outcome.detail})` : '';
              outcome = { status: 'fail', detail: `the back-end (pid ${backend.pid}) ${describeExit(status)} during the check${before}; its output meanwhile: ${said || '(none)'}` };
              crash = crashName(status);
              crashes++;
            }
            await restart();
          } else if (oneShot && run.connections > 0) {
            // Still running after its front-end left: not what a one-shot back-end does, but
            // not a finding of this check either; the next check gets a new one.
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
        ...(crash !== undefined ? { crash } : {}),
      };
      results.push(result);
      options.onResult?.(result, i, selected.length);
    }
  } finally {
    listener?.close();
    await backend?.stop();
  }
  const summary: Record<CheckStatus, number> = { pass: 0, fail: 0, skip: 0 };
  for (const r of results) summary[r.status]++;
  return {
    backend: { name, socket: options.socket ?? options.listen ?? backend?.socketPath ?? '', device, spawned: spawn !== undefined, oneShot, crashes, restarts },
    checks: results,
    summary,
    ms: Date.now() - t0,
  };
}
