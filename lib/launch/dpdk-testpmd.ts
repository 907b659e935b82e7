import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { VhostUserError } from '../errors.js';
import {
  BackendHandle,
  findExecutable,
  isSocket,
  makeTempDir,
  spawnBackend,
  type BackendProcess,
} from './backend-process.js';

/**
 * testpmd's `--forward-mode`: `rxonly` receives and drops (a sink for the front-end's TX),
 * `txonly` generates packets (a source for its RX), `io` sends back what it receives
 * unchanged, `macswap` sends it back with source and destination MAC swapped, `csum` sends it back with
 * checksums computed as `csum set` says (and counts the bad ones the port reports).
 */
export type TestpmdForwardMode = 'rxonly' | 'txonly' | 'io' | 'macswap' | 'csum';

/** How {@link startTestpmd} starts dpdk-testpmd with a vhost-user port (`net_vhost0`). */
export interface TestpmdOptions {
  /** vhost queue pairs (`queues=` on the vdev, `--rxq/--txq`); default 1. */
  queues?: number;
  /** `client=1`: testpmd connects to a socket the caller already listens on. */
  client?: boolean;
  /** Default `<tempDir>/vhost-net.sock`. Must not contain a comma (DPDK kvargs). */
  socketPath?: string;
  /**
   * vhost-user ports (`net_vhost0` .. `net_vhostN-1`); default 1. Port k > 0 listens on
   * `<tempDir>/vhost-netK.sock` (see {@link TestpmdBackend.socketPaths}); with two, io
   * forwarding passes port 0's frames to port 1 and back, a switch with two ports.
   * Not with `client`.
   */
  ports?: number;
  /** Default 'rxonly'. */
  forwardMode?: TestpmdForwardMode;
  /** EAL `-l`; default '0-1' (main lcore 0, forwarding on 1). */
  lcores?: string;
  /** EAL `--main-lcore`. */
  mainLcore?: number;
  /** EAL `-m` with `--no-huge`; default 1024 (256 fails with ENOMEM). */
  memoryMb?: number;
  /** `--total-num-mbufs`; default 8192 (the built-in default fails without hugepages). */
  totalMbufs?: number;
  /** `--nb-cores` (forwarding cores). */
  nbCores?: number;
  /** Appended to the vdev string, e.g. 'iommu-support=1'. */
  extraVdevArgs?: string;
  /** More `--vdev` devices (ports 1, 2, ...), e.g. a second `net_vhost1,iface=...` for io forwarding between two front-ends. */
  extraVdevs?: readonly string[];
  /** Further testpmd application arguments (after `--`), e.g. ['--txpkts=64']. */
  extraArgs?: readonly string[];
  /**
   * Drive testpmd's prompt over stdin (`-i`); needed for {@link TestpmdBackend.portStats}
   * and forwarding control. Default false: testpmd starts forwarding by itself.
   */
  interactive?: boolean;
  /** In interactive mode, start forwarding at once (`--auto-start`). Default false. */
  autoStart?: boolean;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}

/** Counters of one port as `show port stats` reports them. */
export interface PortStats {
  /** RX-packets: frames the port received, i.e. that the front-end transmitted (since start or the last clear). */
  rxPackets: number;
  /** RX-bytes: bytes of those frames, without the virtio-net header. */
  rxBytes: number;
  /** RX-missed: frames dropped because testpmd's RX queue was full. */
  rxMissed: number;
  /** RX-errors: frames the port received in error. */
  rxErrors: number;
  /** RX-nombuf: receive attempts that failed for want of an mbuf (the mbuf pool ran dry). */
  rxNombuf: number;
  /** TX-packets: frames the port sent, i.e. that it put into the front-end's RX ring. */
  txPackets: number;
  /** TX-bytes: bytes of those frames. */
  txBytes: number;
  /** TX-errors: frames the port reported as failed to send. */
  txErrors: number;
}

const PROMPT = 'testpmd> ';
/** Printed by non-interactive testpmd once forwarding has started. */
const STARTED_MARKER = 'Press enter to exit';
const NO_STDBUF_SETTLE_MS = 500;
let prefixCounter = 0;

/** Where EAL keeps runtime files for a `--file-prefix` (rte_eal_get_runtime_dir). */
export function dpdkRuntimeDir(prefix: string): string {
  if (process.getuid?.() === 0) return path.join('/var/run/dpdk', prefix);
  return path.join(process.env['XDG_RUNTIME_DIR'] ?? os.tmpdir(), 'dpdk', prefix);
}

/** @internal Line-oriented console over testpmd's interactive prompt; one command at a time. */
export class TestpmdConsole {
  #buf = '';
  #queue: Promise<unknown> = Promise.resolve();
  #wake: (() => void) | undefined;

  constructor(private readonly proc: BackendProcess) {
    proc.stdout.on('data', (s: string) => {
      this.#buf += s;
      this.#wake?.();
    });
    void proc.exited.then(() => this.#wake?.());
  }

  get prompted(): boolean {
    return this.#buf.includes(PROMPT);
  }

  /** Drops everything up to and including the first prompt. */
  consumePrompt(): void {
    const i = this.#buf.indexOf(PROMPT);
    if (i >= 0) this.#buf = this.#buf.slice(i + PROMPT.length);
  }

  run(cmd: string, timeoutMs: number): Promise<string> {
    const result = this.#queue.then(() => this.#exec(cmd, timeoutMs));
    this.#queue = result.catch(() => {});
    return result;
  }

  async #exec(cmd: string, timeoutMs: number): Promise<string> {
    if (!this.proc.running || !this.proc.stdin) {
      throw new VhostUserError('VHOST_INVALID_STATE', `testpmd (pid ${this.proc.pid}) is not running`);
    }
    this.#buf = '';
    this.proc.stdin.write(`${cmd}\n`);
    const deadline = Date.now() + timeoutMs;
    while (!this.prompted) {
      if (!this.proc.running) {
        throw new VhostUserError(
          'VHOST_INVALID_STATE',
          `testpmd (pid ${this.proc.pid}) exited during '${cmd}'; last output:\n${this.proc.outputTail()}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VhostUserError('VHOST_TIMEOUT', `testpmd gave no prompt within ${timeoutMs} ms after '${cmd}'`);
      }
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.#wake = r;
        timer = setTimeout(r, Math.min(left, 100));
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
    const text = this.#buf.slice(0, this.#buf.indexOf(PROMPT));
    this.consumePrompt();
    return text
      .split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l) => l.trim() !== cmd)
      .join('\n');
  }
}

function counter(text: string, label: string): number | undefined {
  const m = new RegExp(`${label}:\\s+(\\d+)`).exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Parses the output of `show port stats <port>`. */
export function parsePortStats(text: string): PortStats | undefined {
  const fields = {
    rxPackets: 'RX-packets',
    rxMissed: 'RX-missed',
    rxBytes: 'RX-bytes',
    rxErrors: 'RX-errors',
    rxNombuf: 'RX-nombuf',
    txPackets: 'TX-packets',
    txErrors: 'TX-errors',
    txBytes: 'TX-bytes',
  } as const;
  const out: Partial<PortStats> = {};
  for (const [key, label] of Object.entries(fields) as [keyof PortStats, string][]) {
    const v = counter(text, label);
    if (v === undefined) return undefined;
    out[key] = v;
  }
  return out as PortStats;
}

/** A running `dpdk-testpmd` with a `net_vhost0` port (port 0). */
export class TestpmdBackend extends BackendHandle {
  readonly #console: TestpmdConsole | undefined;

  /** @internal Use {@link startTestpmd}. */
  constructor(
    proc: BackendProcess,
    prompt: TestpmdConsole | undefined,
    /** EAL `--file-prefix`, unique per instance, so parallel testpmds do not share runtime files. */
    readonly filePrefix: string,
    /** The full command line testpmd was started with (after the executable), for messages and logs. */
    readonly args: readonly string[],
    /** The socket of each port, port 0 first (see {@link TestpmdOptions.ports}). */
    readonly socketPaths: readonly string[] = [proc.socketPath],
  ) {
    super(proc);
    this.#console = prompt;
  }

  /** Started with `interactive: true`: the prompt methods (command, portStats, ...) work. */
  get interactive(): boolean {
    return this.#console !== undefined;
  }

  /**
   * Waits until DPDK reports the device on `socketPath` ready ("virtio is now ready for
   * processing": its rings are set up and DRIVER_OK is in), from testpmd's output. Unlike
   * polling `show port info` at the prompt, it cannot stall behind a port that is in the
   * middle of being set up (the prompt was seen to give no answer for 10 s then).
   */
  async waitDeviceReady(socketPath: string, timeoutMs = 10_000): Promise<void> {
    const marker = `(${socketPath}) virtio is now ready for processing`;
    const deadline = Date.now() + timeoutMs;
    while (!this.output().includes(marker)) {
      if (!this.running) throw new VhostUserError('VHOST_BACKEND_FAILED', `testpmd exited before ${socketPath} was ready:\n${this.output()}`);
      if (Date.now() > deadline) throw new VhostUserError('VHOST_TIMEOUT', `testpmd did not report ${socketPath} ready within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Runs one prompt command and returns its output (echo and prompt removed). Interactive only. */
  command(cmd: string, timeoutMs = 10_000): Promise<string> {
    if (!this.#console) {
      return Promise.reject(
        new VhostUserError('VHOST_INVALID_STATE', `testpmd commands need startTestpmd({ interactive: true })`),
      );
    }
    return this.#console.run(cmd, timeoutMs);
  }

  /** The back-end's own counters for `port` (default 0), from `show port stats`. Interactive only. */
  async portStats(port = 0): Promise<PortStats> {
    const text = await this.command(`show port stats ${port}`);
    const stats = parsePortStats(text);
    if (!stats) throw new VhostUserError('VHOST_BACKEND_FAILED', `unexpected 'show port stats' output:\n${text}`);
    return stats;
  }

  /** Zeroes the counters of `port` (`clear port stats`). Interactive only. */
  async clearPortStats(port = 0): Promise<void> {
    await this.command(`clear port stats ${port}`);
  }

  /** `start`: begin forwarding in the configured mode. Interactive only. */
  async startForwarding(): Promise<void> {
    await this.command('start');
  }

  /** `stop`: stop forwarding; returns testpmd's forward statistics text. Interactive only. */
  stopForwarding(): Promise<string> {
    return this.command('stop');
  }
}

/**
 * Starts `dpdk-testpmd` without hugepages or PCI devices, with a vhost-user port on a socket
 * in a fresh temp dir and a unique `--file-prefix`. In server mode (default) it resolves once
 * the socket exists (and, interactive, the prompt is up); with `client: true` once testpmd
 * has initialised and begun connecting to `socketPath`, which the caller must already listen on.
 */
export async function startTestpmd(opts: TestpmdOptions = {}): Promise<TestpmdBackend> {
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queues must be a positive integer, got ${queues}`);
  }
  if (opts.socketPath?.includes(',')) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `DPDK cannot take a socket path with a comma: ${opts.socketPath}`);
  }
  const interactive = opts.interactive ?? false;
  const stdbuf = findExecutable('stdbuf');
  if (interactive && !stdbuf) {
    throw new VhostUserError('VHOST_SPAWN_FAILED', 'interactive testpmd needs stdbuf (coreutils): its stdout is block-buffered on a pipe');
  }
  const tempDir = await makeTempDir('vhost-testpmd-');
  const socketPath = opts.socketPath ?? path.join(tempDir, 'vhost-net.sock');
  const filePrefix = `vhu${process.pid}-${++prefixCounter}-${randomBytes(3).toString('hex')}`;

  const ports = opts.ports ?? 1;
  if (!Number.isInteger(ports) || ports < 1 || (ports > 1 && opts.client)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `ports must be a positive integer (1 with client), got ${ports}`);
  }
  const socketPaths = [socketPath, ...Array.from({ length: ports - 1 }, (_, k) => path.join(tempDir, `vhost-net${k + 1}.sock`))];
  const vdev = [`net_vhost0,iface=${socketPath},queues=${queues}`];
  if (opts.client) vdev.push('client=1');
  if (opts.extraVdevArgs) vdev.push(opts.extraVdevArgs);
  const moreVdevs = socketPaths.slice(1).flatMap((p, k) => ['--vdev', [`net_vhost${k + 1},iface=${p},queues=${queues}`, ...(opts.extraVdevArgs ? [opts.extraVdevArgs] : [])].join(',')]);
  const args = [
    '--no-huge',
    '-m', String(opts.memoryMb ?? 1024),
    '--no-pci',
    `--file-prefix=${filePrefix}`,
    '-l', opts.lcores ?? '0-1',
    ...(opts.mainLcore !== undefined ? ['--main-lcore', String(opts.mainLcore)] : []),
    '--vdev', vdev.join(','),
    ...moreVdevs,
    ...(opts.extraVdevs ?? []).flatMap((v) => ['--vdev', v]),
    '--',
    ...(interactive ? ['-i'] : []),
    ...(interactive && opts.autoStart ? ['--auto-start'] : []),
    `--total-num-mbufs=${opts.totalMbufs ?? 8192}`,
    `--forward-mode=${opts.forwardMode ?? 'rxonly'}`,
    ...(queues > 1 ? [`--rxq=${queues}`, `--txq=${queues}`] : []),
    ...(opts.nbCores !== undefined ? [`--nb-cores=${opts.nbCores}`] : []),
    ...(opts.extraArgs ?? []),
  ];

  let prompt: TestpmdConsole | undefined;
  const spawnedAt = Date.now();
  const initialised = (b: BackendProcess): boolean => {
    if (prompt) return prompt.prompted;
    if (!stdbuf) return Date.now() - spawnedAt >= NO_STDBUF_SETTLE_MS;
    return b.output().includes(STARTED_MARKER);
  };
  const proc = await spawnBackend({
    command: 'dpdk-testpmd',
    args,
    socketPath,
    tempDir,
    readyTimeoutMs: opts.readyTimeoutMs,
    stdin: 'pipe',
    lineBuffered: true,
    mergeStderr: true,
    cleanupPaths: [dpdkRuntimeDir(filePrefix)],
    socketIsCallers: opts.client ?? false,
    onSpawn: (b) => {
      if (interactive) prompt = new TestpmdConsole(b);
    },
    ready: opts.client
      ? initialised
      : // The socket appears while testpmd is still starting its port; a front-end that
        // completes its setup before "start packet forwarding" can leave a queue that
        // testpmd never polls (seen ~1 in 20 full-suite runs). Wait for both.
        async (b) => (await Promise.all(socketPaths.map(isSocket))).every(Boolean) && initialised(b),
    readyLabel: opts.client ? 'EAL and port initialisation' : `socket ${socketPath} and testpmd's start-up`,
  });
  prompt?.consumePrompt();
  return new TestpmdBackend(proc, prompt, filePrefix, args, socketPaths);
}
