/**
 * Driver side of a split virtqueue (virtio 1.2 §2.7) in guest memory.
 *
 * Memory ordering. JavaScript has no fence for non-shared memory, so the ordering
 * points of §2.7.13 use Atomics on views of the ring:
 *
 * - publishing avail.idx after the descriptors and ring entries (§2.7.13.1 "write
 *   barrier before updating idx") is an Atomics.store. V8 compiles it to a
 *   sequentially consistent store (x86-64: XCHG, a full barrier; arm64: STLR), and
 *   keeps the plain typed-array stores before it in program order;
 * - the full barrier between that store and reading used.flags / avail_event
 *   (§2.7.13.3, so the device's suppression is not read stale) comes from the same
 *   store: XCHG on x86-64; on arm64 an STLR followed by an LDAR (Atomics.load)
 *   cannot be reordered (ARMv8 release/acquire are RCsc);
 * - reading used.idx before the used elements (§2.7.14 "read barrier") is an
 *   Atomics.load: LDAR on arm64, a plain load on x86-64 where loads are not
 *   reordered with loads.
 *
 * What the queue trusts is its own bookkeeping, never ring memory the device can
 * write: the free-descriptor list, the per-head token, chain length and writable
 * byte count, and a shadow copy of each descriptor's `next`.
 *
 * Cache lines the device reads. The device polls avail.idx and reads descriptors and
 * avail entries from another core; every line this side writes must travel there
 * again. Free descriptors are handed out first-in first-out, so with a device that
 * completes in order (as DPDK's vhost does, IN_ORDER negotiated or not) the same
 * head comes back to the same avail slot with the same buffer, and a descriptor or
 * avail entry is written only when its value changes (compared with a private
 * copy, never read back from the ring). In steady state a publish then writes
 * avail.idx and nothing else of the ring.
 */
import type { VhostUserError } from '../errors.js';
import { splitRingLayout, VRING_AVAIL_RING, VRING_DESC_SIZE, type SplitRingLayout } from './split-layout.js';
import {
  ringError,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type Virtqueue,
  type VirtqueueAddresses,
  type VirtqueueOptions,
} from './virtqueue.js';

/** used.flags: the device does not want kicks (§2.7.10). */
export const VRING_USED_F_NO_NOTIFY = 1;
/** avail.flags: the driver does not want calls (§2.7.10). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

const TWO_32 = 0x100000000;

export class SplitVirtqueue implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly packed = false;
  readonly addresses: VirtqueueAddresses;
  readonly footprint: number;
  /** Where the descriptor table, avail ring and used ring are in guest memory. */
  readonly layout: SplitRingLayout;

  private readonly mask: number;
  private readonly eventIdx: boolean;
  /** Descriptor table as words: addr lo, addr hi, len, flags | next << 16. */
  private readonly desc: Uint32Array;
  /** avail: [flags, idx, ring[size], used_event]. */
  private readonly avail: Uint16Array;
  /** used as u16: [flags, idx, ..., avail_event at 2 + 4 * size]. */
  private readonly usedU16: Uint16Array;
  /** used as u32: element i is (id, len) at 1 + 2i, 2 + 2i. */
  private readonly usedU32: Uint32Array;
  private readonly availEventSlot: number;
  private readonly usedEventSlot: number;

  /** Free descriptors, first in first out: `freeTotal` of them from `freeHead` (mod size). */
  private readonly freeRing: Uint16Array;
  private freeHead = 0;
  private freeTotal: number;
  /** What this side last wrote to each descriptor (4 words), so unchanged words are not written again. */
  private readonly descShadow: Uint32Array;
  /** What this side last wrote to each avail.ring slot: the head made available at position p is availShadow[p % size]. */
  private readonly availShadow: Uint16Array;
  private readonly inOrder: boolean;
  private readonly nextShadow: Uint16Array;
  private readonly chainLength: Uint16Array;
  private readonly writableBytes: Float64Array;
  private readonly tokens: Uint32Array;
  private readonly inFlight: Uint8Array;
  /** The batch (publish generation) a head was added in: published once < `batch`. */
  private readonly addedIn: Float64Array;
  private outstandingCount = 0;
  /** Chains published and not yet returned: the most completions the device may write. */
  private visible = 0;
  private batch = 0;

  /** Indirect tables: one per head, `indirectMax` descriptors each. */
  private readonly indirectMax: number;
  private readonly indirectGpa: number;
  private readonly indirect: Uint32Array | null;

  private availIdx = 0;
  private publishedIdx = 0;
  private lastUsedIdx = 0;
  private brokenBy: VhostUserError | null = null;
  private readonly clampUsedLen: boolean;
  /** See VirtqueueOptions.clampUsedLen. */
  usedLenClamped = 0;

  /** Bytes of guest memory a queue of `size` needs from its ring GPA. */
  static footprint(size: number, indirectMax = 0): number {
    const layout = splitRingLayout(0, size);
    return alignUp(layout.end, 16) + size * indirectMax * VRING_DESC_SIZE;
  }

  constructor(options: VirtqueueOptions) {
    const { memory, size, ringGpa } = options;
    this.index = options.index;
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = options.eventIdx;
    this.clampUsedLen = options.clampUsedLen ?? false;
    this.layout = splitRingLayout(ringGpa, size);
    this.indirectMax = options.indirectMax ?? 0;
    this.indirectGpa = alignUp(this.layout.end, 16);
    this.footprint = SplitVirtqueue.footprint(size, this.indirectMax);
    this.addresses = { desc: this.layout.desc, driver: this.layout.avail, device: this.layout.used };

    const view = <T>(Ctor: new (b: ArrayBuffer, o: number, n: number) => T, gpa: number, bytes: number, unit: number): T => {
      const w = memory.window(gpa, bytes);
      return new Ctor(w.buffer, w.byteOffset, bytes / unit);
    };
    const usedBytes = alignUp(this.layout.end - this.layout.used, 4);
    this.desc = view(Uint32Array, this.layout.desc, size * VRING_DESC_SIZE, 4);
    this.avail = view(Uint16Array, this.layout.avail, VRING_AVAIL_RING + 2 * size + 2, 2);
    this.usedU16 = view(Uint16Array, this.layout.used, usedBytes, 2);
    this.usedU32 = view(Uint32Array, this.layout.used, usedBytes, 4);
    this.usedEventSlot = 2 + size;
    this.availEventSlot = 2 + 4 * size;
    this.indirect = this.indirectMax > 0 ? view(Uint32Array, this.indirectGpa, size * this.indirectMax * VRING_DESC_SIZE, 4) : null;

    this.freeRing = new Uint16Array(size);
    this.freeTotal = size;
    this.descShadow = new Uint32Array(size * 4);
    this.availShadow = new Uint16Array(size);
    this.inOrder = options.inOrder ?? false;
    this.nextShadow = new Uint16Array(size);
    this.chainLength = new Uint16Array(size);
    this.writableBytes = new Float64Array(size);
    this.tokens = new Uint32Array(size);
    this.inFlight = new Uint8Array(size);
    this.addedIn = new Float64Array(size);

    this.reset();
  }

  reset(): void {
    const size = this.size;
    for (let i = 0; i < size; i++) this.freeRing[i] = i;
    this.freeHead = 0;
    this.freeTotal = size;
    // The shadows mirror ring memory, which is zeroed below.
    this.descShadow.fill(0);
    this.availShadow.fill(0);
    this.inFlight.fill(0);
    this.outstandingCount = 0;
    this.visible = 0;
    this.availIdx = 0;
    this.publishedIdx = 0;
    this.lastUsedIdx = 0;
    this.brokenBy = null;
    this.desc.fill(0);
    this.avail.fill(0);
    this.usedU16.fill(0);
    if (this.indirect) this.indirect.fill(0);
    // Polling is the initial mode: no calls until enableInterrupts().
    this.avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
    if (this.eventIdx) this.avail[this.usedEventSlot] = 0x8000;
  }

  get freeCount(): number {
    return this.freeTotal;
  }

  get outstanding(): number {
    return this.outstandingCount;
  }

  get error(): VhostUserError | null {
    return this.brokenBy;
  }

  /** For split rings the base is the next avail index (vhost-user.rst, SET_VRING_BASE). */
  get vringBase(): number {
    return this.availIdx;
  }

  addBuffer(gpa: number, length: number, writable: boolean, token: number): boolean {
    this.checkUsable();
    if (this.freeTotal === 0) return false;
    const head = this.takeFree();
    this.writeRingDesc(head, gpa, length, writable ? VIRTQ_DESC_F_WRITE : 0, 0);
    this.chainLength[head] = 1;
    this.writableBytes[head] = writable ? length : 0;
    this.expose(head, token);
    return true;
  }

  addChain(gpas: ArrayLike<number>, lengths: ArrayLike<number>, count: number, readable: number, token: number): boolean {
    this.checkUsable();
    if (count < 1 || readable < 0 || readable > count) {
      throw ringError('VHOST_INVALID_ARGUMENT', this.index, `bad chain: ${count} segments, ${readable} readable`, 'virtio 1.2 §2.7.4');
    }
    if (count === 1) return this.addBuffer(gpas[0]!, lengths[0]!, readable === 0, token);
    let writable = 0;
    if (this.indirect !== null && count <= this.indirectMax) {
      if (this.freeTotal === 0) return false;
      const head = this.takeFree();
      const base = head * this.indirectMax;
      for (let i = 0; i < count; i++) {
        const w = i >= readable;
        if (w) writable += lengths[i]!;
        const flags = (w ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0);
        this.writeDesc(this.indirect, base + i, gpas[i]!, lengths[i]!, flags, i + 1 < count ? i + 1 : 0);
      }
      // §2.7.5.3.1: the ring descriptor of an indirect table is device-readable only.
      this.writeRingDesc(head, this.indirectGpa + base * VRING_DESC_SIZE, count * VRING_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.chainLength[head] = 1;
      this.writableBytes[head] = writable;
      this.expose(head, token);
      return true;
    }
    if (this.freeTotal < count) return false;
    // The chain takes the next `count` free descriptors in list order (ring order
    // with IN_ORDER, §2.7.5), each naming its successor.
    const mask = this.mask;
    const first = this.freeHead;
    const head = this.freeRing[first]!;
    let d = head;
    for (let i = 0; i < count; i++) {
      const w = i >= readable;
      if (w) writable += lengths[i]!;
      const last = i === count - 1;
      const next = last ? 0 : this.freeRing[(first + i + 1) & mask]!;
      this.writeRingDesc(d, gpas[i]!, lengths[i]!, (w ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), next);
      this.nextShadow[d] = next;
      d = next;
    }
    this.freeHead = (first + count) & mask;
    this.freeTotal -= count;
    this.chainLength[head] = count;
    this.writableBytes[head] = writable;
    this.expose(head, token);
    return true;
  }

  publish(): boolean {
    this.checkUsable();
    const newIdx = this.availIdx;
    const oldIdx = this.publishedIdx;
    if (newIdx === oldIdx) return false;
    Atomics.store(this.avail, 1, newIdx);
    this.visible += (newIdx - oldIdx) & 0xffff;
    this.batch++;
    this.publishedIdx = newIdx;
    if (this.eventIdx) {
      // §2.7.10.1 vring_need_event: kick iff avail_event lies in (old, new].
      const event = Atomics.load(this.usedU16, this.availEventSlot);
      return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }
    return (Atomics.load(this.usedU16, 0) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  resumeBase(): number {
    this.checkUsable();
    const usedIdx = Atomics.load(this.usedU16, 1);
    const done = (usedIdx - this.lastUsedIdx) & 0xffff;
    if (done > this.visible) {
      return this.fail(ringError('VHOST_RING_IDX_JUMP', this.index, `used.idx moved by ${done} with ${this.visible} published buffers outstanding`, 'virtio 1.2 §2.7.8: the device returns only buffers made available'));
    }
    return usedIdx;
  }

  hasUsed(): boolean {
    return Atomics.load(this.usedU16, 1) !== this.lastUsedIdx;
  }

  reap(tokens: Uint32Array, lengths: Uint32Array, max: number): number {
    this.checkUsable();
    const usedIdx = Atomics.load(this.usedU16, 1);
    const pending = (usedIdx - this.lastUsedIdx) & 0xffff;
    if (pending === 0) return 0;
    if (pending > this.visible) {
      return this.fail(ringError('VHOST_RING_IDX_JUMP', this.index, `used.idx moved by ${pending} with ${this.visible} published buffers outstanding`, 'virtio 1.2 §2.7.8: the device returns only buffers made available'));
    }
    const n = pending < max ? pending : max;
    if (this.inOrder) return this.reapInOrder(tokens, lengths, n, usedIdx);
    const size = this.size;
    let slot = this.lastUsedIdx;
    for (let i = 0; i < n; i++) {
      const e = 1 + 2 * (slot & this.mask);
      const id = this.usedU32[e]!;
      let len = this.usedU32[e + 1]!;
      if (id >= size) {
        return this.fail(ringError('VHOST_RING_ID_OUT_OF_RANGE', this.index, `used id ${id} with queue size ${size}`, 'virtio 1.2 §2.7.8: id is the head of a descriptor chain'));
      }
      // A head added since the last publish() was never given to the device.
      if (this.inFlight[id] === 0 || this.addedIn[id]! >= this.batch) {
        return this.fail(ringError('VHOST_RING_ID_NOT_OUTSTANDING', this.index, `used id ${id} is not outstanding`, 'virtio 1.2 §2.7.8: each buffer is used once'));
      }
      if (len > this.writableBytes[id]! && this.clampUsedLen) {
        this.usedLenClamped++;
        len = this.writableBytes[id]!;
      }
      if (len > this.writableBytes[id]!) {
        return this.fail(ringError('VHOST_RING_LEN_TOO_LARGE', this.index, `used len ${len} exceeds the ${this.writableBytes[id]} writable bytes of buffer ${id}`, 'virtio 1.2 §2.7.8.1: len is at most the writable length'));
      }
      tokens[i] = this.tokens[id]!;
      lengths[i] = len;
      this.release(id);
      slot = (slot + 1) & 0xffff;
    }
    this.lastUsedIdx = slot;
    return n;
  }

  enableInterrupts(): boolean {
    this.checkUsable();
    if (this.eventIdx) Atomics.store(this.avail, this.usedEventSlot, this.lastUsedIdx);
    else Atomics.store(this.avail, 0, 0);
    return this.hasUsed();
  }

  enableInterruptsAfter(count: number): boolean {
    if (!this.eventIdx || count <= 1) return this.enableInterrupts();
    this.checkUsable();
    // §2.7.10.2: the device calls once used idx moves past used_event, i.e. after the count-th completion.
    Atomics.store(this.avail, this.usedEventSlot, (this.lastUsedIdx + count - 1) & 0xffff);
    // Re-read after the store (a full barrier): a completion crossing used_event before the device could see it
    // brings no call, but shows here. Fewer than `count` waiting: the device has yet to cross it and will call.
    return ((Atomics.load(this.usedU16, 1) - this.lastUsedIdx) & 0xffff) >= count;
  }

  disableInterrupts(): void {
    this.avail[0] = VRING_AVAIL_F_NO_INTERRUPT;
    // With event index the flag is ignored (§2.7.10); park used_event half a ring-index space away.
    if (this.eventIdx) this.avail[this.usedEventSlot] = (this.lastUsedIdx + 0x8000) & 0xffff;
  }

  /**
   * In-order completions (§2.7.9): buffer k of the used ring is the k-th made
   * available, whatever the entry says, and a device may write only the last entry
   * of a batch, the skipped buffers counting as used completely. So a
   * device-readable buffer (TX) needs nothing from its entry and none is read: the
   * used-ring lines stay in the device's cache. A writable buffer needs its length:
   * an entry naming its head gives it; one naming another head was skipped (the
   * full writable length). The entry at used.idx - 1 ends a batch and must name its
   * head. What bounds the device stays: used.idx never passes the buffers published.
   */
  private reapInOrder(tokens: Uint32Array, lengths: Uint32Array, n: number, usedIdx: number): number {
    const mask = this.mask;
    const lastInBatch = (usedIdx - 1) & 0xffff;
    let pos = this.lastUsedIdx;
    for (let i = 0; i < n; i++) {
      const head = this.availShadow[pos & mask]!;
      const writable = this.writableBytes[head]!;
      let len = 0;
      if (writable > 0) {
        const e = 1 + 2 * (pos & mask);
        const id = this.usedU32[e]!;
        if (id === head) {
          len = this.usedU32[e + 1]!;
          if (len > writable) {
            return this.fail(ringError('VHOST_RING_LEN_TOO_LARGE', this.index, `used len ${len} exceeds the ${writable} writable bytes of buffer ${head}`, 'virtio 1.2 §2.7.8.1: len is at most the writable length'));
          }
        } else if (pos === lastInBatch) {
          return this.fail(ringError('VHOST_RING_ID_NOT_OUTSTANDING', this.index, `used entry ${pos} names id ${id}; in order it is buffer ${head}`, 'virtio 1.2 §2.7.9: the entry ending a batch names the last buffer of the batch'));
        } else {
          len = writable;
        }
      }
      tokens[i] = this.tokens[head]!;
      lengths[i] = len;
      this.release(head);
      pos = (pos + 1) & 0xffff;
    }
    this.lastUsedIdx = pos;
    return n;
  }

  private takeFree(): number {
    const d = this.freeRing[this.freeHead]!;
    this.freeHead = (this.freeHead + 1) & this.mask;
    this.freeTotal--;
    return d;
  }

  /** A descriptor of the ring's own table: only the words that changed since this side last wrote it are stored. */
  private writeRingDesc(d: number, gpa: number, length: number, flags: number, next: number): void {
    const w = d << 2;
    const s = this.descShadow;
    const table = this.desc;
    const lo = gpa >>> 0;
    const hi = (gpa / TWO_32) >>> 0;
    const fn = (flags | (next << 16)) >>> 0;
    if (s[w] !== lo) table[w] = s[w] = lo;
    if (s[w + 1] !== hi) table[w + 1] = s[w + 1] = hi;
    if (s[w + 2] !== length) table[w + 2] = s[w + 2] = length;
    if (s[w + 3] !== fn) table[w + 3] = s[w + 3] = fn;
  }

  private writeDesc(table: Uint32Array, d: number, gpa: number, length: number, flags: number, next: number): void {
    const w = d << 2;
    table[w] = gpa >>> 0;
    table[w + 1] = (gpa / TWO_32) >>> 0;
    table[w + 2] = length;
    table[w + 3] = flags | (next << 16);
  }

  private expose(head: number, token: number): void {
    this.tokens[head] = token;
    this.inFlight[head] = 1;
    this.addedIn[head] = this.batch;
    this.outstandingCount++;
    const slot = this.availIdx & this.mask;
    if (this.availShadow[slot] !== head) this.avail[2 + slot] = this.availShadow[slot] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  private release(head: number): void {
    this.inFlight[head] = 0;
    this.outstandingCount--;
    this.visible--;
    // Back in chain order at the tail: with in-order completions the list stays in ring order.
    const mask = this.mask;
    let d = head;
    for (let k = this.chainLength[head]!; k > 0; k--) {
      this.freeRing[(this.freeHead + this.freeTotal) & mask] = d;
      this.freeTotal++;
      d = this.nextShadow[d]!;
    }
  }

  private checkUsable(): void {
    if (this.brokenBy !== null) {
      throw ringError('VHOST_RING_BROKEN', this.index, `queue is broken (${this.brokenBy.code}: ${this.brokenBy.message})`, this.brokenBy.rule ?? '', this.brokenBy);
    }
  }

  private fail(error: VhostUserError): never {
    this.brokenBy = error;
    throw error;
  }
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
