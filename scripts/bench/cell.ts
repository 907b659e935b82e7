/**
 * One cell run: a fresh dpdk-testpmd vhost back-end, one frontend (DPDK's
 * virtio-user testpmd or our worker), a warm-up, then the back-end's own counters
 * read at both ends of the measured window.
 */
import os from 'node:os';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { startVirtioUserTestpmd } from './dpdk-frontend.js';
import { renderCommand, type BenchFrontend, type SenderTotals } from './frontend.js';
import type { Direction, FrontendKind, Offload, TxMode } from './options.js';
import { OursWorker } from './ours.js';
import { foreignCpuPercent, snapshot, stealPercent, topForeign } from './cpu.js';
import { midpoint, rateBetween, type CounterSample } from './rate.js';
import type { RunResult } from './report.js';

export interface CellSpec {
  direction: Direction;
  frameSize: number;
  frontend: FrontendKind;
  durationMs: number;
  warmupMs: number;
  queueSize: number;
  burst: number;
  /** How our worker fills TX frames (default 'copy'). */
  txMode?: TxMode;
  /** Our worker counts what its TX ring does (ring-stats.ts). */
  ringStats?: boolean;
  frontendCore: number;
  backendCore: number;
  /** Offloaded tx (options.ts --offload); the back-end then offers TSO and takes checksum offload. */
  offload?: Offload | null;
}

export interface CellRun {
  result: RunResult;
  commands: { backend: string; frontend: string };
}

export interface CellHooks {
  log?: (msg: string) => void;
  /** Aborts between steps (sleeps included); the cell then stops its processes and rejects. */
  signal?: AbortSignal;
}

const LINK_TIMEOUT_MS = 15_000;
/** The back-end's counters are also read this often inside the window, to see whether the rate was steady. */
export const INTERVAL_MS = 1000;
/** Timers may fire a little early; a window this close to its end is complete. */
const END_SLACK_NS = 20_000_000n;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Error('aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The back-end's testpmd options for a cell (exported for the spec). */
export function backendOptions(spec: Pick<CellSpec, 'direction' | 'frameSize' | 'burst' | 'frontendCore' | 'backendCore' | 'offload'>) {
  // Offload cells: HOST_TSO4/6 offered (tso=1), and TCP/UDP checksum offload on the port's RX
  // (--rx-offloads=0xc), so that DPDK leaves a NEEDS_CSUM frame's checksum to the
  // application, as a NIC with checksum offload would, instead of summing it in software.
  const ol = spec.offload ? { extraVdevArgs: 'tso=1' } : {};
  return {
    ...ol,
    interactive: true,
    // The frontend transmits into rxonly, or receives what txonly sends.
    forwardMode: spec.direction === 'tx' ? ('rxonly' as const) : ('txonly' as const),
    // Main lcore (idle at its prompt) on the frontend's CPU, forwarding lcore on the other.
    lcores: `${spec.frontendCore},${spec.backendCore}`,
    mainLcore: spec.frontendCore,
    extraArgs: [`--burst=${spec.burst}`, ...(spec.direction === 'rx' ? [`--txpkts=${spec.frameSize}`] : []), ...(spec.offload ? ['--rx-offloads=0xc'] : [])],
  };
}

/**
 * The counter a cell's rate comes from, from `show port stats`. (The vhost PMD of
 * DPDK 22.11 leaves tx-errors at 0 even when frames found the ring full: see
 * {@link parseForwardStats} for that.)
 */
export function backendCounters(
  direction: Direction,
  s: { rxPackets: number; rxBytes: number; txPackets: number; txBytes: number },
): { packets: number; bytes: number } {
  return direction === 'tx' ? { packets: s.rxPackets, bytes: s.rxBytes } : { packets: s.txPackets, bytes: s.txBytes };
}

/** testpmd's forwarding-engine totals, printed by `stop`. */
export interface ForwardStats {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  /** Frames the engine built but the port did not accept (ring full); freed, never sent. */
  txDropped: number;
}

/** Parses the "Accumulated forward statistics" block (or the only per-port block) of testpmd's `stop` output. */
export function parseForwardStats(text: string): ForwardStats | undefined {
  const at = text.indexOf('Accumulated forward statistics');
  const block = at >= 0 ? text.slice(at) : text;
  const num = (label: string) => {
    const m = new RegExp(`${label}:\\s+(\\d+)`).exec(block);
    return m ? Number(m[1]) : undefined;
  };
  const rxPackets = num('RX-packets');
  const rxDropped = num('RX-dropped');
  const txPackets = num('TX-packets');
  const txDropped = num('TX-dropped');
  if (rxPackets === undefined || rxDropped === undefined || txPackets === undefined || txDropped === undefined) return undefined;
  return { rxPackets, rxDropped, txPackets, txDropped };
}

/** `rejected / (accepted + rejected)` in %, null when nothing was offered. */
export function ringFullPercent(accepted: number, rejected: number): number | null {
  const offered = accepted + rejected;
  return offered > 0 ? (rejected / offered) * 100 : null;
}

async function sampleBackend(b: TestpmdBackend, direction: Direction) {
  const before = process.hrtime.bigint();
  const stats = await b.portStats(0);
  const after = process.hrtime.bigint();
  const c = backendCounters(direction, stats);
  const sample: CounterSample = { tNs: midpoint(before, after), packets: c.packets, bytes: c.bytes };
  return { sample, halfMs: Number(after - before) / 2e6 };
}

async function waitLinkUp(b: TestpmdBackend, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + LINK_TIMEOUT_MS;
  for (;;) {
    const info = await b.command('show port info 0');
    if (/Link status:\s*up/i.test(info)) return;
    if (Date.now() > deadline) {
      throw new Error(`back-end port 0 link still down ${LINK_TIMEOUT_MS} ms after the frontend connected`);
    }
    await sleep(100, signal);
  }
}

class DpdkFrontend implements BenchFrontend {
  readonly command: string;
  constructor(
    readonly testpmd: TestpmdBackend,
    readonly direction: Direction,
  ) {
    this.command = renderCommand(['dpdk-testpmd', ...testpmd.args]);
  }
  get pid(): number {
    return this.testpmd.pid;
  }
  get running(): boolean {
    return this.testpmd.running;
  }
  async start(): Promise<void> {
    await this.testpmd.clearPortStats(0);
    await this.testpmd.startForwarding();
  }
  async sample(): Promise<CounterSample> {
    const before = process.hrtime.bigint();
    const s = await this.testpmd.portStats(0);
    const tNs = midpoint(before, process.hrtime.bigint());
    return this.direction === 'tx'
      ? { tNs, packets: s.txPackets, bytes: s.txBytes }
      : { tNs, packets: s.rxPackets, bytes: s.rxBytes };
  }
  async stopTraffic(): Promise<SenderTotals | null> {
    const f = parseForwardStats(await this.testpmd.stopForwarding());
    return f && this.direction === 'tx' ? { accepted: f.txPackets, rejected: f.txDropped } : null;
  }
  close(): Promise<void> {
    return this.testpmd.stop();
  }
  outputTail(): string {
    return this.testpmd.process.outputTail();
  }
}

async function startFrontend(spec: CellSpec, socketPath: string): Promise<BenchFrontend> {
  if (spec.frontend === 'dpdk') {
    const testpmd = await startVirtioUserTestpmd({
      socketPath,
      forwardMode: spec.direction === 'tx' ? 'txonly' : 'rxonly',
      forwardCore: spec.frontendCore,
      mainCore: spec.backendCore,
      queueSize: spec.queueSize,
      burst: spec.burst,
      ...(spec.direction === 'tx' ? { txFrameSize: spec.frameSize } : {}),
      ...(spec.offload ? { offload: spec.offload } : {}),
    });
    return new DpdkFrontend(testpmd, spec.direction);
  }
  return OursWorker.start({
    socketPath,
    direction: spec.direction,
    frameSize: spec.frameSize,
    burst: spec.burst,
    queueSize: spec.queueSize,
    txMode: spec.txMode ?? 'copy',
    ringStats: spec.ringStats ?? false,
    offload: spec.offload ?? null,
    core: spec.frontendCore,
    // Generous: the parent says stop long before; this only bounds an orphan.
    maxMs: spec.warmupMs + spec.durationMs + 60_000,
  });
}

/** Runs one cell once. Every process it started is stopped (by pid) before it settles. */
export async function runCell(spec: CellSpec, hooks: CellHooks = {}): Promise<CellRun> {
  const log = hooks.log ?? (() => {});
  const signal = hooks.signal;
  let backend: TestpmdBackend | undefined;
  let frontend: BenchFrontend | undefined;
  try {
    backend = await startTestpmd(backendOptions(spec));
    log(`back-end pid ${backend.pid}: ${renderCommand(['dpdk-testpmd', ...backend.args])}`);
    frontend = await startFrontend(spec, backend.socketPath);
    log(`${spec.frontend} frontend: ${frontend.command}`);
    await waitLinkUp(backend, signal);

    // Receiver first, so the sender's first frames are not lost to a stopped peer.
    if (spec.direction === 'tx') {
      await backend.startForwarding();
      await frontend.start();
    } else {
      await frontend.start();
      await backend.startForwarding();
    }
    await backend.clearPortStats(0);
    await sleep(spec.warmupMs, signal);

    const pids = [process.pid, backend.pid, ...(frontend.pid !== undefined ? [frontend.pid] : [])];
    const cpu0 = snapshot(pids);
    const b0 = await sampleBackend(backend, spec.direction);
    const f0 = await frontend.sample();
    // Intermediate reads only show whether the rate was steady; the result is first -> last.
    const end = b0.sample.tNs + BigInt(spec.durationMs) * 1_000_000n;
    const intervalMpps: number[] = [];
    let prev = b0;
    let b1 = b0;
    do {
      const left = Number(end - process.hrtime.bigint()) / 1e6;
      // Whole slices, the last one 0.5 to 1.5 slices long: no sliver at the end.
      const nap = left < INTERVAL_MS * 1.5 ? left : INTERVAL_MS;
      if (nap > 0) await sleep(nap, signal);
      b1 = await sampleBackend(backend, spec.direction);
      intervalMpps.push(rateBetween(prev.sample, b1.sample, spec.frameSize).mpps);
      prev = b1;
    } while (b1.sample.tNs < end - END_SLACK_NS);
    const cpu1 = snapshot(pids);
    const f1 = await frontend.sample();

    // Sender first, then the receiver.
    let sender: SenderTotals | null;
    if (spec.direction === 'tx') {
      sender = await frontend.stopTraffic();
      await backend.stopForwarding();
    } else {
      const f = parseForwardStats(await backend.stopForwarding());
      sender = f ? { accepted: f.txPackets, rejected: f.txDropped } : null;
      await frontend.stopTraffic();
    }
    if (!backend.running) throw new Error(`back-end exited during the cell:\n${backend.process.outputTail()}`);

    const rate = rateBetween(b0.sample, b1.sample, spec.frameSize);
    const front = f0 && f1 ? rateBetween(f0, f1, spec.frameSize) : null;
    return {
      result: {
        mpps: rate.mpps,
        gbps: rate.gbps,
        packets: rate.packets,
        bytes: rate.bytes,
        elapsedMs: rate.elapsedMs,
        bytesPerPacket: rate.bytesPerPacket,
        senderRingFullPct: sender ? ringFullPercent(sender.accepted, sender.rejected) : null,
        frontendMpps: front?.mpps ?? null,
        readUncertaintyMs: Math.max(b0.halfMs, b1.halfMs),
        foreignCpuPct: foreignCpuPercent(cpu0, cpu1, os.cpus().length),
        foreignTop: topForeign(cpu0, cpu1, os.cpus().length),
        intervalMpps,
        stealPct: stealPercent(cpu0, cpu1, os.cpus().length),
        ...(sender?.ringStats ? { ringStats: sender.ringStats } : {}),
      },
      commands: { backend: renderCommand(['dpdk-testpmd', ...backend.args]), frontend: frontend.command },
    };
  } finally {
    // Frontend first: the back-end then sees an orderly disconnect, not a vanished peer.
    await frontend?.close().catch(() => {});
    await backend?.stop().catch(() => {});
  }
}
