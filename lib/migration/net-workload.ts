/**
 * Net traffic across a migration: frames numbered in sequence go out on TX and
 * come back on RX (the reference back-end loops them back; dpdk-testpmd forwards
 * them with io or mac forwarding), so each one can be counted.
 *
 * The packet path allocates nothing: frames are written in place into TX slots
 * (sendInPlace with one fill function), received frames are read from one
 * reused burst, and the count of every sequence number lives in one Uint8Array.
 * At most half the RX ring is outstanding, so a forwarding back-end never finds
 * the RX ring full (testpmd drops such frames): a loss is then the migration's.
 */
import { RxBurst, type VirtioNet } from '../devices/net/virtio-net.js';
import { resumedCount } from '../devices/vring-setup.js';
import { ETHERTYPE_RARP, parseMac } from '../net/frame-builder.js';
import { ringAreas, type MemoryArea } from './memory-map.js';
import type { ExactlyOnceReport, InFlightReport, MigrationWorkload, WorkloadHandOver, WorkloadHandOverSteps, WorkloadMarks } from './workload.js';

/** Local experimental EtherType (IEEE 802 "local experimental 1"): these frames are ours. */
const ETHERTYPE_TEST = 0x88b5;
const MAGIC = 0x564d4947; // "VMIG"
const FRAME = 64;
const BURST = 32;
/** Most sequence numbers a run counts: sending stops there. */
const MAX_FRAMES = 1 << 22;

/** Sequence-numbered traffic through a VirtioNet, for migrate(). */
export class NetWorkload implements MigrationWorkload {
  readonly kind = 'net';
  private readonly seen = new Uint8Array(MAX_FRAMES);
  private sent = 0;
  private received = 0;
  private duplicates = 0;
  private rarp = 0;
  private running = false;
  private finishing = false;
  private timer: NodeJS.Immediate | null = null;
  private readonly burst = new RxBurst(64);
  private readonly window: number;
  /** Frames the source took from TX (completed) by the switchover: sequence numbers below this went through it. */
  private consumedBySource = -1;
  private readonly fill: (frame: Uint8Array, i: number) => number;
  private readonly mac: Uint8Array;
  private lastProgress = 0;
  private lastTick = 0;
  private credit = 0;

  /** @param net the driver whose traffic this is (closed by close()). */
  constructor(
    /** The driver. */
    readonly net: VirtioNet,
  ) {
    this.window = net.queueSize >> 1;
    this.mac = net.config?.mac ? parseMac(net.config.mac) : Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56);
    const mac = this.mac;
    this.fill = (frame) => {
      const seq = this.sent++;
      frame.set(mac, 0);
      frame[6] = 0x02;
      frame[7] = frame[8] = frame[9] = frame[10] = 0;
      frame[11] = 0x01;
      frame[12] = ETHERTYPE_TEST >> 8;
      frame[13] = ETHERTYPE_TEST & 0xff;
      frame[14] = MAGIC >>> 24;
      frame[15] = (MAGIC >>> 16) & 0xff;
      frame[16] = (MAGIC >>> 8) & 0xff;
      frame[17] = MAGIC & 0xff;
      frame[18] = seq >>> 24;
      frame[19] = (seq >>> 16) & 0xff;
      frame[20] = (seq >>> 8) & 0xff;
      frame[21] = seq & 0xff;
      return FRAME;
    };
  }

  get device(): VirtioNet['device'] {
    return this.net.device;
  }

  get submittedCount(): number {
    return this.sent;
  }

  get completedCount(): number {
    return this.received;
  }

  get announcements(): number {
    return this.rarp;
  }

  areas(): MemoryArea[] {
    const n = this.net;
    const out = ringAreas(n.device, (i) => `${i % 2 === 0 ? 'receiveq' : 'transmitq'} ${i >> 1}`);
    for (let q = 0; q < n.queuePairs; q++) {
      const b = n.bufferAreas(q);
      out.push({ gpa: b.tx.gpa, length: b.tx.length, writer: 'driver', label: `TX slots of queue pair ${q}` });
      out.push({ gpa: b.rx.gpa, length: b.merge.gpa - b.rx.gpa, writer: 'device', label: `queue pair ${q}`, unit: b.rxBufferSize, unitName: 'RX buffer' });
      out.push({ gpa: b.merge.gpa, length: b.merge.length, writer: 'driver', label: `RX merge area of queue pair ${q}` });
    }
    return out;
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  pause(): void {
    this.running = false;
    if (this.timer) clearImmediate(this.timer);
    this.timer = null;
  }

  resume(): void {
    this.running = true;
    this.lastProgress = Date.now();
    this.schedule();
  }

  switchover(bases: readonly number[]): InFlightReport {
    const { rx, tx } = this.net.queues(0);
    const txResumed = resumedCount(tx, bases[1]!);
    this.consumedBySource = this.sent - txResumed;
    const delivered = this.countBelow(this.consumedBySource);
    return { resumedOnDestination: [resumedCount(rx, bases[0]!), txResumed], takenNotDelivered: this.consumedBySource - delivered };
  }

  async handOver(target: string, steps: WorkloadHandOverSteps): Promise<WorkloadHandOver> {
    const r = await this.net.handOver(target, { afterStop: steps.afterStop, beforeStart: steps.beforeStart, keepOld: steps.keepOld, mac: this.mac });
    return { ms: r.ms, rarp: r.rarp, old: r.old };
  }

  private schedule(): void {
    if (this.timer === null && (this.running || this.finishing)) this.timer = setImmediate(this.tick);
  }

  private readonly tick = (): void => {
    this.timer = null;
    if (!this.running && !this.finishing) return;
    // A long gap between ticks is this process busy (a copy round), not frames lost: no credit for it.
    const now = Date.now();
    if (now - this.lastTick > 20) this.lastProgress = now;
    this.lastTick = now;
    this.receive();
    if (this.running) {
      // A frame lost for good leaves the window smaller; a quiet RX for 50 ms gives it back.
      const outstanding = this.sent - this.received - this.credit;
      if (outstanding > 0 && Date.now() - this.lastProgress > 50) this.credit += outstanding;
      const room = Math.min(BURST, this.window - (this.sent - this.received - this.credit), MAX_FRAMES - this.sent);
      if (room > 0) this.net.sendInPlace(room, this.fill);
    }
    this.schedule();
  };

  private receive(): void {
    const b = this.burst;
    for (let k = 0; k < 8; k++) {
      const n = this.net.receiveBurst(0, b);
      if (n === 0) return;
      this.lastProgress = Date.now();
      const buf = b.buffer;
      for (let i = 0; i < n; i++) {
        const o = b.offsets[i]!;
        const type = (buf[o + 12]! << 8) | buf[o + 13]!;
        if (type === ETHERTYPE_RARP) {
          this.rarp++;
          continue;
        }
        if (type !== ETHERTYPE_TEST || b.lengths[i]! < 22) continue;
        const magic = ((buf[o + 14]! << 24) | (buf[o + 15]! << 16) | (buf[o + 16]! << 8) | buf[o + 17]!) >>> 0;
        if (magic !== MAGIC) continue;
        const seq = ((buf[o + 18]! << 24) | (buf[o + 19]! << 16) | (buf[o + 20]! << 8) | buf[o + 21]!) >>> 0;
        if (seq >= MAX_FRAMES) continue;
        const c = this.seen[seq]!;
        if (c === 0) this.received++;
        else this.duplicates++;
        if (c < 255) this.seen[seq] = c + 1;
      }
    }
  }

  private countBelow(limit: number): number {
    let n = 0;
    for (let s = 0; s < limit; s++) if (this.seen[s] !== 0) n++;
    return n;
  }

  async finish(marks: WorkloadMarks): Promise<ExactlyOnceReport> {
    this.running = false;
    this.finishing = true;
    this.schedule();
    const deadline = Date.now() + 1500;
    let last = -1;
    let quietSince = Date.now();
    while (Date.now() < deadline && this.received + this.duplicates < this.sent) {
      await new Promise((r) => setTimeout(r, 10));
      if (this.received !== last) {
        last = this.received;
        quietSince = Date.now();
      } else if (Date.now() - quietSince > 200) break;
    }
    this.finishing = false;
    this.pause();
    return this.judge(marks);
  }

  /**
   * virtio-net promises no delivery (virtio 1.2 §5.1.6.2: the device may drop
   * frames), so a frame may be lost in one place only: the source had taken it
   * from the TX ring and completed it (its slot is free again, nobody can send it
   * anew) and had not put it on the RX ring when GET_VRING_BASE stopped that ring
   * (a back-end holding frames between dequeue and enqueue, as testpmd does,
   * drops them). Those are the frames below the TX base the source reported and
   * above the last frame it delivered (it delivers in order). Everything from
   * the TX base on was handed to the destination with SET_VRING_BASE and must
   * arrive; a gap below the last delivered frame is a drop mid-stream; any frame
   * counted twice is a duplicate. All of those fail the check.
   */
  private judge(marks: WorkloadMarks): ExactlyOnceReport {
    const consumed = this.consumedBySource < 0 ? this.sent : this.consumedBySource;
    let lastDelivered = -1;
    for (let s = consumed - 1; s >= 0; s--) {
      if (this.seen[s] !== 0) {
        lastDelivered = s;
        break;
      }
    }
    let lost = 0;
    let allowed = 0;
    const unexpected: number[] = [];
    const ranges: [number, number][] = [];
    for (let s = 0; s < this.sent; s++) {
      if (this.seen[s] !== 0) continue;
      lost++;
      const r = ranges.at(-1);
      if (r !== undefined && r[1] === s - 1) r[1] = s;
      else if (ranges.length < 20) ranges.push([s, s]);
      if (s > lastDelivered && s < consumed) allowed++;
      else if (unexpected.length < 20) unexpected.push(s);
    }
    return {
      ok: this.duplicates === 0 && lost === allowed && this.sent > 0,
      submitted: this.sent,
      completed: this.received,
      duplicates: this.duplicates,
      lost,
      lostInFlight: allowed,
      unexpectedLosses: unexpected,
      lostRanges: ranges,
      marks,
      rule: `frames ${lastDelivered + 1}..${consumed - 1} were taken by the source and not delivered before GET_VRING_BASE: a loss there is allowed (virtio-net may drop); any other loss or a duplicate fails`,
    };
  }

  close(): void {
    this.pause();
    this.net.close();
  }
}
