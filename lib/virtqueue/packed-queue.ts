/**
 * Driver side of a packed virtqueue (virtio 1.2 §2.8) in guest memory.
 *
 * Memory ordering. JavaScript has no fence for memory that is not a
 * SharedArrayBuffer, and the ring is an ArrayBuffer aliasing mmap'd guest RAM.
 * The ordering points of §2.8.21 and §2.8.22 therefore use Atomics on views of
 * the ring:
 *
 * - the publishing store, the flags of the first descriptor of a batch
 *   (§2.8.21.1 "memory barrier before the flags update"), is Atomics.store on a
 *   Uint16Array. V8 compiles it to a sequentially consistent store (x86-64: XCHG,
 *   itself a full barrier; arm64: STLR) and keeps the plain typed-array stores of
 *   the descriptors before it in its effect chain, so they are visible first;
 * - the full barrier between that store and reading the Device Event Suppression
 *   structure (§2.8.21.3.1) is the same store: XCHG on x86-64; on arm64 an STLR
 *   followed by an LDAR (Atomics.load) is not reordered (ARMv8 release/acquire
 *   are RCsc). enableInterrupts() does the same: store the driver event, then load
 *   the next used descriptor's flags, so a completion that raced the enable is seen;
 * - the device's flags of the next used descriptor are read with Atomics.load, an
 *   acquire (arm64: LDAR; x86-64: a plain MOV, ordered under TSO), before its id
 *   and len (§2.8.22 "read memory barrier").
 *
 * Flags are accessed as u16, the size the device writes them with (QEMU and DPDK
 * store `flags` alone, as le16): an acquire load that is the same size as the
 * release store it pairs with is well defined, a u32 load straddling `id` and
 * `flags` would be a mixed-size access. The id of the batch head costs one
 * extra plain u16 store, written before the flags. Event suppression structures
 * are read and written as one u32 so `desc` and `flags` form one snapshot, as
 * Linux does. Typed arrays use host byte order; virtio 1.x rings are little
 * endian, like every host Node runs this library on (x86-64, arm64).
 *
 * Batches. addBuffer/addChain write every descriptor, flags included, except the
 * flags of the first descriptor added since the last publish(). The device polls
 * only that slot (§2.8.2) and reads in ring order (§2.8.12), so the whole batch
 * stays invisible until publish() stores those flags: one barrier per batch, the
 * deferral §2.8.21.1 describes for multi-descriptor requests.
 *
 * What the queue trusts is its own bookkeeping, never ring memory the device can
 * write: per buffer id the token, the descriptor count of its chain (how far to
 * skip, §2.8.6), its writable bytes, whether it is in flight and in which batch
 * it was added; the free-id stack; and its positions and wrap counters.
 */
import type { VhostUserError } from '../errors.js';
import {
  packedRingLayout,
  PACKED_DESC_SIZE,
  PACKED_EVENT_WRAP,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  type PackedRingLayout,
} from './packed-layout.js';
import {
  ringError,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type Virtqueue,
  type VirtqueueAddresses,
  type VirtqueueOptions,
} from './virtqueue.js';

const TWO_32 = 0x100000000;
const U32_MAX = 0xffffffff;
const AVAIL_USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
/** u16 index of `id` and `flags` within a descriptor (8 u16 per descriptor). */
const ID16 = 6;
const FLAGS16 = 7;

export class PackedVirtqueue implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly packed = true;
  readonly addresses: VirtqueueAddresses;
  readonly footprint: number;
  /** Where the descriptor ring and the driver and device event suppression areas are in guest memory. */
  readonly layout: PackedRingLayout;

  private readonly eventIdx: boolean;
  /** Descriptor ring as u32 words: addr lo, addr hi, len, id | flags << 16. */
  private readonly desc32: Uint32Array;
  /** The same ring as u16, for `id` (6) and `flags` (7) of each descriptor. */
  private readonly desc16: Uint16Array;
  /** Driver Event Suppression (ours): desc | flags << 16, and the same as u16. */
  private readonly driverEvent32: Uint32Array;
  private readonly driverEvent16: Uint16Array;
  /** Device Event Suppression (the device's): desc | flags << 16. */
  private readonly deviceEvent32: Uint32Array;

  /** Indirect tables: one per buffer id, `indirectMax` descriptors each. */
  private readonly indirectMax: number;
  private readonly indirectGpa: number;
  private readonly indirect: Uint32Array | null;

  // Per buffer id.
  private readonly freeIds: Uint16Array;
  private freeTop: number;
  private readonly tokens: Uint32Array;
  private readonly descCount: Uint16Array;
  private readonly writable: Float64Array;
  private readonly inFlight: Uint8Array;
  /** The batch (publish generation) an id was added in: published once < `batch`. */
  private readonly addedIn: Float64Array;

  private freeSlots: number;
  private outstandingCount = 0;
  /** Chains published and not yet returned: the most completions the device may write. */
  private visible = 0;
  private pendingChains = 0;
  private batch = 0;

  private nextAvail = 0;
  private availWrap = 1;
  /** AVAIL/USED bits for descriptors made available in the current lap (§2.8.1). */
  private availBits = VIRTQ_DESC_F_AVAIL;
  private nextUsed = 0;
  private usedWrap = 1;
  /** First descriptor of the unpublished batch, -1 when none, and its flags. */
  private pendingHead = -1;
  private pendingFlags = 0;
  /** Ring position (see `position`) at the last publish(). */
  private publishedPos = 0;
  private driverFlags = RING_EVENT_FLAGS_DISABLE;
  private brokenBy: VhostUserError | null = null;
  private readonly clampUsedLen: boolean;
  /** See VirtqueueOptions.clampUsedLen. */
  usedLenClamped = 0;

  /** Bytes of guest memory a queue of `size` needs from its ring GPA. */
  static footprint(size: number, indirectMax = 0): number {
    const layout = packedRingLayout(0, size);
    return alignUp(layout.end, 16) + size * indirectMax * PACKED_DESC_SIZE;
  }

  constructor(options: VirtqueueOptions) {
    const { memory, size, ringGpa } = options;
    const indirectMax = options.indirectMax ?? 0;
    if (!Number.isInteger(indirectMax) || indirectMax < 0 || indirectMax > 32768) {
      throw ringError('VHOST_INVALID_ARGUMENT', options.index, `indirectMax ${indirectMax} is not in 0..32768`, 'virtio 1.2 §2.8.7');
    }
    this.index = options.index;
    this.size = size;
    this.eventIdx = options.eventIdx;
    this.clampUsedLen = options.clampUsedLen ?? false;
    this.layout = packedRingLayout(ringGpa, size);
    this.indirectMax = indirectMax;
    this.indirectGpa = alignUp(this.layout.end, 16);
    this.footprint = PackedVirtqueue.footprint(size, indirectMax);
    this.addresses = { desc: this.layout.desc, driver: this.layout.driver, device: this.layout.device };

    const view = <T>(Ctor: new (b: ArrayBuffer, o: number, n: number) => T, gpa: number, bytes: number, unit: number): T => {
      const w = memory.window(gpa, bytes);
      return new Ctor(w.buffer, w.byteOffset, bytes / unit);
    };
    this.desc32 = view(Uint32Array, this.layout.desc, size * PACKED_DESC_SIZE, 4);
    this.desc16 = view(Uint16Array, this.layout.desc, size * PACKED_DESC_SIZE, 2);
    this.driverEvent32 = view(Uint32Array, this.layout.driver, 4, 4);
    this.driverEvent16 = view(Uint16Array, this.layout.driver, 4, 2);
    this.deviceEvent32 = view(Uint32Array, this.layout.device, 4, 4);
    this.indirect = indirectMax > 0 ? view(Uint32Array, this.indirectGpa, size * indirectMax * PACKED_DESC_SIZE, 4) : null;

    this.freeIds = new Uint16Array(size);
    this.freeTop = size;
    this.freeSlots = size;
    this.tokens = new Uint32Array(size);
    this.descCount = new Uint16Array(size);
    this.writable = new Float64Array(size);
    this.inFlight = new Uint8Array(size);
    this.addedIn = new Float64Array(size);

    this.reset();
  }

  reset(): void {
    const size = this.size;
    for (let i = 0; i < size; i++) this.freeIds[i] = size - 1 - i;
    this.freeTop = size;
    this.freeSlots = size;
    this.inFlight.fill(0);
    this.outstandingCount = 0;
    this.visible = 0;
    this.pendingChains = 0;
    this.nextAvail = 0;
    this.availWrap = 1;
    this.availBits = VIRTQ_DESC_F_AVAIL;
    this.nextUsed = 0;
    this.usedWrap = 1;
    this.pendingHead = -1;
    this.pendingFlags = 0;
    this.publishedPos = 0;
    this.driverFlags = RING_EVENT_FLAGS_DISABLE;
    this.brokenBy = null;
    // §2.8.13: the descriptor ring is zero-initialized. Polling is the initial mode.
    this.desc32.fill(0);
    this.deviceEvent32[0] = RING_EVENT_FLAGS_ENABLE;
    Atomics.store(this.driverEvent32, 0, RING_EVENT_FLAGS_DISABLE << 16);
  }

  get freeCount(): number {
    return this.freeSlots;
  }

  get outstanding(): number {
    return this.outstandingCount;
  }

  get error(): VhostUserError | null {
    return this.brokenBy;
  }

  /**
   * Packed encoding for SET_VRING_BASE (vhost-user.rst): bits 0-14 next avail
   * slot, 15 avail wrap counter, 16-30 next used slot, 31 used wrap counter.
   * This is where the device resumes only when nothing is outstanding (a fresh
   * or drained ring); otherwise resend what GET_VRING_BASE returned.
   */
  get vringBase(): number {
    return (this.nextAvail | (this.availWrap << 15) | (this.nextUsed << 16) | (this.usedWrap << 31)) >>> 0;
  }

  addBuffer(gpa: number, length: number, writable: boolean, token: number): boolean {
    this.checkUsable();
    this.checkSegment(gpa, length);
    this.checkToken(token);
    if (this.freeSlots === 0) return false;
    const id = this.freeIds[--this.freeTop]!;
    this.putDesc(gpa, length, writable ? VIRTQ_DESC_F_WRITE : 0, id);
    this.track(id, 1, writable ? length : 0, token);
    return true;
  }

  addChain(gpas: ArrayLike<number>, lengths: ArrayLike<number>, count: number, readable: number, token: number): boolean {
    this.checkUsable();
    if (!Number.isInteger(count) || count < 1 || !Number.isInteger(readable) || readable < 0 || readable > count || count > gpas.length || count > lengths.length) {
      throw ringError('VHOST_INVALID_ARGUMENT', this.index, `bad chain: ${count} segments, ${readable} readable`, 'virtio 1.2 §2.8.5');
    }
    this.checkToken(token);
    if (count === 1) return this.addBuffer(gpas[0]!, lengths[0]!, readable === 0, token);
    let total = 0;
    let writable = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i]!;
      this.checkSegment(gpas[i]!, len);
      total += len;
      if (i >= readable) writable += len;
    }
    if (total > U32_MAX) {
      throw ringError('VHOST_INVALID_ARGUMENT', this.index, `chain of ${total} bytes`, 'virtio 1.2 §2.7.5.1: at most 2^32 bytes per chain (the split rule, kept for packed)');
    }
    const indirect = this.indirect;
    if (indirect !== null && count <= this.indirectMax) {
      if (this.freeSlots === 0) return false;
      const id = this.freeIds[--this.freeTop]!;
      const base = id * this.indirectMax;
      // §2.8.7: entries are sequential; WRITE is the only valid flag and the id is reserved.
      for (let i = 0; i < count; i++) {
        const w = (base + i) << 2;
        const gpa = gpas[i]!;
        indirect[w] = gpa >>> 0;
        indirect[w + 1] = (gpa / TWO_32) >>> 0;
        indirect[w + 2] = lengths[i]!;
        indirect[w + 3] = i >= readable ? VIRTQ_DESC_F_WRITE << 16 : 0;
      }
      this.putDesc(this.indirectGpa + base * PACKED_DESC_SIZE, count * PACKED_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, id);
      this.track(id, 1, writable, token);
      return true;
    }
    if (count > this.size) {
      throw ringError('VHOST_INVALID_ARGUMENT', this.index, `chain of ${count} descriptors in a ring of ${this.size}`, 'virtio 1.2 §2.8.17: no list longer than the queue size');
    }
    if (this.freeSlots < count) return false;
    const id = this.freeIds[--this.freeTop]!;
    // §2.8.6: consecutive slots, NEXT on all but the last, the same id in each
    // (the spec needs it in the last; Linux writes it everywhere).
    for (let i = 0; i < count; i++) {
      const flags = (i >= readable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0);
      this.putDesc(gpas[i]!, lengths[i]!, flags, id);
    }
    this.track(id, count, writable, token);
    return true;
  }

  publish(): boolean {
    this.checkUsable();
    const head = this.pendingHead;
    if (head < 0) return false;
    // The release: everything written since the last publish becomes visible with these flags (§2.8.21.1).
    Atomics.store(this.desc16, (head << 3) + FLAGS16, this.pendingFlags);
    this.pendingHead = -1;
    this.batch++;
    this.visible += this.pendingChains;
    this.pendingChains = 0;
    const old = this.publishedPos;
    const now = this.position(this.nextAvail, this.availWrap);
    this.publishedPos = now;
    // §2.8.21.3.1: read the device's suppression only after the flags store (a full barrier, see top).
    const event = Atomics.load(this.deviceEvent32, 0);
    const flags = (event >>> 16) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    // §2.8.10: kick iff the descriptor at (offset, wrap) was made available by this publish,
    // i.e. its position lies in [old, now) on the 2 * size cycle of (slot, wrap counter).
    const off = event & 0x7fff;
    if (off >= this.size) return true; // nonsense offset: a spurious kick is harmless, a lost one hangs
    const at = this.position(off, (event & PACKED_EVENT_WRAP) !== 0 ? 1 : 0);
    const cycle = 2 * this.size;
    return (at - old + cycle) % cycle < (now - old + cycle) % cycle;
  }

  resumeBase(): number {
    this.checkUsable();
    // Walk the used descriptors not yet reaped, by our own chain lengths (§2.8.6), without consuming them.
    let slot = this.nextUsed;
    let wrap = this.usedWrap;
    for (let seen = 0; ; seen++) {
      const flags = Atomics.load(this.desc16, (slot << 3) + FLAGS16);
      if (((flags >> 7) & 1) !== wrap || ((flags >> 15) & 1) !== wrap) break;
      const id = this.desc16[(slot << 3) + ID16]!;
      if (seen >= this.visible || id >= this.size || this.inFlight[id] === 0) {
        return this.fail(ringError('VHOST_RING_IDX_JUMP', this.index, `used descriptor at slot ${slot} (id ${id}) beyond the ${this.visible} buffers outstanding`, 'virtio 1.2 §2.8.22: the device returns only buffers made available'));
      }
      slot += this.descCount[id]!;
      if (slot >= this.size) {
        slot -= this.size;
        wrap ^= 1;
      }
    }
    return (slot | (wrap << 15) | (slot << 16) | (wrap << 31)) >>> 0;
  }

  hasUsed(): boolean {
    this.checkUsable();
    return this.usedAt(this.nextUsed);
  }

  reap(tokens: Uint32Array, lengths: Uint32Array, max: number): number {
    this.checkUsable();
    const limit = Math.min(max, tokens.length, lengths.length);
    const size = this.size;
    let n = 0;
    while (n < limit) {
      const slot = this.nextUsed;
      // §2.8.22: acquire the flags before reading id and len.
      const flags = Atomics.load(this.desc16, (slot << 3) + FLAGS16);
      const w = this.usedWrap;
      if (((flags >> 7) & 1) !== w || ((flags >> 15) & 1) !== w) break;
      if (this.visible === 0) {
        return this.fail(ringError('VHOST_RING_IDX_JUMP', this.index, `used descriptor at slot ${slot} with no buffer outstanding`, 'virtio 1.2 §2.8.22: the device returns only buffers made available'));
      }
      const id = this.desc16[(slot << 3) + ID16]!;
      if (id >= size) {
        return this.fail(ringError('VHOST_RING_ID_OUT_OF_RANGE', this.index, `used id ${id} with queue size ${size}`, 'virtio 1.2 §2.8.13: the buffer id is one the driver gave'));
      }
      if (this.inFlight[id] === 0 || this.addedIn[id]! >= this.batch) {
        return this.fail(ringError('VHOST_RING_ID_NOT_OUTSTANDING', this.index, `used id ${id} is not outstanding`, 'virtio 1.2 §2.8.22: each buffer made available is used once'));
      }
      // §2.8.4: len is meaningful only with WRITE in the used descriptor; otherwise nothing was written.
      let len = (flags & VIRTQ_DESC_F_WRITE) !== 0 ? this.desc32[(slot << 2) + 2]! : 0;
      if (len > this.writable[id]! && this.clampUsedLen) {
        this.usedLenClamped++;
        len = this.writable[id]!;
      }
      if (len > this.writable[id]!) {
        return this.fail(ringError('VHOST_RING_LEN_TOO_LARGE', this.index, `used len ${len} exceeds the ${this.writable[id]} writable bytes of buffer ${id}`, 'virtio 1.2 §2.8.4: len is the number of bytes written'));
      }
      tokens[n] = this.tokens[id]!;
      lengths[n] = len;
      n++;
      // §2.8.6: skip the whole chain, by our own count, not by anything the device wrote.
      const count = this.descCount[id]!;
      this.inFlight[id] = 0;
      this.freeIds[this.freeTop++] = id;
      this.freeSlots += count;
      this.outstandingCount--;
      this.visible--;
      let next = slot + count;
      if (next >= size) {
        next -= size;
        this.usedWrap ^= 1;
      }
      this.nextUsed = next;
    }
    return n;
  }

  enableInterrupts(): boolean {
    this.checkUsable();
    // With event index, ask for a call when the descriptor at our next used slot is used (§2.8.10).
    const value = this.eventIdx
      ? (RING_EVENT_FLAGS_DESC << 16) | this.nextUsed | (this.usedWrap << 15)
      : RING_EVENT_FLAGS_ENABLE << 16;
    this.driverFlags = this.eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE;
    // Store, then re-check (§2.8.22 note): STLR+LDAR / XCHG order them, so a
    // completion the device wrote before reading our flags is seen here.
    Atomics.store(this.driverEvent32, 0, value);
    return this.usedAt(this.nextUsed);
  }

  /** Packed rings: a call on the next completion (the descriptor event names a ring slot, and a chain's slots vary). */
  enableInterruptsAfter(_count: number): boolean {
    return this.enableInterrupts();
  }

  disableInterrupts(): void {
    this.checkUsable();
    // Only a hint to the device, so a plain store; skipped when unchanged to spare the cache line.
    if (this.driverFlags === RING_EVENT_FLAGS_DISABLE) return;
    this.driverFlags = RING_EVENT_FLAGS_DISABLE;
    this.driverEvent16[1] = RING_EVENT_FLAGS_DISABLE;
  }

  /** Writes one descriptor at the next avail slot; the batch's first one keeps its old flags until publish(). */
  private putDesc(gpa: number, length: number, flags: number, id: number): void {
    const slot = this.nextAvail;
    const w = slot << 2;
    const d = this.desc32;
    d[w] = gpa >>> 0;
    d[w + 1] = (gpa / TWO_32) >>> 0;
    d[w + 2] = length;
    const f = flags | this.availBits;
    if (this.pendingHead < 0) {
      this.pendingHead = slot;
      this.pendingFlags = f;
      this.desc16[(slot << 3) + ID16] = id;
    } else {
      d[w + 3] = id | (f << 16);
    }
    // §2.8.1: the wrap counter flips after the last slot, also inside a chain.
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
      this.availBits ^= AVAIL_USED;
    }
  }

  private track(id: number, count: number, writable: number, token: number): void {
    this.tokens[id] = token;
    this.descCount[id] = count;
    this.writable[id] = writable;
    this.inFlight[id] = 1;
    this.addedIn[id] = this.batch;
    this.freeSlots -= count;
    this.outstandingCount++;
    this.pendingChains++;
  }

  /** Whether the descriptor at `slot` is used in the current used lap: AVAIL == USED == wrap (§2.8.1). */
  private usedAt(slot: number): boolean {
    const flags = Atomics.load(this.desc16, (slot << 3) + FLAGS16);
    const w = this.usedWrap;
    return ((flags >> 7) & 1) === w && ((flags >> 15) & 1) === w;
  }

  /** (slot, wrap counter) as one position on a cycle of 2 * size, counting from (0, 1). */
  private position(slot: number, wrap: number): number {
    return wrap === 1 ? slot : slot + this.size;
  }

  private checkSegment(gpa: number, length: number): void {
    if (!(Number.isSafeInteger(gpa) && gpa >= 0 && length >>> 0 === length)) {
      throw ringError('VHOST_INVALID_ARGUMENT', this.index, `bad segment: gpa ${gpa}, length ${length}`, 'virtio 1.2 §2.8.13: addr u64, len u32');
    }
  }

  private checkToken(token: number): void {
    if (token >>> 0 !== token) throw ringError('VHOST_INVALID_ARGUMENT', this.index, `token ${token} is not a u32`, 'tokens come back in a Uint32Array');
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
