/**
 * `npm run bench:switch`: zero-loss throughput of a vhost-user switch, RFC 2544 style
 * (section 26.1 throughput, 26.2 latency), port to port: Open vSwitch with DPDK
 * (`in_port=1,actions=output:2`) and, as the baseline, dpdk-testpmd with two vhost-user
 * ports in io forwarding. Two VirtioNet drivers in this process are the VMs: one sends
 * into port 1, the other receives from port 2.
 *
 * Per frame size: one unpaced trial (loss at full rate, and the highest rate the sender
 * can offer), then a binary search between 0 and that rate for the highest offered rate
 * at which a trial loses no frame. Every frame carries the trial number, its sequence
 * number and the time it was sent (performance.now(), in the payload), so frames of an
 * earlier trial arriving late are not counted and latency is measured on the frames of the
 * best zero-loss trial (min, mean, p99).
 *
 * The sender and receiver are one Node thread pinned to core 0 (they alternate: send what
 * is due, then receive what arrived); the switch's PMD thread polls on core 1. On a 2-core machine that
 * is the whole machine: these numbers are bounded by it, not by the switch.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { isUsageError, parseArgs, type OptionSpecs } from '../lib/cli/args.js';
import { RxBurst, VirtioNet } from '../lib/devices/net/virtio-net.js';
import { findExecutable, stopAll } from '../lib/launch/backend-process.js';
import { startTestpmd } from '../lib/launch/dpdk-testpmd.js';
import { ovsDpdkInstalled, startOvs } from '../lib/launch/ovs.js';
import { buildUdpFrameOfSize, UDP_FRAME_OVERHEAD } from '../lib/net/frame-builder.js';
import { waitForQuiet } from './bench/cpu.js';

const options = {
  sizes: { type: 'string', default: '64,1500', valueName: 'LIST', description: 'frame sizes in bytes, comma-separated' },
  trialMs: { type: 'number', integer: true, min: 50, default: 300, valueName: 'MS', description: 'length of one trial (RFC 2544 asks for 60 s; short by default)' },
  steps: { type: 'number', integer: true, min: 1, max: 20, default: 7, valueName: 'N', description: 'binary search steps' },
  queueSize: { type: 'number', integer: true, min: 64, max: 8192, default: 256, valueName: 'N', description: "ring entries of the sender; the receiver's rings have 4 times as many" },
  switches: { type: 'string', default: 'ovs,testpmd', valueName: 'LIST', description: 'which switches: ovs, testpmd' },
  maxForeignPct: { type: 'number', min: 0, default: 30, valueName: 'PCT', description: 'before each switch starts, wait (up to --quiet-wait-ms) until other programs use at most this much CPU' },
  quietWaitMs: { type: 'number', integer: true, min: 0, default: 60_000, valueName: 'MS', description: 'how long to wait for that' },
  unpinned: { type: 'boolean', description: 'do not pin the drivers to core 0 (the scheduler may then put them beside the PMD)' },
  json: { type: 'boolean', description: 'print one JSON document' },
} as const satisfies OptionSpecs;

/** Payload layout after the Ethernet/IPv4/UDP headers: trial u32, sequence u32, send time f64 (ms, performance.now()). */
const TRIAL_OFF = UDP_FRAME_OVERHEAD;
const SEQ_OFF = TRIAL_OFF + 4;
const TS_OFF = TRIAL_OFF + 8;
const BURST = 32;
/**
 * After a trial's last frame, frames still in the switch may arrive (RFC 2544 §23 waits 2 s):
 * the drain ends when every frame is back, after DRAIN_QUIET_MS without one, or at DRAIN_MAX_MS.
 * On a shared machine the switch's PMD thread can be off its core for tens of milliseconds:
 * frames it then forwards late are late, not lost.
 */
const DRAIN_QUIET_MS = 300;
const DRAIN_MAX_MS = 2000;
/** Latency samples kept per trial (frames beyond this are counted but not timed). */
const MAX_SAMPLES = 1 << 21;

interface TrialResult {
  offeredMpps: number;
  sent: number;
  received: number;
  /** Sorted latencies in µs of the received frames (up to MAX_SAMPLES). */
  latencies: Float64Array;
}

interface SideResult {
  zeroLossMpps: number;
  fullRateLossPct: number;
  /** The rate the sender reached unpaced (the search's upper bound). */
  fullRateMpps: number;
  latencyUs: { min: number; mean: number; p99: number };
}

function progress(msg: string): void {
  process.stderr.write(`[bench:switch] ${msg}\n`);
}

/** Two drivers on a two-port switch: send into `tx`, receive from `rx`. */
class Rig {
  private trial = 0;
  private readonly burst = new RxBurst(64);
  private readonly samples = new Float64Array(MAX_SAMPLES);
  private readonly f64 = new Float64Array(1);
  private readonly f64Bytes = new Uint8Array(this.f64.buffer);
  private readonly template: Uint8Array;
  /**
   * TX slots (their frame areas, one stable view per slot) that hold this rig's template: a
   * slot keeps what was written to it, so only the trial, sequence and time are rewritten
   * (as DPDK's txonly rewrites only the headers of its recycled mbufs).
   */
  private readonly primed = new WeakSet<Uint8Array>();

  constructor(
    private readonly tx: VirtioNet,
    private readonly rx: VirtioNet,
    readonly frameSize: number,
  ) {
    this.template = buildUdpFrameOfSize(frameSize, 0, { srcMac: '02:00:00:00:0b:01', dstMac: '02:00:00:00:0b:02' });
  }

  /** One trial at `mpps` (Infinity: unpaced) for `ms`, then a drain. */
  async run(mpps: number, ms: number): Promise<TrialResult> {
    const trial = ++this.trial;
    const tx = this.tx;
    const size = this.frameSize;
    const template = this.template;
    const perMs = mpps * 1000;
    let sent = 0;
    let received = 0;
    let samples = 0;
    const t0 = performance.now();
    let now = t0;
    const receive = () => {
      const n = this.rx.receiveBurst(0, this.burst);
      const b = this.burst;
      const t = performance.now();
      for (let i = 0; i < n; i++) {
        const o = b.offsets[i]!;
        const buf = b.buffer;
        if (b.lengths[i] !== size || readU32(buf, o + TRIAL_OFF) !== trial) continue;
        received++;
        if (samples < MAX_SAMPLES) {
          this.f64Bytes.set(buf.subarray(o + TS_OFF, o + TS_OFF + 8));
          this.samples[samples++] = (t - this.f64[0]!) * 1000;
        }
      }
    };
    let spins = 0;
    while ((now = performance.now()) - t0 < ms) {
      const due = Math.min(BURST, Number.isFinite(perMs) ? Math.floor((now - t0) * perMs) - sent : BURST);
      if (due > 0) {
        this.f64[0] = now;
        sent += tx.sendInPlace(due, (frame) => {
          if (!this.primed.has(frame)) {
            frame.set(template);
            this.primed.add(frame);
          }
          writeU32(frame, TRIAL_OFF, trial);
          writeU32(frame, SEQ_OFF, sent);
          frame.set(this.f64Bytes, TS_OFF);
          return size;
        });
      }
      receive();
      if (++spins % 1024 === 0) await new Promise((r) => setImmediate(r));
    }
    const drainStart = performance.now();
    let lastArrival = drainStart;
    while (received < sent) {
      const before = received;
      receive();
      const t = performance.now();
      if (received !== before) lastArrival = t;
      else if (t - lastArrival > DRAIN_QUIET_MS || t - drainStart > DRAIN_MAX_MS) break;
      await new Promise((r) => setImmediate(r));
    }
    const latencies = this.samples.slice(0, samples).sort();
    return { offeredMpps: sent / (ms * 1000), sent, received, latencies };
  }
}

function readU32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

function latencyOf(l: Float64Array): SideResult['latencyUs'] {
  if (l.length === 0) return { min: NaN, mean: NaN, p99: NaN };
  let sum = 0;
  for (const x of l) sum += x;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { min: r(l[0]!), mean: r(sum / l.length), p99: r(l[Math.min(l.length - 1, Math.floor(l.length * 0.99))]!) };
}

/** RFC 2544 §26.1: full-rate trial, then the binary search for the highest zero-loss rate. */
async function measure(rig: Rig, label: string, trialMs: number, steps: number): Promise<SideResult> {
  // Warm-up: the switch learns, the rings fill once, the JIT compiles the loop.
  await rig.run(Infinity, Math.min(trialMs, 200));
  const full = await rig.run(Infinity, trialMs);
  if (full.received === 0) throw new Error(`${label}: no frame came through at all (${full.sent} sent)`);
  const fullLoss = (100 * (full.sent - full.received)) / full.sent;
  progress(`${label} ${rig.frameSize} B: full rate ${full.offeredMpps.toFixed(3)} Mpps offered, ${fullLoss.toFixed(2)}% lost`);
  let best: TrialResult | null = fullLoss === 0 ? full : null;
  let lo = 0;
  let hi = full.offeredMpps;
  if (!best) {
    for (let s = 0; s < steps; s++) {
      const rate = (lo + hi) / 2;
      const t = await rig.run(rate, trialMs);
      const lost = t.sent - t.received;
      progress(`${label} ${rig.frameSize} B: ${rate.toFixed(3)} Mpps: ${lost} of ${t.sent} lost`);
      if (lost === 0) {
        lo = rate;
        best = t;
      } else hi = rate;
    }
  }
  return {
    zeroLossMpps: best ? Math.round(best.offeredMpps * 1000) / 1000 : 0,
    fullRateLossPct: Math.round(fullLoss * 100) / 100,
    fullRateMpps: Math.round(full.offeredMpps * 1000) / 1000,
    latencyUs: latencyOf(best?.latencies ?? full.latencies),
  };
}

/**
 * The receiver's RX ring must hold every frame that can be in flight towards it: when the
 * switch's PMD thread is off its core for a few milliseconds (another program on core 1),
 * the sender fills its whole TX ring meanwhile, and the PMD, once back, forwards all of it
 * at once. With an RX ring no larger than the TX ring (less the buffers the receiver is
 * still reading) the switch drops whole bursts even at 30,000 frames/s; four times the TX
 * ring loses none at 1 Mpps on the same machine.
 */
const RX_RING_FACTOR = 4;

async function openPair(txSocket: string, rxSocket: string, queueSize: number): Promise<[VirtioNet, VirtioNet]> {
  const tx = await VirtioNet.open(txSocket, { queueSize });
  try {
    return [tx, await VirtioNet.open(rxSocket, { queueSize: queueSize * RX_RING_FACTOR })];
  } catch (e) {
    tx.close();
    throw e;
  }
}

async function benchOvs(sizes: number[], o: { trialMs: number; steps: number; queueSize: number }): Promise<Map<number, SideResult>> {
  if (!ovsDpdkInstalled()) throw new Error('OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)');
  // pmd-maxsleep 0: the PMD busy-polls as testpmd does (an idle PMD that sleeps up to 10 ms
  // would put its sleep into the latency of a paced trial).
  const ovs = await startOvs({ ports: [{ name: 'p1', ofport: 1 }, { name: 'p2', ofport: 2 }], pmdMaxSleepUs: 0 });
  const out = new Map<number, SideResult>();
  try {
    await ovs.replaceFlows(['in_port=1,actions=output:2', 'in_port=2,actions=output:1']);
    const [tx, rx] = await openPair(ovs.socketPath('p1'), ovs.socketPath('p2'), o.queueSize);
    try {
      await ovs.waitLink('p1');
      await ovs.waitLink('p2');
      for (const size of sizes) out.set(size, await measure(new Rig(tx, rx, size), 'ovs', o.trialMs, o.steps));
    } finally {
      tx.close();
      rx.close();
    }
  } catch (e) {
    throw new Error(`OVS: ${(e as Error).message}\n${await ovs.logs(10)}`);
  } finally {
    await ovs.stop();
  }
  return out;
}

async function benchTestpmd(sizes: number[], o: { trialMs: number; steps: number; queueSize: number }): Promise<Map<number, SideResult>> {
  const pmd = await startTestpmd({ forwardMode: 'io', ports: 2 });
  const out = new Map<number, SideResult>();
  try {
    const [tx, rx] = await openPair(pmd.socketPaths[0]!, pmd.socketPaths[1]!, o.queueSize);
    try {
      for (const size of sizes) out.set(size, await measure(new Rig(tx, rx, size), 'testpmd', o.trialMs, o.steps));
    } finally {
      tx.close();
      rx.close();
    }
  } catch (e) {
    throw new Error(`testpmd: ${(e as Error).message}\n${pmd.process.outputTail(10)}`);
  } finally {
    await pmd.stop();
  }
  return out;
}

/**
 * Pins this process (all its threads) to core 0. Left to the scheduler, the busy driver
 * thread now and then lands on core 1 beside the switch's PMD thread: both then get half a
 * core in time slices of milliseconds, and a whole run measures that (seen here: OVS 64 B
 * at 0.018 Mpps with 5 ms minimum latency, against 1 Mpps and 15 µs pinned).
 */
function pinToCore0(): void {
  const taskset = findExecutable('taskset');
  if (!taskset) throw new Error('taskset (util-linux) is needed to keep the drivers off the switch core');
  execFileSync(taskset, ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
}

async function main(): Promise<number> {
  const parsed = parseArgs(options, process.argv.slice(2), { where: 'bench:switch' });
  const args = parsed.options;
  if (parsed.help) {
    process.stdout.write('npm run bench:switch -- [--sizes 64,1500] [--trial-ms 300] [--steps 7] [--queue-size 256] [--switches ovs,testpmd] [--unpinned] [--json]\n');
    return 0;
  }
  const sizes = args.sizes.split(',').map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 64 || s > 2000)) throw new Error(`--sizes: 64..2000 bytes each, got ${args.sizes}`);
  const switches = args.switches.split(',');
  if (switches.some((s) => s !== 'ovs' && s !== 'testpmd')) throw new Error(`--switches: ovs and/or testpmd, got ${args.switches}`);
  const o = { trialMs: args.trialMs, steps: args.steps, queueSize: args.queueSize };
  if (!args.unpinned) pinToCore0();
  const loadBefore = os.loadavg()[0]!;
  const results: Record<string, Map<number, SideResult>> = {};
  /** Other programs' CPU use (% of one CPU) measured just before each switch started. */
  const foreignPct: Record<string, number | null> = {};
  /** The 1-minute load average just before each switch started. */
  const loadAtStart: Record<string, number> = {};
  const quiet = async (name: string) => {
    const pct = await waitForQuiet(args.maxForeignPct, {
      timeoutMs: args.quietWaitMs,
      onBusy: (p, top) => progress(`${name}: other programs use ${p.toFixed(0)}% CPU (${top.join(', ')}); waiting up to ${args.quietWaitMs / 1000} s`),
    });
    foreignPct[name] = pct === null ? null : Math.round(pct);
    loadAtStart[name] = Math.round(os.loadavg()[0]! * 100) / 100;
  };
  if (switches.includes('ovs')) {
    await quiet('ovs');
    results['ovs'] = await benchOvs(sizes, o);
  }
  if (switches.includes('testpmd')) {
    await quiet('testpmd');
    results['testpmd'] = await benchTestpmd(sizes, o);
  }
  const cases = sizes.map((frameSize) => ({ frameSize, ...Object.fromEntries(Object.entries(results).map(([k, m]) => [k, m.get(frameSize)])) }));
  const machine = {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? null,
    loadavg1: Math.round(loadBefore * 100) / 100,
    pinned: !args.unpinned,
    otherProgramsCpuPct: foreignPct,
    loadavg1AtStart: loadAtStart,
    note: 'sender and receiver: one Node thread pinned to core 0; switch PMD: core 1 (OVS pmd-cpu-mask=0x2, testpmd -l 0-1); 2 cores are the whole machine, shared with whatever else runs',
  };
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ trialMs: o.trialMs, machine, cases }, null, 2)}\n`);
  } else {
    const others = Object.entries(foreignPct).map(([k, v]) => `${k} ${v ?? '?'}%`).join(', ');
    process.stdout.write(`bench:switch, ${o.trialMs} ms trials, ${machine.cpus} CPUs, load ${machine.loadavg1}, other programs' CPU at start: ${others}; ${machine.note}\n`);
    process.stdout.write('size  switch   zero-loss Mpps  full-rate Mpps  loss at full rate  latency µs min/mean/p99\n');
    for (const c of cases) {
      for (const k of Object.keys(results)) {
        const r = (c as unknown as Record<string, SideResult>)[k]!;
        process.stdout.write(
          `${String(c.frameSize).padStart(4)}  ${k.padEnd(8)} ${r.zeroLossMpps.toFixed(3).padStart(14)}  ${r.fullRateMpps.toFixed(3).padStart(14)}  ${`${r.fullRateLossPct.toFixed(2)}%`.padStart(17)}  ${r.latencyUs.min}/${r.latencyUs.mean}/${r.latencyUs.p99}\n`,
        );
      }
    }
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (e: unknown) => {
    await stopAll(1000);
    process.stderr.write(`bench:switch: ${isUsageError(e) ? '' : 'failed: '}${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
