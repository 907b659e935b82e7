/**
 * An in-process virtio-blk device for unit tests of BlkQueue: real memfd guest
 * memory, the real driver rings, and the project's device-side ring models
 * (SplitDeviceQueue, PackedDeviceQueue) serving requests against a Uint8Array
 * disk. Knobs let a test make the device misbehave: hold requests (never
 * complete), answer a status, report a wrong used length, complete out of order.
 */
import { SECTOR_SIZE } from '../../lib/devices/blk/blk-config.js';
import { BlkQueue, type BlkCompletionMode, type BlkQueueOptions } from '../../lib/devices/blk/blk-queue.js';
import type { BlkLimits } from '../../lib/devices/blk/blk-request.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import { PackedDeviceQueue } from '../../lib/virtqueue/device/packed-device.js';
import { SplitDeviceQueue, type DescSegment } from '../../lib/virtqueue/device/split-device.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import type { Virtqueue } from '../../lib/virtqueue/virtqueue.js';

export const T_IN = 0;
export const T_OUT = 1;
export const T_FLUSH = 4;
export const T_GET_ID = 8;
export const T_DISCARD = 11;
export const T_WRITE_ZEROES = 13;

export interface SeenRequest {
  type: number;
  sector: number;
  /** Segment lengths as the device saw them, header and status included. */
  segments: number[];
  /** DISCARD / WRITE_ZEROES segments. */
  ranges: { sector: number; sectors: number; flags: number }[];
}

export interface ModelOptions {
  ring?: 'split' | 'packed';
  size?: number;
  limits?: Partial<BlkLimits>;
  diskBytes?: number;
  mode?: BlkCompletionMode;
  /** Serve automatically (on kicks in interrupt mode, on a timer in poll mode). Default true. */
  auto?: boolean;
  queue?: Partial<BlkQueueOptions>;
  indirectMax?: number;
  clampUsedLen?: boolean;
}

export function defaultLimits(diskBytes: number, over: Partial<BlkLimits> = {}): BlkLimits {
  return {
    capacity: diskBytes / SECTOR_SIZE,
    blkSize: 512,
    sizeMax: 0,
    segMax: 0,
    readOnly: false,
    flush: true,
    discard: { maxSectors: 32768, maxSeg: 1 },
    writeZeroes: { maxSectors: 32768, maxSeg: 1, mayUnmap: true },
    ...over,
  };
}

type Chain = { key: number; descCount: number; segments: DescSegment[] };

export class BlkModel {
  readonly memory: GuestMemory;
  readonly vq: Virtqueue;
  readonly queue: BlkQueue;
  readonly disk: Uint8Array;
  readonly seen: SeenRequest[] = [];
  readonly kickFd: EventFd;
  readonly callFd: EventFd;
  /** Requests popped and not yet completed (held or reordered). */
  readonly held: { chain: Chain; written: number }[] = [];
  /** Hold every request instead of completing it. */
  hold = false;
  /** Status to answer instead of the real one (null: real). */
  forceStatus: number | null = null;
  /** Used length to report instead of the real one. */
  lenOverride: ((type: number, real: number, chainWritable: number) => number) | null = null;
  /** Complete what was popped in one serve() in reverse order. */
  reverse = false;
  flushes = 0;
  private split: SplitDeviceQueue | null;
  private packed: PackedDeviceQueue | null;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: ModelOptions = {}) {
    const size = options.size ?? 64;
    const diskBytes = options.diskBytes ?? 1024 * 1024;
    this.disk = new Uint8Array(diskBytes);
    this.memory = GuestMemory.create({ size: 16 * 1024 * 1024 });
    const indirectMax = options.indirectMax ?? 0;
    const vqOptions = { memory: this.memory, index: 0, size, ringGpa: 0, eventIdx: true, indirectMax, clampUsedLen: options.clampUsedLen };
    if (options.ring === 'packed') {
      const vq = new PackedVirtqueue(vqOptions);
      this.vq = vq;
      this.packed = new PackedDeviceQueue(this.memory, vq.layout, { eventIdx: true });
      this.split = null;
    } else {
      const vq = new SplitVirtqueue(vqOptions);
      this.vq = vq;
      this.split = new SplitDeviceQueue(this.memory, vq.layout, { eventIdx: true });
      this.packed = null;
    }
    this.kickFd = new EventFd();
    this.callFd = new EventFd();
    const areaGpa = Math.ceil(this.vq.footprint / 4096) * 4096;
    const mode = options.mode ?? 'poll';
    this.queue = new BlkQueue({
      memory: this.memory,
      vq: this.vq,
      areaGpa,
      heapBytes: 4 * 1024 * 1024,
      limits: defaultLimits(diskBytes, options.limits),
      kick: () => this.kickFd.signal(),
      call: this.callFd,
      mode,
      maxSegments: indirectMax > 0 ? indirectMax - 2 : undefined,
      ...options.queue,
    });
    if (options.auto ?? true) {
      this.kickFd.watch(() => this.serve());
      // Poll mode: the driver does not kick when the device asked not to be kicked; serve on a timer as well.
      this.timer = setInterval(() => this.serve(), 1);
    }
  }

  /** Pops every available request and completes it (unless held); returns how many were popped. */
  serve(): number {
    const popped: { chain: Chain; written: number }[] = [];
    for (;;) {
      const chain = this.pop();
      if (chain === null) break;
      popped.push({ chain, written: this.execute(chain) });
    }
    if (this.hold) {
      this.held.push(...popped);
      return popped.length;
    }
    if (this.reverse) popped.reverse();
    for (const p of popped) this.complete(p.chain, p.written);
    return popped.length;
  }

  /** Completes every held request. */
  release(): void {
    for (const p of this.held.splice(0)) this.complete(p.chain, p.written);
  }

  /**
   * A new ring in the same place, as after a reconnect: the driver's new
   * virtqueue and a fresh device queue on it. Held requests are forgotten (the
   * old device died with them).
   */
  replaceRing(ring: 'split' | 'packed' = this.split ? 'split' : 'packed'): Virtqueue {
    this.held.splice(0);
    const vqOptions = { memory: this.memory, index: 0, size: this.vq.size, ringGpa: 0, eventIdx: true };
    if (ring === 'packed') {
      const vq = new PackedVirtqueue(vqOptions);
      this.packed = new PackedDeviceQueue(this.memory, vq.layout, { eventIdx: true });
      this.split = null;
      return vq;
    }
    const vq = new SplitVirtqueue(vqOptions);
    this.split = new SplitDeviceQueue(this.memory, vq.layout, { eventIdx: true });
    this.packed = null;
    return vq;
  }

  /** A fresh device on the same ring memory, from base 0 (the driver resets its ring in place: BlkQueue.rebind). */
  replaceDevice(): void {
    this.held.splice(0);
    if (this.split) this.split = new SplitDeviceQueue(this.memory, this.split.layout, { eventIdx: true });
    else this.packed = new PackedDeviceQueue(this.memory, this.packed!.layout, { eventIdx: true });
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.queue.close();
    this.kickFd.close();
    this.callFd.close();
    this.memory.close();
  }

  private pop(): Chain | null {
    if (this.split) {
      const c = this.split.pop();
      return c && { key: c.head, descCount: 1, segments: c.segments };
    }
    const c = this.packed!.pop();
    return c && { key: c.id, descCount: c.descCount, segments: c.segments };
  }

  private complete(chain: Chain, written: number): void {
    const writable = chain.segments.reduce((a, s) => a + (s.writable ? s.len : 0), 0);
    const type = this.typeOf(chain);
    const len = this.lenOverride ? this.lenOverride(type, written, writable) : written;
    if (this.split) {
      this.split.push(chain.key, len);
      if (this.split.needsCall()) this.callFd.signal();
    } else {
      this.packed!.push(chain.key, chain.descCount, len);
      if (this.packed!.needsCall()) this.callFd.signal();
    }
  }

  private typeOf(chain: Chain): number {
    return this.memory.dataView(chain.segments[0]!.gpa, 4).getUint32(0, true);
  }

  /** Runs the request against the disk; returns the bytes written into the chain. */
  private execute(chain: Chain): number {
    const segs = chain.segments;
    const header = this.memory.dataView(segs[0]!.gpa, 16);
    const type = header.getUint32(0, true);
    const sector = Number(header.getBigUint64(8, true));
    const data = segs.slice(1, -1);
    const statusSeg = segs[segs.length - 1]!;
    const seen: SeenRequest = { type, sector, segments: segs.map((s) => s.len), ranges: [] };
    this.seen.push(seen);
    let status = 0;
    let written = 1;
    const total = data.reduce((a, s) => a + s.len, 0);
    const pos = sector * SECTOR_SIZE;
    if (type === T_IN || type === T_OUT) {
      if (pos + total > this.disk.length) status = 1;
      else {
        let at = pos;
        for (const s of data) {
          const g = this.memory.bytes(s.gpa, s.len);
          if (type === T_IN) g.set(this.disk.subarray(at, at + s.len));
          else this.disk.set(g, at);
          at += s.len;
        }
        if (type === T_IN) written += total;
      }
    } else if (type === T_FLUSH) {
      this.flushes++;
    } else if (type === T_GET_ID) {
      const id = new TextEncoder().encode('blk-model');
      const g = this.memory.bytes(data[0]!.gpa, 20);
      g.fill(0);
      g.set(id);
      written += 20;
    } else if (type === T_DISCARD || type === T_WRITE_ZEROES) {
      const table = this.memory.dataView(data[0]!.gpa, data[0]!.len);
      for (let o = 0; o < data[0]!.len; o += 16) {
        const r = { sector: Number(table.getBigUint64(o, true)), sectors: table.getUint32(o + 8, true), flags: table.getUint32(o + 12, true) };
        seen.ranges.push(r);
        // Discarded bytes read back as zeroes in this model, as with qemu-storage-daemon on a raw file.
        this.disk.fill(0, r.sector * SECTOR_SIZE, (r.sector + r.sectors) * SECTOR_SIZE);
      }
    } else {
      status = 2;
    }
    this.memory.bytes(statusSeg.gpa, 1)[0] = this.forceStatus ?? status;
    return written;
  }
}
