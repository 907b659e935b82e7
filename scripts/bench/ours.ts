/**
 * The "ours" side of a cell: runs ours-worker.js in its own Node process, pinned
 * with taskset to the frontend CPU, and drives it over the worker protocol. The
 * lead can adapt the worker (ours-worker.ts) to the driver's final API without
 * touching this file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { renderCommand, type BenchFrontend, type SenderTotals } from './frontend.js';
import type { Direction, Offload, TxMode } from './options.js';
import type { CounterSample } from './rate.js';
import { decodeMessage, type WorkerMessage } from './worker-protocol.js';

export const WORKER_PATH = fileURLToPath(new URL('./ours-worker.js', import.meta.url));

export interface OursWorkerOptions {
  socketPath: string;
  direction: Direction;
  frameSize: number;
  burst: number;
  queueSize: number;
  /** TX: 'copy' (sendBurst of prepared frames) or 'in-place' (sendInPlace, headers only); default 'copy'. */
  txMode?: TxMode;
  /** CPU to pin the worker to. */
  core: number;
  /** Count what the TX ring does (ring-stats.ts). */
  ringStats?: boolean;
  /** Offloaded TX frames (options.ts --offload). */
  offload?: Offload | null;
  /** Hard stop for the worker's loop (it also stops on `stop` or when its stdin closes). */
  maxMs: number;
  readyTimeoutMs?: number;
}

const live = new Set<OursWorker>();

/** SIGKILLs every worker still running (from a SIGINT handler or on exit). */
export function killAllWorkers(): void {
  for (const w of live) w.kill();
}
process.on('exit', killAllWorkers);

/** The worker's argument vector (after `node`), exported for the spec. */
export function workerArgs(o: Omit<OursWorkerOptions, 'socketPath' | 'core' | 'readyTimeoutMs'> & { socketPath: string }): string[] {
  return [
    WORKER_PATH,
    '--socket', o.socketPath,
    '--direction', o.direction,
    '--size', String(o.frameSize),
    '--burst', String(o.burst),
    '--queue-size', String(o.queueSize),
    '--max-ms', String(o.maxMs),
    ...(o.txMode && o.txMode !== 'copy' ? ['--tx-mode', o.txMode] : []),
    ...(o.ringStats ? ['--ring-stats'] : []),
    ...(o.offload ? ['--offload', o.offload] : []),
  ];
}

export class OursWorker implements BenchFrontend {
  readonly command: string;
  readonly #child: ChildProcess;
  readonly #messages: WorkerMessage[] = [];
  readonly #other: string[] = [];
  #wake: (() => void) | undefined;
  #exited = false;
  readonly #exit: Promise<number | null>;

  private constructor(argv: readonly string[], displayArgv: readonly string[]) {
    this.command = renderCommand(displayArgv);
    this.#child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.on('error', () => {});
    this.#child.stdin!.on('error', () => {});
    const onLine = (line: string) => {
      const m = decodeMessage(line);
      if (m) this.#messages.push(m);
      else if (line.trim()) this.#other.push(line);
      if (this.#other.length > 40) this.#other.shift();
      this.#wake?.();
    };
    readline.createInterface({ input: this.#child.stdout! }).on('line', onLine);
    readline.createInterface({ input: this.#child.stderr! }).on('line', onLine);
    this.#exit = new Promise((resolve) => {
      // 'close', not 'exit': every line of stdout has been read by then.
      this.#child.once('close', (code) => {
        this.#exited = true;
        live.delete(this);
        this.#wake?.();
        resolve(code);
      });
      this.#child.once('error', () => {
        this.#exited = true;
        live.delete(this);
        this.#wake?.();
        resolve(null);
      });
    });
    live.add(this);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get running(): boolean {
    return !this.#exited;
  }

  /**
   * Whether the driver can be loaded: null if so, else the reason (e.g. "driver not
   * available: ..."). Runs the worker with --probe, unpinned.
   */
  static async probe(timeoutMs = 20_000): Promise<string | null> {
    const w = new OursWorker([process.execPath, WORKER_PATH, '--probe'], ['node', WORKER_PATH, '--probe']);
    try {
      await w.#next('probe', timeoutMs);
      return null;
    } catch (e) {
      return (e as Error).message;
    } finally {
      await w.close();
    }
  }

  /** Spawns the pinned worker and resolves once it has opened the driver. */
  static async start(o: OursWorkerOptions): Promise<OursWorker> {
    const taskset = findExecutable('taskset');
    if (!taskset) throw new Error('taskset (util-linux) is needed to pin the worker');
    const setpriv = findExecutable('setpriv');
    const args = workerArgs(o);
    const pinned = [taskset, '-c', String(o.core), process.execPath, ...args];
    const argv = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...pinned] : pinned;
    const w = new OursWorker(argv, ['taskset', '-c', String(o.core), 'node', ...args]);
    try {
      await w.#next('ready', o.readyTimeoutMs ?? 20_000);
    } catch (e) {
      await w.close();
      throw e;
    }
    return w;
  }

  async start(): Promise<void> {
    this.#send('go');
  }

  async sample(): Promise<CounterSample | null> {
    this.#send('mark');
    const m = await this.#next('mark', 5_000);
    return { tNs: BigInt(m.tNs), packets: m.packets, bytes: m.bytes };
  }

  async stopTraffic(): Promise<SenderTotals | null> {
    this.#send('stop');
    const done = await this.#next('done', 10_000);
    return done.rejected !== undefined ? { accepted: done.packets, rejected: done.rejected, ringStats: done.ringStats ?? null } : null;
  }

  outputTail(): string {
    return this.#other.slice(-20).join('\n');
  }

  kill(): void {
    if (this.#exited || this.#child.pid === undefined) return;
    try {
      process.kill(this.#child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  async close(graceMs = 3000): Promise<void> {
    if (!this.#exited) {
      this.#child.stdin!.end();
      const timer = setTimeout(() => this.kill(), graceMs);
      await this.#exit;
      clearTimeout(timer);
    }
  }

  #send(cmd: string): void {
    if (this.#exited) throw new Error(`ours worker (pid ${this.pid}) has exited; output:\n${this.outputTail()}`);
    this.#child.stdin!.write(`${cmd}\n`);
  }

  /** Takes the first queued message of `type`; a worker 'error' message or exit rejects. */
  async #next<T extends WorkerMessage['type']>(type: T, timeoutMs: number): Promise<Extract<WorkerMessage, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const err = this.#messages.find((m) => m.type === 'error');
      if (err?.type === 'error') throw new Error(err.message);
      const i = this.#messages.findIndex((m) => m.type === type);
      if (i >= 0) return this.#messages.splice(i, 1)[0] as Extract<WorkerMessage, { type: T }>;
      if (this.#exited) {
        throw new Error(`ours worker (pid ${this.pid}) exited before '${type}'; output:\n${this.outputTail()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`ours worker (pid ${this.pid}): no '${type}' within ${timeoutMs} ms`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(r, Math.min(left, 200));
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
  }
}
