/**
 * Device side of a packed virtqueue: what a back-end does with a ring the driver
 * set up (virtio 1.2 §2.8). It serves the project's tests and its reference
 * back-end, and can write deliberately wrong used descriptors for fault injection.
 *
 * It is as strict with the driver as the driver is with it: a chain that runs
 * into a descriptor that is not available, a chain longer than the queue (a
 * loop), a readable descriptor after a writable one, INDIRECT together with NEXT,
 * INDIRECT inside a NEXT chain or inside an indirect table is refused with
 * VHOST_INVALID_PAYLOAD.
 *
 * Ordering mirrors the driver (see packed-queue.ts): the head's flags are read
 * with Atomics.load (acquire) before the rest of the chain; a used descriptor's
 * flags are written last with Atomics.store, which also orders that store before
 * the read of the Driver Event Suppression structure in needsCall().
 */
import type { DescSegment } from './split-device.js';
import { VhostUserError } from '../../errors.js';
import type { GuestMemoryAccess } from '../../memory/guest-memory-access.js';
import {
  PACKED_DESC_SIZE,
  PACKED_EVENT_WRAP,
  PACKED_QUEUE_MAX_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  type PackedRingLayout,
} from '../packed-layout.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../virtqueue.js';

const TWO_32 = 0x100000000;
const U32_MAX = 0xffffffff;

/** The same shape as the split model's segments. */
export type PackedDescSegment = DescSegment;

/** A descriptor chain the device took from a packed ring (virtio 1.2 §2.8.6), indirect tables followed. */
export interface PackedDeviceChain {
  /** Buffer id (from the last descriptor of the list, §2.8.6): what push() returns. */
  id: number;
  /** Ring slots the chain occupies: what push() skips. */
  descCount: number;
  /** Whether the ring descriptor pointed at an indirect table. */
  indirect: boolean;
  /** The chain's buffers in order, readable ones first. */
  segments: PackedDescSegment[];
  /** Sum of the readable segments' lengths. */
  readableBytes: number;
  /** Sum of the writable segments' lengths: the most `len` a completion may report. */
  writableBytes: number;
}

/**
 * The device side of a packed virtqueue over guest memory (virtio 1.2 §2.8): takes available
 * chains and writes used descriptors, validating what the driver wrote. Used by the reference
 * back-end and by tests that play the device.
 */
export class PackedDeviceQueue {
  /** Where the descriptor ring and the two event suppression areas are in guest memory. */
  readonly layout: PackedRingLayout;
  private readonly memory: GuestMemoryAccess;
  private readonly eventIdx: boolean;
  private readonly size: number;
  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  private readonly driverEvent32: Uint32Array;
  private readonly deviceEvent32: Uint32Array;
  private nextAvail: number;
  private availWrap: number;
  private nextUsed: number;
  private usedWrap: number;
  /** Descriptors marked used since the last needsCall(). */
  private usedSinceCall = 0;

  /**
   * `base`: the packed SET_VRING_BASE encoding to start from (bits 0-14 avail
   * slot, 15 avail wrap, 16-30 used slot, 31 used wrap); default a fresh ring.
   */
  constructor(memory: GuestMemoryAccess, layout: PackedRingLayout, options: { eventIdx: boolean; base?: number }) {
    this.memory = memory;
    this.layout = layout;
    this.eventIdx = options.eventIdx;
    const n = (this.size = layout.size);
    const d = memory.window(layout.desc, n * PACKED_DESC_SIZE);
    this.desc32 = new Uint32Array(d.buffer, d.byteOffset, n * 4);
    this.desc16 = new Uint16Array(d.buffer, d.byteOffset, n * 8);
    const drv = memory.window(layout.driver, 4);
    this.driverEvent32 = new Uint32Array(drv.buffer, drv.byteOffset, 1);
    const dev = memory.window(layout.device, 4);
    this.deviceEvent32 = new Uint32Array(dev.buffer, dev.byteOffset, 1);
    const base = options.base ?? 0x80008000;
    this.nextAvail = base & 0x7fff;
    this.availWrap = (base >>> 15) & 1;
    this.nextUsed = (base >>> 16) & 0x7fff;
    this.usedWrap = base >>> 31;
    if (this.nextAvail >= n || this.nextUsed >= n) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `vring base 0x${(base >>> 0).toString(16)} is outside a ring of ${n}`);
    }
  }

  /** The device's position, in the packed GET_VRING_BASE encoding. */
  get base(): number {
    return (this.nextAvail | (this.availWrap << 15) | (this.nextUsed << 16) | (this.usedWrap << 31)) >>> 0;
  }

  /** Slot the next available chain starts at. */
  get availSlot(): number {
    return this.nextAvail;
  }

  /**
   * The descriptor at ring `slot` as it is now, into `out` (addr, len, flags, id):
   * what an inflight area copies of a chain just taken, whose slots the device
   * has not overwritten yet.
   */
  readDesc(slot: number, out: { addr: number; len: number; flags: number; id: number }): void {
    const w = slot << 2;
    out.addr = this.desc32[w]! + this.desc32[w + 1]! * TWO_32;
    out.len = this.desc32[w + 2]!;
    out.id = this.desc16[(slot << 3) + 6]!;
    out.flags = Atomics.load(this.desc16, (slot << 3) + 7);
  }

  /** The flags of the descriptor at ring `slot` (read with acquire). */
  flagsAt(slot: number): number {
    return Atomics.load(this.desc16, (slot << 3) + 7);
  }

  /**
   * Resumes at `base` (the packed SET_VRING_BASE encoding): a device that picks up
   * after a predecessor whose chains between the used and the avail position are
   * still in flight (inflight resubmission).
   */
  restore(base: number): void {
    const avail = base & 0x7fff;
    const used = (base >>> 16) & 0x7fff;
    if (avail >= this.size || used >= this.size) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `vring base 0x${(base >>> 0).toString(16)} is outside a ring of ${this.size}`);
    }
    this.nextAvail = avail;
    this.availWrap = (base >>> 15) & 1;
    this.nextUsed = used;
    this.usedWrap = base >>> 31;
    this.usedSinceCall = 0;
    if (this.eventIdx) this.setAvailEvent(this.nextAvail, this.availWrap === 1);
  }

  /**
   * A chain rebuilt from copies of its ring descriptors (an inflight area's, in
   * ring order), checked like one popped from the ring: the same list rules,
   * indirect tables walked again, every buffer in mapped memory.
   */
  chainOf(descs: readonly { addr: number; len: number; flags: number; id: number }[]): PackedDeviceChain {
    const chain: PackedDeviceChain = { id: 0, descCount: 0, indirect: false, segments: [], readableBytes: 0, writableBytes: 0 };
    if (descs.length === 0 || descs.length > this.size) throw fault(`a list of ${descs.length} descriptors in a ring of ${this.size}`, '§2.8.17');
    for (const [k, d] of descs.entries()) {
      const last = k === descs.length - 1;
      if (((d.flags & VIRTQ_DESC_F_NEXT) !== 0) === last) throw fault(`descriptor ${k} of a list of ${descs.length} ${last ? 'has' : 'lacks'} NEXT`, '§2.8.6');
      chain.id = d.id;
      chain.descCount++;
      if (d.flags & VIRTQ_DESC_F_INDIRECT) {
        if (descs.length > 1) throw fault('an INDIRECT descriptor inside a NEXT list', '§2.8.19');
        chain.indirect = true;
        this.walkIndirect(d.addr, d.len, chain);
      } else {
        this.addSegment(chain, d.addr, d.len, (d.flags & VIRTQ_DESC_F_WRITE) !== 0);
      }
    }
    return chain;
  }

  /** Takes the next available chain, or null when the driver has made nothing new available. */
  pop(): PackedDeviceChain | null {
    const n = this.size;
    let slot = this.nextAvail;
    let wrap = this.availWrap;
    // §2.8.2: poll only the next slot; acquire its flags before the rest of the list.
    let flags = Atomics.load(this.desc16, (slot << 3) + 7);
    if (!isAvail(flags, wrap)) return null;
    const chain: PackedDeviceChain = { id: 0, descCount: 0, indirect: false, segments: [], readableBytes: 0, writableBytes: 0 };
    for (;;) {
      if (chain.descCount > 0) {
        flags = this.desc16[(slot << 3) + 7]!;
        if (!isAvail(flags, wrap)) throw fault(`the list continues into slot ${slot}, which is not available`, '§2.8.17');
      }
      const w = slot << 2;
      const gpa = this.desc32[w]! + this.desc32[w + 1]! * TWO_32;
      const len = this.desc32[w + 2]!;
      chain.id = this.desc16[(slot << 3) + 6]!;
      chain.descCount++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (flags & VIRTQ_DESC_F_NEXT) throw fault('INDIRECT and NEXT set together', '§2.8.19');
        if (chain.descCount > 1) throw fault('an INDIRECT descriptor inside a NEXT list', '§2.8.19');
        chain.indirect = true;
        this.walkIndirect(gpa, len, chain);
      } else {
        this.addSegment(chain, gpa, len, (flags & VIRTQ_DESC_F_WRITE) !== 0);
      }
      if (++slot === n) {
        slot = 0;
        wrap ^= 1;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (chain.descCount >= n) throw fault(`a list longer than the queue size ${n} (a loop)`, '§2.8.17');
    }
    this.nextAvail = slot;
    this.availWrap = wrap;
    // Like the split model: with event index, ask for a kick when the next descriptor is made available.
    if (this.eventIdx) this.setAvailEvent(slot, wrap === 1);
    return chain;
  }

  private walkIndirect(gpa: number, len: number, chain: PackedDeviceChain): void {
    if (len === 0 || len % PACKED_DESC_SIZE !== 0 || len / PACKED_DESC_SIZE > PACKED_QUEUE_MAX_SIZE) {
      throw fault(`indirect table of ${len} bytes`, '§2.8.7');
    }
    const table = this.memory.dataView(gpa, len);
    for (let off = 0; off < len; off += PACKED_DESC_SIZE) {
      const flags = table.getUint16(off + 14, true);
      // §2.8.7: WRITE is the only valid flag in a table (NEXT and the id are ignored); a nested table is refused.
      if (flags & VIRTQ_DESC_F_INDIRECT) throw fault('an indirect table holds an INDIRECT descriptor', '§2.8.7');
      this.addSegment(chain, Number(table.getBigUint64(off, true)), table.getUint32(off + 8, true), (flags & VIRTQ_DESC_F_WRITE) !== 0);
    }
  }

  private addSegment(chain: PackedDeviceChain, gpa: number, len: number, writable: boolean): void {
    if (!writable && chain.writableBytes > 0) throw fault('a device-readable descriptor after a device-writable one', '§2.8.17');
    this.memory.regionOf(gpa, len);
    if (chain.readableBytes + chain.writableBytes + len > U32_MAX) throw fault('a list of 2^32 bytes or more', '§2.7.5.1 (the split rule, kept for packed)');
    chain.segments.push({ gpa, len, writable });
    if (writable) chain.writableBytes += len;
    else chain.readableBytes += len;
  }

  /**
   * Marks buffer `id`, whose list took `descCount` slots, used with `writtenLen`
   * bytes written (WRITE is set when it is non-zero, §2.8.3), and skips the list
   * (§2.8.6). `id` and `writtenLen` are not checked: tests use them to lie.
   */
  push(id: number, descCount: number, writtenLen: number): void {
    if (!Number.isInteger(descCount) || descCount < 1 || descCount > this.size) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `descCount ${descCount} is not in 1..${this.size}`);
    }
    const bits = this.usedWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
    this.pushRaw(this.nextUsed, id, writtenLen, bits | (writtenLen !== 0 ? VIRTQ_DESC_F_WRITE : 0));
    let next = this.nextUsed + descCount;
    if (next >= this.size) {
      next -= this.size;
      this.usedWrap ^= 1;
    }
    this.nextUsed = next;
    this.usedSinceCall += descCount;
  }

  /**
   * Writes any descriptor at any slot, valid or not, id and len first and the
   * flags last with a release store; positions are not moved (fault injection).
   */
  pushRaw(slot: number, id: number, len: number, flags: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.size) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `slot ${slot} is not in 0..${this.size - 1}`);
    }
    this.desc32[(slot << 2) + 2] = len >>> 0;
    this.desc16[(slot << 3) + 6] = id & 0xffff;
    Atomics.store(this.desc16, (slot << 3) + 7, flags & 0xffff);
  }

  /** Flags a used descriptor at the current used slot must carry: AVAIL == USED == the device wrap counter (§2.8.1). */
  get usedFlags(): number {
    return this.usedWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
  }

  /** Slot where the next used descriptor goes. */
  get usedSlot(): number {
    return this.nextUsed;
  }

  /** Whether the driver wants a call for what was pushed since the last needsCall() (§2.8.10). */
  needsCall(): boolean {
    const since = this.usedSinceCall;
    this.usedSinceCall = 0;
    if (since === 0) return false;
    const event = Atomics.load(this.driverEvent32, 0);
    const flags = (event >>> 16) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const cycle = 2 * this.size;
    const off = event & 0x7fff;
    if (since >= cycle || off >= this.size) return true;
    // The event descriptor (offset, wrap) was used iff it lies in [old, now) on the 2 * size cycle.
    const now = position(this.nextUsed, this.usedWrap, this.size);
    const old = (now - since + cycle) % cycle;
    const at = position(off, (event & PACKED_EVENT_WRAP) !== 0 ? 1 : 0, this.size);
    return (at - old + cycle) % cycle < since;
  }

  /** Device Event Suppression flags: DISABLE (on) or ENABLE: whether the driver should kick. */
  setNoNotify(on: boolean): void {
    Atomics.store(this.deviceEvent32, 0, (on ? RING_EVENT_FLAGS_DISABLE : RING_EVENT_FLAGS_ENABLE) << 16);
  }

  /** Device Event Suppression DESC: kick me when the descriptor at (offset, wrap) is made available. */
  setAvailEvent(offset: number, wrap: boolean): void {
    Atomics.store(this.deviceEvent32, 0, ((RING_EVENT_FLAGS_DESC << 16) | (offset & 0x7fff) | (wrap ? PACKED_EVENT_WRAP : 0)) >>> 0);
  }
}

/** Available: AVAIL matches the wrap counter and USED does not (§2.8.1). */
function isAvail(flags: number, wrap: number): boolean {
  return ((flags >> 7) & 1) === wrap && ((flags >> 15) & 1) !== wrap;
}

function position(slot: number, wrap: number, size: number): number {
  return wrap === 1 ? slot : slot + size;
}

function fault(message: string, section: string): VhostUserError {
  return new VhostUserError('VHOST_INVALID_PAYLOAD', `driver broke the ring: ${message}`, { rule: `virtio 1.2 ${section}` });
}
