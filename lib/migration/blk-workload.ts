/**
 * Block I/O across a migration: lanes of write-then-read-back requests, each
 * write stamped with its sequence number, so every request's completion and
 * every block's content can be checked on the destination (virtio 1.2 §5.2).
 *
 * Lane i owns the 4 KiB blocks b with b % LANES == i and a write and a read
 * buffer of its own (guest memory from the queue's bounce space), so writes
 * (driver-written buffers) and reads (device-written buffers) sit in areas the
 * verifier can tell apart.
 */
import { VirtioBlk, type VirtioBlkOptions } from '../devices/blk/virtio-blk.js';
import type { GuestBuffer } from '../devices/blk/blk-queue.js';
import { ringAreas, type MemoryArea } from './memory-map.js';
import type { ExactlyOnceReport, InFlightReport, MigrationWorkload, WorkloadHandOver, WorkloadHandOverSteps, WorkloadMarks } from './workload.js';
import { resumedCount } from '../devices/vring-setup.js';

const LANES = 16;
const BLOCK = 4096;
/** Blocks used: 4 MiB of the disk. */
const BLOCKS = 1024;

/** Stamped block I/O through a VirtioBlk, for migrate(). */
export class BlkWorkload implements MigrationWorkload {
  readonly kind = 'blk';
  private readonly writeBuf: GuestBuffer;
  private readonly readBuf: GuestBuffer;
  private readonly lanes: GuestBuffer[][];
  /** The sequence number last written to each block (-1: never). */
  private readonly written = new Float64Array(BLOCKS).fill(-1);
  private running = false;
  private stopping = false;
  private seq = 0;
  private submitted = 0;
  private completed = 0;
  private failed = 0;
  private mismatches = 0;
  private firstError: string | null = null;
  private wake: (() => void)[] = [];
  private lanesDone: Promise<void>[] = [];

  private constructor(
    /** The driver. */
    readonly blk: VirtioBlk,
  ) {
    const q = blk.queue(0);
    this.writeBuf = q.allocBuffer(LANES * BLOCK);
    this.readBuf = q.allocBuffer(LANES * BLOCK);
    const slice = (b: GuestBuffer, i: number): GuestBuffer => ({ gpa: b.gpa + i * BLOCK, length: BLOCK, bytes: b.bytes.subarray(i * BLOCK, (i + 1) * BLOCK) });
    this.lanes = Array.from({ length: LANES }, (_, i) => [slice(this.writeBuf, i), slice(this.readBuf, i)]);
  }

  /** Opens a VirtioBlk on `path` (it needs at least 4 MiB of disk). */
  static async open(path: string, options: VirtioBlkOptions): Promise<BlkWorkload> {
    const blk = await VirtioBlk.open(path, { ...options, heapBytes: 2 * LANES * BLOCK + 65536 });
    try {
      return new BlkWorkload(blk);
    } catch (e) {
      blk.close();
      throw e;
    }
  }

  get device(): VirtioBlk['device'] {
    return this.blk.device;
  }

  get submittedCount(): number {
    return this.submitted;
  }

  get completedCount(): number {
    return this.completed;
  }

  get announcements(): number {
    return 0;
  }

  areas(): MemoryArea[] {
    const out = ringAreas(this.blk.device, (i) => `requestq ${i}`);
    const a = this.blk.queue(0).areas();
    out.push({ ...a.headers, writer: 'driver', label: 'request headers of requestq 0', unit: 16, unitName: 'header' });
    out.push({ ...a.aux, writer: 'driver', label: 'request aux slots of requestq 0' });
    out.push({ ...a.status, writer: 'device', label: 'request status bytes of requestq 0', unit: 1, unitName: 'status byte' });
    out.push({ gpa: this.writeBuf.gpa, length: this.writeBuf.length, writer: 'driver', label: 'write data buffers', unit: BLOCK, unitName: 'lane' });
    out.push({ gpa: this.readBuf.gpa, length: this.readBuf.length, writer: 'device', label: 'read data buffers', unit: BLOCK, unitName: 'lane' });
    return out;
  }

  start(): void {
    this.running = true;
    this.lanesDone = this.lanes.map((_, i) => this.lane(i));
  }

  pause(): void {
    this.running = false;
  }

  resume(): void {
    this.running = true;
    for (const w of this.wake.splice(0)) w();
  }

  switchover(bases: readonly number[]): InFlightReport {
    // GET_VRING_BASE drains a blk ring (vhost-user.rst, "Starting and stopping rings"): nothing is taken and not completed.
    return { resumedOnDestination: this.blk.device.queues.map((q, i) => resumedCount(q.vq, bases[i]!)), takenNotDelivered: 0, outstanding: this.submitted - this.completed - this.failed };
  }

  async handOver(target: string, steps: WorkloadHandOverSteps): Promise<WorkloadHandOver> {
    const r = await this.blk.device.handOver(target, { afterStop: steps.afterStop, beforeStart: steps.beforeStart, keepOld: steps.keepOld });
    return { ms: r.ms, rarp: false, old: r.old };
  }

  private async gate(): Promise<boolean> {
    while (!this.running) {
      if (this.stopping) return false;
      await new Promise<void>((r) => this.wake.push(r));
    }
    return !this.stopping;
  }

  private async lane(i: number): Promise<void> {
    const [wbuf, rbuf] = this.lanes[i]!;
    let k = 0;
    while (await this.gate()) {
      const block = i + LANES * (k++ % (BLOCKS / LANES));
      const seq = this.seq++;
      stamp(wbuf!.bytes, seq, block);
      if (!(await this.request(() => this.blk.writeFrom(block * BLOCK, [wbuf!])))) return;
      this.written[block] = seq;
      if (!(await this.gate())) return;
      if (!(await this.request(() => this.blk.readInto(block * BLOCK, [rbuf!])))) return;
      if (!matches(rbuf!.bytes, seq, block)) this.mismatch(`block ${block}: read back something else than write ${seq}`);
    }
  }

  private async request(run: () => Promise<void>): Promise<boolean> {
    this.submitted++;
    try {
      await run();
      this.completed++;
      return true;
    } catch (e) {
      this.failed++;
      this.firstError ??= (e as Error).message;
      return false;
    }
  }

  private mismatch(what: string): void {
    this.mismatches++;
    this.firstError ??= what;
  }

  async finish(marks: WorkloadMarks): Promise<ExactlyOnceReport> {
    this.stopping = true;
    this.running = false;
    for (const w of this.wake.splice(0)) w();
    await Promise.all(this.lanesDone);
    // Every block read back once more on the destination: the last write to each must be there.
    const [, rbuf] = this.lanes[0]!;
    for (let b = 0; b < BLOCKS; b++) {
      const seq = this.written[b]!;
      if (seq < 0) continue;
      if (!(await this.request(() => this.blk.readInto(b * BLOCK, [rbuf!])))) break;
      if (!matches(rbuf!.bytes, seq, b)) this.mismatch(`block ${b}: the last write (${seq}) is not on the disk`);
    }
    return {
      ok: this.failed === 0 && this.mismatches === 0 && this.completed === this.submitted && this.submitted > 0,
      submitted: this.submitted,
      completed: this.completed,
      duplicates: 0,
      lost: this.submitted - this.completed,
      lostInFlight: 0,
      unexpectedLosses: [],
      lostRanges: [],
      marks,
      rule:
        'a blk ring is drained by GET_VRING_BASE, so no request may be lost; a request completed twice breaks the ring (VHOST_RING_ID_NOT_OUTSTANDING) and fails; ' +
        `every block's last write is read back on the destination (${this.mismatches} mismatches${this.firstError ? `; first problem: ${this.firstError}` : ''})`,
    };
  }

  close(): void {
    this.stopping = true;
    this.running = false;
    for (const w of this.wake.splice(0)) w();
    this.blk.close();
  }
}

/** Fills a block with its sequence number and block number, so a stale or misplaced block is seen. */
function stamp(b: Uint8Array, seq: number, block: number): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  for (let o = 0; o < b.length; o += 8) {
    dv.setUint32(o, seq, true);
    dv.setUint32(o + 4, block, true);
  }
}

function matches(b: Uint8Array, seq: number, block: number): boolean {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  for (let o = 0; o < b.length; o += 8) if (dv.getUint32(o, true) !== seq || dv.getUint32(o + 4, true) !== block) return false;
  return true;
}
