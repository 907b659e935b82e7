/**
 * Device side of a split virtqueue: what a back-end does with a ring the driver
 * set up (virtio 1.2 §2.7). It serves the project's tests and its reference
 * back-end, and can write deliberately wrong used entries for fault injection.
 *
 * It is as strict with the driver as the driver is with it: a head out of range,
 * a chain longer than the queue (a loop), a writable descriptor before a readable
 * one, a nested indirect table, or INDIRECT together with NEXT is refused.
 */
import { VhostUserError } from '../../errors.js';
import type { GuestMemoryAccess } from '../../memory/guest-memory-access.js';
import { VRING_DESC_SIZE, type SplitRingLayout } from '../split-layout.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../virtqueue.js';
import { VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY } from '../split-queue.js';

/** One descriptor of a chain as the device sees it (virtio 1.2 §2.7.5). */
export interface DescSegment {
  /** Guest physical address of the buffer. */
  gpa: number;
  /** Its length in bytes. */
  len: number;
  /** VIRTQ_DESC_F_WRITE: the device writes it (else it reads it). */
  writable: boolean;
}

/** A descriptor chain the device took from the avail ring, indirect tables followed. */
export interface DeviceChain {
  /** Head descriptor index: the id to return in the used ring. */
  head: number;
  /** The chain's buffers in order, readable ones first (§2.7.4). */
  segments: DescSegment[];
  /** Sum of the readable segments' lengths. */
  readableBytes: number;
  /** Sum of the writable segments' lengths: the most `len` a completion may report (§2.7.8.1). */
  writableBytes: number;
}

/**
 * The device side of a split virtqueue over guest memory: takes chains from the avail ring and
 * writes completions to the used ring, validating what the driver wrote. Used by the reference
 * back-end and by tests that play the device.
 */
export class SplitDeviceQueue {
  /** Where the ring's three areas are in guest memory. */
  readonly layout: SplitRingLayout;
  private readonly memory: GuestMemoryAccess;
  private readonly eventIdx: boolean;
  private readonly desc: DataView;
  private readonly avail: Uint16Array;
  private readonly used: Uint16Array;
  private readonly usedU32: Uint32Array;
  private lastAvailIdx: number;
  private usedIdx: number;
  private signalledUsed: number;

  constructor(memory: GuestMemoryAccess, layout: SplitRingLayout, options: { eventIdx: boolean; base?: number }) {
    this.memory = memory;
    this.layout = layout;
    this.eventIdx = options.eventIdx;
    const n = layout.num;
    this.desc = memory.dataView(layout.desc, n * VRING_DESC_SIZE);
    const a = memory.window(layout.avail, 4 + 2 * n + 2);
    this.avail = new Uint16Array(a.buffer, a.byteOffset, 2 + n + 1);
    const usedBytes = Math.ceil((layout.end - layout.used) / 4) * 4;
    const u = memory.window(layout.used, usedBytes);
    this.used = new Uint16Array(u.buffer, u.byteOffset, usedBytes / 2);
    this.usedU32 = new Uint32Array(u.buffer, u.byteOffset, usedBytes / 4);
    this.lastAvailIdx = options.base ?? 0;
    this.usedIdx = options.base ?? 0;
    this.signalledUsed = this.usedIdx;
  }

  /** Next avail index to be consumed: what GET_VRING_BASE reports. */
  get base(): number {
    return this.lastAvailIdx;
  }

  /** The used.idx this device last published. */
  get usedIndex(): number {
    return this.usedIdx;
  }

  /** Takes the next available chain, or null when the driver has published nothing new. */
  pop(): DeviceChain | null {
    const availIdx = Atomics.load(this.avail, 1);
    if (availIdx === this.lastAvailIdx) return null;
    const n = this.layout.num;
    if (((availIdx - this.lastAvailIdx) & 0xffff) > n) {
      throw fault(`avail.idx moved ${(availIdx - this.lastAvailIdx) & 0xffff} entries past a ring of ${n}`, '§2.7.6');
    }
    const head = this.avail[2 + (this.lastAvailIdx % n)]!;
    if (head >= n) throw fault(`head ${head} out of range for queue size ${n}`, '§2.7.6');
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    if (this.eventIdx) this.used[2 + 4 * n] = this.lastAvailIdx; // avail_event: kick me for the next one
    const chain: DeviceChain = { head, segments: [], readableBytes: 0, writableBytes: 0 };
    this.walk(this.desc, n, head, chain, false);
    return chain;
  }

  /** used.idx as it stands in guest memory (what a restarted device reads: vhost-user.rst, 'Inflight I/O tracking'). */
  ringUsedIdx(): number {
    return Atomics.load(this.used, 1);
  }

  /**
   * Resumes at `lastAvailIdx` with used.idx at `usedIdx`: a device that picks up
   * after a predecessor whose requests between the two are still in flight.
   */
  restore(lastAvailIdx: number, usedIdx: number): void {
    this.lastAvailIdx = lastAvailIdx & 0xffff;
    this.usedIdx = usedIdx & 0xffff;
    this.signalledUsed = this.usedIdx;
    if (this.eventIdx) this.used[2 + 4 * this.layout.num] = this.lastAvailIdx;
  }

  /** The chain whose head is `head`, read again from the descriptor table (inflight resubmission). */
  chainAt(head: number): DeviceChain {
    const n = this.layout.num;
    if (head >= n) throw fault(`head ${head} out of range for queue size ${n}`, '§2.7.6');
    const chain: DeviceChain = { head, segments: [], readableBytes: 0, writableBytes: 0 };
    this.walk(this.desc, n, head, chain, false);
    return chain;
  }

  private walk(table: DataView, tableSize: number, first: number, chain: DeviceChain, nested: boolean): void {
    let i = first;
    for (let seen = 0; ; seen++) {
      if (seen >= tableSize) throw fault(`descriptor chain from ${first} is longer than its table (a loop)`, '§2.7.5.2');
      const off = i * VRING_DESC_SIZE;
      const gpa = Number(table.getBigUint64(off, true));
      const len = table.getUint32(off + 8, true);
      const flags = table.getUint16(off + 12, true);
      const next = table.getUint16(off + 14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (nested) throw fault('an indirect table holds an INDIRECT descriptor', '§2.7.5.3.1');
        if (flags & VIRTQ_DESC_F_NEXT) throw fault('INDIRECT and NEXT set together', '§2.7.5.3.1');
        if (len === 0 || len % VRING_DESC_SIZE !== 0) throw fault(`indirect table of ${len} bytes`, '§2.7.5.3.1');
        this.walk(this.memory.dataView(gpa, len), len / VRING_DESC_SIZE, 0, chain, true);
        return;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && chain.writableBytes > 0) throw fault('a device-readable descriptor after a device-writable one', '§2.7.4.2');
      this.memory.regionOf(gpa, len);
      chain.segments.push({ gpa, len, writable });
      if (writable) chain.writableBytes += len;
      else chain.readableBytes += len;
      if (!(flags & VIRTQ_DESC_F_NEXT)) return;
      if (next >= tableSize) throw fault(`next ${next} out of range`, '§2.7.5');
      i = next;
    }
  }

  /** Returns a chain with `len` bytes written into it. */
  push(head: number, len: number): void {
    this.pushRaw(head, len);
  }

  /** Writes any used entry, valid or not, and publishes it (fault injection uses this directly). */
  pushRaw(id: number, len: number): void {
    const slot = this.usedIdx % this.layout.num;
    this.usedU32[1 + 2 * slot] = id >>> 0;
    this.usedU32[2 + 2 * slot] = len >>> 0;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    Atomics.store(this.used, 1, this.usedIdx);
  }

  /** Moves used.idx without writing entries (fault injection: an index that jumps). */
  setUsedIdx(idx: number): void {
    this.usedIdx = idx & 0xffff;
    Atomics.store(this.used, 1, this.usedIdx);
  }

  /** Whether the driver wants a call for what was pushed since the last call (§2.7.10). */
  needsCall(): boolean {
    const newIdx = this.usedIdx;
    const old = this.signalledUsed;
    this.signalledUsed = newIdx;
    if (newIdx === old) return false;
    if (this.eventIdx) {
      const event = Atomics.load(this.avail, 2 + this.layout.num);
      return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
    }
    return (Atomics.load(this.avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Sets or clears used.flags NO_NOTIFY (without event index): whether the driver should kick. */
  setNoNotify(on: boolean): void {
    Atomics.store(this.used, 0, on ? VRING_USED_F_NO_NOTIFY : 0);
  }

  /** Sets avail_event directly (event-index fault injection and tests). */
  setAvailEvent(idx: number): void {
    Atomics.store(this.used, 2 + 4 * this.layout.num, idx & 0xffff);
  }
}

function fault(message: string, section: string): VhostUserError {
  return new VhostUserError('VHOST_INVALID_PAYLOAD', `driver broke the ring: ${message}`, { rule: `virtio 1.2 ${section}` });
}
