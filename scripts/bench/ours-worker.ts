/**
 * The "ours" poller: one Node process, pinned by the parent (taskset) to the CPU
 * the back-end's forwarding lcore does not use, that opens this library's
 * virtio-net driver on the back-end's socket and busy-polls it.
 *
 *   node dist/scripts/bench/ours-worker.js --socket S --direction tx|rx --size N
 *        [--burst N] [--queue-size N] [--max-ms N]
 *   node dist/scripts/bench/ours-worker.js --probe     (can the driver be loaded?)
 *
 * Protocol: see worker-protocol.ts. TX: sendBurst of a pre-built array of `burst`
 * frames, over and over. RX: receiveBurst into one reusable burst object.
 *
 * The driver is imported at run time from dist/lib/devices/net/virtio-net.js so that
 * this file compiles before the driver exists; {@link VirtioNetLike} is the planned
 * API it is written against. Once the driver lands, a static import can replace it.
 */
import { existsSync } from 'node:fs';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, type OptionSpecs } from '../../lib/cli/args.js';
import { TxOffloads } from '../../lib/devices/net/tx-offloads.js';
import { buildUdpFrameOfSize } from '../../lib/net/frame-builder.js';
import { offloadFrame } from './dpdk-frontend.js';
import { TSO_MSS } from './options.js';
import type { VirtqueueOptions, Virtqueue } from '../../lib/virtqueue/virtqueue.js';
import { countingQueues } from './ring-stats.js';
import { encodeMessage, EXIT_UNAVAILABLE, type WorkerMessage } from './worker-protocol.js';

/** Reusable receive burst: frames i at `buffer[offsets[i] .. offsets[i] + lengths[i])`. */
export interface RxBurstLike {
  buffer: Uint8Array;
  offsets: Uint32Array;
  lengths: Uint32Array;
}

export interface VirtioNetLike {
  sendBurst(frames: readonly Uint8Array[], count: number, queue?: number, offloads?: TxOffloads): number;
  sendInPlace?(count: number, fill: (frame: Uint8Array, index: number) => number, queue?: number, offloads?: TxOffloads): number;
  receiveBurst(queue: number, burst: RxBurstLike): number;
  readonly stats?: unknown;
  /** Optional helper for making a burst object, if the module exports no RxBurst class. */
  createRxBurst?(maxFrames: number): RxBurstLike;
  close(): void | Promise<void>;
}

interface DriverModule {
  VirtioNet: {
    open(
      socketPath: string,
      opts: { queuePairs: number; queueSize: number; csum?: boolean; tso?: boolean; createQueue?: (kind: 'split' | 'packed', o: VirtqueueOptions) => Virtqueue },
    ): Promise<VirtioNetLike>;
  };
  RxBurst?: new (maxFrames: number) => RxBurstLike;
}

const DRIVER_URL = new URL('../../lib/devices/net/virtio-net.js', import.meta.url);
const SLICE_NS = 20_000_000n;
const BURSTS_PER_CHECK = 64;

class Unavailable extends Error {}

function emit(m: WorkerMessage): void {
  process.stdout.write(encodeMessage(m));
}

async function loadDriver(): Promise<DriverModule> {
  const file = fileURLToPath(DRIVER_URL);
  if (!existsSync(file)) {
    throw new Unavailable(`driver not available: ${file} does not exist (lib/devices/net/virtio-net.ts not written or not built)`);
  }
  let mod: Partial<DriverModule>;
  try {
    mod = (await import(DRIVER_URL.href)) as Partial<DriverModule>;
  } catch (e) {
    throw new Unavailable(`driver not available: importing ${file} failed: ${(e as Error).message}`);
  }
  if (typeof mod.VirtioNet?.open !== 'function') {
    throw new Unavailable(`driver not available: ${file} exports no VirtioNet.open()`);
  }
  return mod as DriverModule;
}

function makeRxBurst(mod: DriverModule, net: VirtioNetLike, n: number): RxBurstLike {
  if (typeof mod.RxBurst === 'function') return new mod.RxBurst(n);
  if (typeof net.createRxBurst === 'function') return net.createRxBurst(n);
  throw new Unavailable('driver not available: no RxBurst export and no VirtioNet#createRxBurst() to make a receive burst');
}

/** Adds [sent, offered] to `out`. */
function txSlice(net: VirtioNetLike, frames: readonly Uint8Array[], burst: number, until: bigint, out: [number, number], offloads?: TxOffloads): void {
  let sent = 0;
  let offered = 0;
  do {
    for (let i = 0; i < BURSTS_PER_CHECK; i++) sent += net.sendBurst(frames, burst, 0, offloads);
    offered += BURSTS_PER_CHECK * burst;
  } while (process.hrtime.bigint() < until);
  out[0] += sent;
  out[1] += offered;
}

/**
 * txSlice for --tx-mode in-place: each frame's Ethernet/IPv4/UDP headers are
 * written into its TX slot and the payload left as the slot holds it, the
 * work DPDK's txonly does per packet (it copies its header template into
 * recycled mbufs). Adds [sent, offered] to `out`.
 */
function txSliceInPlace(net: VirtioNetLike, headers: Uint8Array, size: number, burst: number, until: bigint, out: [number, number], offloads?: TxOffloads): void {
  const fill = (frame: Uint8Array): number => {
    frame.set(headers);
    return size;
  };
  let sent = 0;
  let offered = 0;
  do {
    for (let i = 0; i < BURSTS_PER_CHECK; i++) sent += net.sendInPlace!(burst, fill, 0, offloads);
    offered += BURSTS_PER_CHECK * burst;
  } while (process.hrtime.bigint() < until);
  out[0] += sent;
  out[1] += offered;
}

/** Returns [packets, bytes]. */
function rxSlice(net: VirtioNetLike, rx: RxBurstLike, until: bigint, out: [number, number]): void {
  let packets = 0;
  let bytes = 0;
  do {
    for (let i = 0; i < BURSTS_PER_CHECK; i++) {
      const n = net.receiveBurst(0, rx);
      packets += n;
      const lengths = rx.lengths;
      for (let j = 0; j < n; j++) bytes += lengths[j]!;
    }
  } while (process.hrtime.bigint() < until);
  out[0] += packets;
  out[1] += bytes;
}

const SPECS = {
  socket: { type: 'string', valueName: 'PATH', description: 'vhost-user socket of the back-end' },
  direction: { type: 'enum', choices: ['tx', 'rx'], description: 'tx: send; rx: receive' },
  size: { type: 'number', integer: true, min: 60, max: 65535, default: 64, description: 'frame size (tx; above 9000 with --offload tso only)' },
  offload: { type: 'enum', choices: ['csum', 'tso'], description: 'tx: UDP frames with NEEDS_CSUM, or TCP GSO frames cut into 1448-byte segments' },
  burst: { type: 'number', integer: true, min: 1, max: 512, default: 32, description: 'frames per burst' },
  queueSize: { type: 'number', integer: true, min: 64, max: 32768, default: 1024, description: 'virtqueue size' },
  maxMs: { type: 'number', integer: true, min: 1, default: 120_000, description: 'hard stop if the parent never says stop' },
  txMode: { type: 'enum', choices: ['copy', 'in-place'], default: 'copy', description: 'tx: sendBurst of prepared frames, or sendInPlace writing headers only' },
  probe: { type: 'boolean', description: 'only check that the driver loads' },
  ringStats: { type: 'boolean', description: 'count reaps, publishes and kicks of the TX ring (ring-stats.ts); slows the loop a little' },
} as const satisfies OptionSpecs;

async function main(): Promise<number> {
  const { options: o } = parseArgs(SPECS, process.argv.slice(2));
  const mod = await loadDriver();
  if (o.probe) {
    emit({ type: 'probe', available: true });
    return 0;
  }
  if (!o.socket || !o.direction) throw new Error('--socket and --direction are required');

  let go!: () => void;
  const started = new Promise<void>((r) => (go = r));
  let stopRequested = false;
  let marks = 0;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const cmd = line.trim();
    if (cmd === 'go') go();
    else if (cmd === 'mark') marks++;
    else if (cmd === 'stop') {
      stopRequested = true;
      go();
    }
  });
  // The parent went away: stop at the next slice.
  rl.on('close', () => {
    stopRequested = true;
    go();
  });

  const counting = o.ringStats ? countingQueues() : null;
  const offload = o.offload;
  const net = await mod.VirtioNet.open(o.socket, {
    queuePairs: 1,
    queueSize: o.queueSize,
    ...(offload === 'tso' ? { tso: true } : offload === 'csum' ? { csum: true } : {}),
    ...(counting ? { createQueue: counting.createQueue } : {}),
  });
  try {
    // RFC 2544 benchmark addresses and the discard port, as DPDK's txonly sends.
    const endpoints = { srcIp: '198.18.0.1', dstIp: '198.18.0.2', srcPort: 9, dstPort: 9 };
    // Offloaded: the frame DPDK's frontend replays, with the pseudo-header sum only; one offload entry per burst slot.
    const frames = offload ? Array.from({ length: o.burst }, () => offloadFrame(offload, o.size, 'partial')) : Array.from({ length: o.burst }, (_, i) => buildUdpFrameOfSize(o.size, i, endpoints));
    const offloads = offload ? new TxOffloads(o.burst) : undefined;
    if (offloads) frames.forEach((f, i) => offloads.prepare(i, f, f.length, offload === 'tso' ? TSO_MSS : 0));
    const rx = o.direction === 'rx' ? makeRxBurst(mod, net, o.burst) : undefined;
    const inPlace = o.direction === 'tx' && o.txMode === 'in-place';
    if (inPlace && typeof net.sendInPlace !== 'function') throw new Unavailable('driver not available: VirtioNet has no sendInPlace() for --tx-mode in-place');
    // The Ethernet/IPv4/UDP headers, as txonly's template; payload bytes stay what the slot holds (zero at first).
    const headers = frames[0]!.subarray(0, offload === 'tso' ? 54 : 42);
    emit({ type: 'ready', info: { pid: process.pid, direction: o.direction, size: o.size, burst: o.burst, queueSize: o.queueSize } });
    await started;

    const hardStop = process.hrtime.bigint() + BigInt(o.maxMs) * 1_000_000n;
    const count: [number, number] = [0, 0];
    const tx: [number, number] = [0, 0];
    let idleSlices = 0;
    while (!stopRequested && process.hrtime.bigint() < hardStop) {
      const until = process.hrtime.bigint() + SLICE_NS;
      const before = count[0];
      if (rx) rxSlice(net, rx, until, count);
      else {
        if (inPlace) txSliceInPlace(net, headers, o.size, o.burst, until, tx, offloads);
        else txSlice(net, frames, o.burst, until, tx, offloads);
        count[0] = tx[0];
        count[1] = tx[0] * o.size;
      }
      if (count[0] === before) idleSlices++;
      for (; marks > 0; marks--) {
        emit({ type: 'mark', tNs: String(process.hrtime.bigint()), packets: count[0], bytes: count[1] });
      }
      await new Promise<void>((r) => setImmediate(r));
    }
    rl.close();
    emit({
      type: 'done',
      packets: count[0],
      bytes: count[1],
      ...(rx ? {} : { rejected: tx[1] - tx[0] }),
      idleSlices,
      stats: safeStats(net),
      // TX is ring 1 of pair 0 (virtio 1.2 §5.1.2).
      ...(counting && !rx ? { ringStats: counting.stats(1) } : {}),
    });
  } finally {
    await net.close();
  }
  return 0;
}

function safeStats(net: VirtioNetLike): unknown {
  try {
    return JSON.parse(JSON.stringify(net.stats ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
  } catch {
    return null;
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    const unavailable = e instanceof Unavailable;
    emit({ type: 'error', message: e instanceof Error ? e.message : String(e), ...(unavailable ? { unavailable } : {}) });
    process.exit(unavailable ? EXIT_UNAVAILABLE : 1);
  },
);
