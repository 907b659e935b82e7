import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, rmSync, statSync } from 'node:fs';
import { lstat, mkdtemp, rm, stat, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { VhostUserError } from '../errors.js';
import { guardGroup, processGroupMembers, releaseGroup, signalGroup } from './process-group.js';

/** How a back-end process ended. */
export interface ExitStatus {
  /** Exit code when the process exited by itself; null when a signal killed it. */
  code: number | null;
  /** The signal that killed it (`SIGKILL`, `SIGSEGV`); null when it exited with a code. */
  signal: NodeJS.Signals | null;
}

/** How {@link spawnBackend} starts a back-end and decides it is ready. */
export interface SpawnBackendOptions {
  /** Executable name (looked up with {@link findExecutable}) or path. */
  command: string;
  /** Its arguments, passed as they are (no shell). */
  args: readonly string[];
  /** The vhost-user socket the back-end listens on (or, see `socketIsCallers`, connects to). */
  socketPath: string;
  /** Directory owned by the back-end: removed by `stop()`. */
  tempDir: string;
  /** Deadline for readiness; default 15 000 ms. */
  readyTimeoutMs?: number;
  /** Added to (not replacing) `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Working directory of the back-end (DPDK's vhost_blk listens in its own). Default: this process's. */
  cwd?: string;
  /** Default 'ignore'. DPDK testpmd needs a pipe: it exits on EOF on stdin. */
  stdin?: 'ignore' | 'pipe';
  /** Further paths removed by `stop()` (e.g. DPDK's runtime directory). */
  cleanupPaths?: readonly string[];
  /**
   * The socket at `socketPath` is the caller's own listening socket (the back-end
   * connects to it, e.g. DPDK `client=1`): leave it in place. Default false: a stale
   * socket file there is removed before the back-end starts.
   */
  socketIsCallers?: boolean;
  /**
   * Readiness condition, polled every 20 ms. Default: `socketPath` exists and is a socket.
   * Never connect here: a back-end may take a probe connection for its frontend.
   */
  ready?: (backend: BackendProcess) => boolean | Promise<boolean>;
  /** Wording for the readiness condition in errors; default `socket <socketPath>`. */
  readyLabel?: string;
  /** Run under `stdbuf -oL` so stdout arrives line by line instead of at exit. */
  lineBuffered?: boolean;
  /** Send stderr into the stdout pipe (`2>&1`), keeping the program's own ordering of the two. */
  mergeStderr?: boolean;
  /**
   * Kill the back-end's whole process group if this process dies without running its 'exit'
   * handlers (SIGKILL, a native crash): the direct child runs under `setpriv --pdeathsig KILL`
   * (when installed), and the group is registered with a watchdog (see process-group.ts) that
   * reaches the processes a wrapper forked too. Default true.
   */
  dieWithParent?: boolean;
  /** Called once the child exists, before readiness: lets callers attach to its output. */
  onSpawn?: (backend: BackendProcess) => void;
}

const OUTPUT_LINES = 200;
const FAILURE_TAIL_LINES = 20;
const POLL_MS = 20;
const STDIO_DRAIN_MS = 1000;
/** After SIGKILL to the group, how long to wait for its last process (one stuck in an uninterruptible sleep) before giving up. */
const KILL_WAIT_MS = 5000;
/** `sun_path` is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

const owned = new Set<BackendProcess>();
let exitHookInstalled = false;

function killAllSync(): void {
  for (const b of owned) b.killAndCleanSync();
}

/**
 * Searches `PATH`, then /usr/bin and /usr/sbin, for an executable file.
 * A name containing `/` is checked as given. Returns an absolute path or null.
 */
export function findExecutable(name: string): string | null {
  const candidates = name.includes('/')
    ? [path.resolve(name)]
    : [...(process.env['PATH'] ?? '').split(':').filter(Boolean), '/usr/bin', '/usr/sbin'].map((d) =>
        path.resolve(d, name),
      );
  for (const p of candidates) {
    try {
      if (!statSync(p).isFile()) continue;
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** Creates a fresh private directory under `os.tmpdir()`. */
export function makeTempDir(prefix = 'vhost-user-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Whether `p` exists and is a Unix socket. */
export async function isSocket(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isSocket();
  } catch {
    return false;
  }
}

/** Stops every back-end started by this module that has not been stopped yet. */
export async function stopAll(graceMs?: number): Promise<void> {
  await Promise.all([...owned].map((b) => b.stop(graceMs)));
}

/** Back-ends started and not yet stopped (for leak checks in tests). */
export function liveBackends(): readonly BackendProcess[] {
  return [...owned];
}

function tail(lines: readonly string[], n: number): string {
  return lines.slice(-n).join('\n');
}

function describeExit(s: ExitStatus): string {
  return s.signal ? `killed by ${s.signal}` : `exited with code ${s.code}`;
}

/**
 * One back-end child process, the process group it leads, and the temporary files it
 * owns. The child is started in a session and process group of its own, so whatever
 * it forks (a wrapper's real back-end, a back-end's helpers) is stopped with it: by
 * process group id, never by name. It is registered until `stop()` finishes, and its
 * group is killed with SIGKILL from a process 'exit' handler if the owner never stopped it.
 */
export class BackendProcess {
  /** pid of the child we started; also its process group id. Stays set after it exited. */
  readonly pid: number;
  /** The back-end's process group: its pid (it is the group leader). */
  readonly pgid: number;
  /** {@link SpawnBackendOptions.socketPath}. */
  readonly socketPath: string;
  /** {@link SpawnBackendOptions.tempDir}: removed by `stop()`, kept by `kill9()`. */
  readonly tempDir: string;
  /** Short name of the program, for messages. */
  readonly name: string;
  /** Resolves once the process has exited and its output is drained (at most 1 s after the exit). Never rejects. */
  readonly exited: Promise<ExitStatus>;
  /** The back-end's stdin with `stdin: 'pipe'` (closing it makes testpmd exit), otherwise null. */
  readonly stdin: Writable | null;
  /** stdout decoded as UTF-8; listeners may be added for live parsing. */
  readonly stdout: Readable;

  readonly #cleanupPaths: readonly string[];
  readonly #lines: string[] = [];
  readonly #partial = { out: '', err: '' };
  #reaped = false;
  /** Set once the group was seen without a living process: the id may then be reused, so it is never signalled again. */
  #groupGone = false;
  #status: ExitStatus | undefined;
  #stopping: Promise<void> | undefined;

  /** @internal Use {@link spawnBackend}. */
  constructor(child: ChildProcess & { pid: number }, opts: SpawnBackendOptions, name: string) {
    this.pid = child.pid;
    this.pgid = child.pid;
    this.socketPath = opts.socketPath;
    this.tempDir = opts.tempDir;
    this.name = name;
    this.#cleanupPaths = [opts.tempDir, ...(opts.cleanupPaths ?? [])];
    this.stdin = child.stdin;
    this.stdout = child.stdout!;
    this.stdin?.on('error', () => {});
    for (const [key, stream] of [['out', child.stdout!], ['err', child.stderr!]] as const) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => this.#capture(key, chunk));
    }
    this.exited = new Promise((resolve) => {
      let drain: NodeJS.Timeout | undefined;
      const settle = (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(drain);
        this.#reaped = true;
        this.#status ??= { code, signal };
        resolve(this.#status);
      };
      child.once('close', settle);
      // 'close' waits for stdout/stderr to drain; do not hang if something else holds the pipes.
      child.once('exit', (code, signal) => {
        this.#reaped = true;
        // Left alone (an owner that never calls stop), an empty group's id must not stay guarded.
        if (this.#groupEmpty()) releaseGroup(this.pgid);
        drain = setTimeout(() => settle(code, signal), STDIO_DRAIN_MS).unref();
      });
    });
    owned.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', killAllSync);
    }
  }

  /** False once the process we started has exited (processes it forked may remain until `stop()`). */
  get running(): boolean {
    return !this.#reaped;
  }

  /** Exit status once known. */
  get exitStatus(): ExitStatus | undefined {
    return this.#status;
  }

  /** The last 200 lines of stdout and stderr, interleaved in arrival order. */
  output(): string {
    return this.#allLines().join('\n');
  }

  /** The last `n` captured lines. */
  outputTail(n = FAILURE_TAIL_LINES): string {
    return tail(this.#allLines(), n);
  }

  /**
   * SIGTERM to the process group, then SIGKILL to it if any of its processes is still running
   * after `graceMs` (0: SIGKILL at once); waits until the group has no living process, then
   * removes the temp dir and other owned paths. Also stops what is left of the group after the
   * process we started exited by itself. Idempotent.
   */
  stop(graceMs = 2000): Promise<void> {
    return (this.#stopping ??= this.#stop(graceMs));
  }

  /** SIGKILL to the process group and wait until it is gone, keeping the temp dir (for crash and restart tests). */
  async kill9(): Promise<void> {
    this.#signal('SIGKILL');
    // Re-sent while waiting: harmless, and it reaches a process forked by one that had caught SIGTERM.
    await this.#waitGroupGone(KILL_WAIT_MS, 'SIGKILL');
    await this.exited;
  }

  /** `await using` support: {@link BackendProcess.stop} with the default grace period. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** @internal Synchronous last resort from the process 'exit' handler. */
  killAndCleanSync(): void {
    this.#signal('SIGKILL');
    for (const p of this.#cleanupPaths) {
      try {
        rmSync(p, { recursive: true, force: true });
      } catch {
        // best effort while exiting
      }
    }
    owned.delete(this);
  }

  /** @internal Polls `ready` until it holds, the process exits, or the deadline passes. */
  async waitReady(
    ready: (b: BackendProcess) => boolean | Promise<boolean>,
    timeoutMs: number,
    label: string,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ok = !this.#reaped && (await ready(this));
      if (this.#reaped) {
        const status = await this.exited;
        const out = this.outputTail();
        await this.stop(0);
        throw new VhostUserError(
          'VHOST_SPAWN_FAILED',
          `${this.name} (pid ${this.pid}) ${describeExit(status)} before ${label} was ready; last output:\n${out}`,
        );
      }
      if (ok) return;
      if (Date.now() >= deadline) {
        await this.stop(0);
        throw new VhostUserError(
          'VHOST_SPAWN_TIMEOUT',
          `${this.name} (pid ${this.pid}): ${label} not ready after ${timeoutMs} ms; killed. Last output:\n${this.outputTail()}`,
        );
      }
      await Promise.race([new Promise((r) => setTimeout(r, POLL_MS)), this.exited]);
    }
  }

  async #stop(graceMs: number): Promise<void> {
    if (this.#groupEmpty()) {
      await this.exited;
    } else if (graceMs <= 0) {
      await this.kill9();
    } else {
      this.#signal('SIGTERM');
      if (!(await this.#waitGroupGone(graceMs))) await this.kill9();
      else await this.exited;
    }
    releaseGroup(this.pgid);
    await Promise.all(this.#cleanupPaths.map((p) => rm(p, { recursive: true, force: true })));
    owned.delete(this);
  }

  /** Whether the process we started is reaped and no living process is left in its group. */
  #groupEmpty(): boolean {
    if (!this.#groupGone && this.#reaped && processGroupMembers(this.pgid).length === 0) this.#groupGone = true;
    return this.#groupGone;
  }

  /** Polls until the group is empty (true) or `ms` pass (false), re-sending `resend` on each poll. */
  async #waitGroupGone(ms: number, resend?: NodeJS.Signals): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.#groupEmpty()) {
      if (Date.now() >= deadline) return false;
      if (resend) this.#signal(resend);
      // The exit of the process we started wakes the wait at once; its forks are polled.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise((r) => (timer = setTimeout(r, POLL_MS))), this.#reaped ? undefined : this.exited]);
      clearTimeout(timer);
    }
    return true;
  }

  #signal(sig: NodeJS.Signals): void {
    if (this.#groupGone) return;
    try {
      if (!signalGroup(this.pgid, sig) && this.#reaped) this.#groupGone = true;
    } catch {
      // EPERM: a member we may not signal (a wrapper such as sudo changed its user); the child itself we may.
      if (this.#reaped) return;
      try {
        process.kill(this.pid, sig);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      }
    }
  }

  #capture(key: 'out' | 'err', chunk: string): void {
    const parts = (this.#partial[key] + chunk).split('\n');
    this.#partial[key] = parts.pop()!;
    for (const line of parts) this.#lines.push(line.replace(/\r$/, ''));
    if (this.#lines.length > OUTPUT_LINES) this.#lines.splice(0, this.#lines.length - OUTPUT_LINES);
  }

  #allLines(): string[] {
    const open = [this.#partial.out, this.#partial.err].filter(Boolean);
    return open.length ? [...this.#lines, ...open].slice(-OUTPUT_LINES) : this.#lines;
  }
}

/**
 * Starts a back-end and resolves once it is ready (by default: its socket exists).
 * Rejects with VHOST_SPAWN_FAILED if it exits first or cannot be started, and with
 * VHOST_SPAWN_TIMEOUT (after killing it) at the deadline; either way its temp dir is removed.
 */
export async function spawnBackend(opts: SpawnBackendOptions): Promise<BackendProcess> {
  const name = path.basename(opts.command);
  const fail = async (msg: string, code: 'VHOST_SPAWN_FAILED' | 'VHOST_INVALID_ARGUMENT' = 'VHOST_SPAWN_FAILED') => {
    await Promise.all([opts.tempDir, ...(opts.cleanupPaths ?? [])].map((p) => rm(p, { recursive: true, force: true })));
    return new VhostUserError(code, msg);
  };
  if (Buffer.byteLength(opts.socketPath) > MAX_SOCKET_PATH) {
    throw await fail(`socket path longer than ${MAX_SOCKET_PATH} bytes: ${opts.socketPath}`, 'VHOST_INVALID_ARGUMENT');
  }
  const existing = await lstat(opts.socketPath).catch(() => undefined);
  if (existing?.isSocket()) {
    if (!opts.socketIsCallers) await unlink(opts.socketPath);
  } else if (existing) throw await fail(`${opts.socketPath} exists and is not a socket`, 'VHOST_INVALID_ARGUMENT');

  const exe = findExecutable(opts.command);
  if (!exe) throw await fail(`${name} not found in PATH, /usr/bin or /usr/sbin`);
  const argv = [exe, ...opts.args];
  const stdbuf = opts.lineBuffered ? findExecutable('stdbuf') : null;
  if (stdbuf) argv.unshift(stdbuf, '-oL');
  if (opts.mergeStderr) argv.unshift('/bin/sh', '-c', 'exec "$@" 2>&1', 'sh');
  const dieWithParent = opts.dieWithParent !== false;
  const setpriv = dieWithParent ? findExecutable('setpriv') : null;
  if (setpriv) argv.unshift(setpriv, '--pdeathsig', 'KILL', '--');

  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    // setsid(): a session and process group of its own, led by the child (pgid = pid); this also
    // keeps a terminal's SIGINT from reaching the back-end before we could stop it in order.
    detached: true,
  });
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw await fail(`${name} could not be started: ${err.message}`);
  }
  child.on('error', () => {});
  if (dieWithParent) guardGroup(child.pid);
  const backend = new BackendProcess(child as ChildProcess & { pid: number }, opts, name);
  opts.onSpawn?.(backend);
  await backend.waitReady(
    opts.ready ?? ((b) => isSocket(b.socketPath)),
    opts.readyTimeoutMs ?? 15_000,
    opts.readyLabel ?? `socket ${opts.socketPath}`,
  );
  return backend;
}

/**
 * Base for typed back-end handles: delegates process ownership to a {@link BackendProcess}.
 */
export class BackendHandle {
  constructor(
    /** The process this handle owns: its output, stdin and stop() are the handle's. */
    readonly process: BackendProcess,
  ) {}

  /** pid (and process group id) of the back-end process; stays set after it exited. */
  get pid(): number {
    return this.process.pid;
  }
  /** The vhost-user socket the back-end listens on (or connects to, for a client-mode back-end). */
  get socketPath(): string {
    return this.process.socketPath;
  }
  /** The temporary directory the back-end owns (its socket, disk image, shared dir); removed by stop(). */
  get tempDir(): string {
    return this.process.tempDir;
  }
  /** Resolves with how the process ended once it has exited and its output drained; never rejects. */
  get exited(): Promise<ExitStatus> {
    return this.process.exited;
  }
  /** False once the process we started has exited. */
  get running(): boolean {
    return this.process.running;
  }
  /** The last 200 lines of its stdout and stderr, in arrival order. */
  output(): string {
    return this.process.output();
  }
  /** Stops the whole process group: SIGTERM, SIGKILL after `graceMs` (default 2000), then removes its files. Idempotent. */
  stop(graceMs?: number): Promise<void> {
    return this.process.stop(graceMs);
  }
  /** SIGKILL to the process group, waiting until it is gone; keeps the temp dir (crash and restart tests). */
  kill9(): Promise<void> {
    return this.process.kill9();
  }
  /** `await using` support: stop() with the default grace period. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
