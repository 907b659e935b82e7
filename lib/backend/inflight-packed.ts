/**
 * The packed layout of the inflight area (vhost-user.rst, "Inflight I/O
 * tracking", packed virtqueue): one QueueRegionPacked per queue, little-endian,
 * with natural C alignment (the desc[] array starts at 32 because its entries
 * hold u64 fields):
 *
 *   QueueRegionPacked { u64 features @0; u16 version @8; u16 desc_num @10;
 *                       u16 free_head @12; u16 old_free_head @14;
 *                       u16 used_idx @16; u16 old_used_idx @18;
 *                       u8 used_wrap_counter @20; u8 old_used_wrap_counter @21;
 *                       u8 padding[7] @22; DescStatePacked desc[desc_num] @32 }
 *   DescStatePacked   { u8 inflight @0; u8 padding @1; u16 next @2; u16 last @4;
 *                       u16 num @6; u64 counter @8; u16 id @16; u16 flags @18;
 *                       u32 len @20; u64 addr @24 }
 *
 * The desc[] entries are not indexed by ring slot or buffer id: they form a free
 * list (linked by next, headed by free_head). Every descriptor taken from the
 * ring is copied into the next free entry, so a chain occupies `num` consecutive
 * entries of that list, the first of which (its head entry) carries inflight,
 * counter, num and last. A completion puts the chain's entries back at the front
 * of the list. The old_* fields are the last committed state: a back-end that
 * dies half-way through either step is rolled back to them on reconnection.
 */
import type { Mapping } from '../native/mapping.js';
import { INFLIGHT_ALIGNMENT, INFLIGHT_VERSION } from './inflight-constants.js';
import { violation } from './violation.js';

/** QueueRegionPacked before its desc[] array (29 bytes of fields, padded to the u64 alignment of desc[]). */
export const INFLIGHT_PACKED_HEADER = 32;
/** sizeof(DescStatePacked). */
export const INFLIGHT_DESC_STATE_PACKED = 32;

/** Bytes of one packed queue region for a ring of `queueSize` entries. */
export function packedRegionSize(queueSize: number): number {
  const raw = INFLIGHT_PACKED_HEADER + INFLIGHT_DESC_STATE_PACKED * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

// QueueRegionPacked field offsets.
const VERSION = 8;
const DESC_NUM = 10;
const FREE_HEAD = 12;
const OLD_FREE_HEAD = 14;
const USED_IDX = 16;
const OLD_USED_IDX = 18;
const USED_WRAP = 20;
const OLD_USED_WRAP = 21;
// DescStatePacked field offsets.
const D_INFLIGHT = 0;
const D_NEXT = 2;
const D_LAST = 4;
const D_NUM = 6;
const D_COUNTER = 8;
const D_ID = 16;
const D_FLAGS = 18;
const D_LEN = 20;
const D_ADDR = 24;

const TWO_32 = 0x100000000;
/** virtio 1.2 §2.8.1: the AVAIL (bit 7) and USED (bit 15) flags of a packed descriptor. */
const AVAIL_USED = (1 << 7) | (1 << 15);
const RULE = "vhost-user.rst, 'Inflight I/O tracking'";

/** A descriptor as it was copied into the area: what a resubmission rebuilds the chain from. */
export interface PackedInflightDesc {
  addr: number;
  len: number;
  flags: number;
  id: number;
}

/** What the reconnection procedure leaves: the committed used position and the chains to resubmit. */
export interface PackedRecovery {
  /** Head entries still in flight, in the order their chains were taken (counter order). */
  entries: number[];
  /** Ring slots the chains in flight occupy (the sum of their num). */
  slots: number;
  usedIdx: number;
  usedWrap: number;
}

/**
 * The tracking steps for one packed ring. Completions are published one at a
 * time (a batch of one), as the reference back-end does for split rings too.
 */
export class PackedInflightRegion {
  readonly layout = 'packed' as const;
  private readonly dv: DataView;
  /** The global counter: the order in which chains were taken. A number: 2^53 chains outlast any test. */
  private counter = 0;

  constructor(
    private readonly mapping: Mapping,
    private readonly offset: number,
    readonly descNum: number,
  ) {
    this.dv = mapping.dataView(offset, packedRegionSize(descNum));
  }

  get version(): number {
    return this.dv.getUint16(VERSION, true);
  }

  /** desc_num as written in the region (may differ from the size it was mapped for). */
  get headerDescNum(): number {
    return this.dv.getUint16(DESC_NUM, true);
  }

  get freeHead(): number {
    return this.dv.getUint16(FREE_HEAD, true);
  }

  get oldFreeHead(): number {
    return this.dv.getUint16(OLD_FREE_HEAD, true);
  }

  get usedIdx(): number {
    return this.dv.getUint16(USED_IDX, true);
  }

  get oldUsedIdx(): number {
    return this.dv.getUint16(OLD_USED_IDX, true);
  }

  get usedWrapCounter(): number {
    return this.dv.getUint8(USED_WRAP);
  }

  get oldUsedWrapCounter(): number {
    return this.dv.getUint8(OLD_USED_WRAP);
  }

  private at(entry: number): number {
    return INFLIGHT_PACKED_HEADER + INFLIGHT_DESC_STATE_PACKED * entry;
  }

  isInflight(entry: number): boolean {
    return this.dv.getUint8(this.at(entry) + D_INFLIGHT) === 1;
  }

  counterOf(entry: number): number {
    const e = this.at(entry) + D_COUNTER;
    return this.dv.getUint32(e, true) + this.dv.getUint32(e + 4, true) * TWO_32;
  }

  numOf(entry: number): number {
    return this.dv.getUint16(this.at(entry) + D_NUM, true);
  }

  lastOf(entry: number): number {
    return this.dv.getUint16(this.at(entry) + D_LAST, true);
  }

  nextOf(entry: number): number {
    return this.dv.getUint16(this.at(entry) + D_NEXT, true);
  }

  /** The ring descriptor copied into `entry`. */
  descOf(entry: number): PackedInflightDesc {
    const e = this.at(entry);
    return {
      addr: this.dv.getUint32(e + D_ADDR, true) + this.dv.getUint32(e + D_ADDR + 4, true) * TWO_32,
      len: this.dv.getUint32(e + D_LEN, true),
      flags: this.dv.getUint16(e + D_FLAGS, true),
      id: this.dv.getUint16(e + D_ID, true),
    };
  }

  /**
   * A fresh region: version 1, desc_num, every entry free and linked to the next
   * (desc[i].next = i + 1, as DPDK lays a new area out), the used position at
   * (`usedIdx`, `usedWrap`) in both the current and the committed fields.
   */
  initialise(usedIdx = 0, usedWrap = 1): void {
    new Uint8Array(this.dv.buffer, this.dv.byteOffset, this.dv.byteLength).fill(0);
    this.dv.setUint16(VERSION, INFLIGHT_VERSION, true);
    this.dv.setUint16(DESC_NUM, this.descNum, true);
    for (let i = 0; i < this.descNum; i++) this.dv.setUint16(this.at(i) + D_NEXT, i + 1, true);
    this.setPosition(usedIdx, usedWrap);
    this.counter = 0;
  }

  /**
   * Moves the used position (current and committed) to where the ring is: a
   * ring built without recovery starts from its SET_VRING_BASE, which the area
   * must then follow. The free list and the entries are left as they are.
   */
  setPosition(usedIdx: number, usedWrap: number): void {
    this.dv.setUint16(USED_IDX, usedIdx, true);
    this.dv.setUint16(OLD_USED_IDX, usedIdx, true);
    this.dv.setUint8(USED_WRAP, usedWrap);
    this.dv.setUint8(OLD_USED_WRAP, usedWrap);
  }

  /**
   * "When receiving available buffers from the driver", for one descriptor `d`
   * of a chain (`head`: its first, `last`: its last). The chain's head entry is
   * old_free_head throughout; free_head walks the free list one entry per
   * descriptor, and old_free_head catches up once the chain is complete.
   */
  receive(addr: number, len: number, flags: number, id: number, head: boolean, last: boolean): void {
    const dv = this.dv;
    const oldFreeHead = dv.getUint16(OLD_FREE_HEAD, true);
    const freeHead = dv.getUint16(FREE_HEAD, true);
    // Never with an area this back-end kept (a chain in flight holds as many entries as ring slots); a corrupt one.
    if (freeHead >= this.descNum || oldFreeHead >= this.descNum) {
      throw violation('VHOST_INVALID_PAYLOAD', `inflight free list exhausted (free_head ${freeHead}, old_free_head ${oldFreeHead}, desc_num ${this.descNum})`, 'SET_INFLIGHT_FD', RULE);
    }
    const h = this.at(oldFreeHead);
    if (head) {
      dv.setUint16(h + D_NUM, 0, true);
      const c = this.counter++;
      dv.setUint32(h + D_COUNTER, c >>> 0, true);
      dv.setUint32(h + D_COUNTER + 4, Math.floor(c / TWO_32), true);
      dv.setUint8(h + D_INFLIGHT, 1);
    }
    if (last) dv.setUint16(h + D_LAST, freeHead, true);
    dv.setUint16(h + D_NUM, dv.getUint16(h + D_NUM, true) + 1, true);
    const f = this.at(freeHead);
    dv.setUint32(f + D_ADDR, addr >>> 0, true);
    dv.setUint32(f + D_ADDR + 4, Math.floor(addr / TWO_32), true);
    dv.setUint32(f + D_LEN, len, true);
    dv.setUint16(f + D_FLAGS, flags, true);
    dv.setUint16(f + D_ID, id, true);
    const next = dv.getUint16(f + D_NEXT, true);
    dv.setUint16(FREE_HEAD, next, true);
    if (last) dv.setUint16(OLD_FREE_HEAD, next, true);
  }

  /**
   * "When supplying used buffers to the driver", the steps before the used
   * descriptor's flags are written: the chain whose head entry is `entry` goes
   * back to the front of the free list, and used_idx (with used_wrap_counter)
   * moves past its `num` ring slots.
   */
  beforeUsed(entry: number): void {
    const dv = this.dv;
    const e = this.at(entry);
    dv.setUint16(this.at(dv.getUint16(e + D_LAST, true)) + D_NEXT, dv.getUint16(FREE_HEAD, true), true);
    dv.setUint16(FREE_HEAD, entry, true);
    let used = dv.getUint16(USED_IDX, true) + dv.getUint16(e + D_NUM, true);
    if (used >= this.descNum) {
      used -= this.descNum;
      dv.setUint8(USED_WRAP, dv.getUint8(USED_WRAP) ^ 1);
    }
    dv.setUint16(USED_IDX, used, true);
  }

  /** The rest, once the used descriptor's flags are written: inflight = 0, then the old_* fields commit. */
  afterUsed(entry: number): void {
    const dv = this.dv;
    dv.setUint8(this.at(entry) + D_INFLIGHT, 0);
    dv.setUint16(OLD_FREE_HEAD, dv.getUint16(FREE_HEAD, true), true);
    dv.setUint16(OLD_USED_IDX, dv.getUint16(USED_IDX, true), true);
    dv.setUint8(OLD_USED_WRAP, dv.getUint8(USED_WRAP));
  }

  /**
   * "When reconnecting". `flagsAt(slot)` reads the flags of the descriptor ring
   * at `slot`. If used_idx moved past old_used_idx, a completion was under way:
   * when the descriptor at old_used_idx no longer carries the available flags
   * of old_used_wrap_counter, it had been handed to the driver and is committed;
   * otherwise it is rolled back. Then every entry on the free list is not in
   * flight, and the head entries still marked are resubmitted in counter order.
   * Everything read is checked: a hostile or corrupt area is a violation, never
   * an endless walk or an out-of-range entry.
   *
   * A region nobody initialised (version 0) is initialised at (`usedIdx`, `usedWrap`).
   */
  recover(usedIdx: number, usedWrap: number, flagsAt: (slot: number) => number): PackedRecovery {
    const n = this.descNum;
    if (this.version === 0) {
      this.initialise(usedIdx, usedWrap);
      return { entries: [], slots: 0, usedIdx, usedWrap };
    }
    const dv = this.dv;
    for (const [name, v, max] of [
      ['free_head', this.freeHead, n],
      ['old_free_head', this.oldFreeHead, n],
      ['used_idx', this.usedIdx, n - 1],
      ['old_used_idx', this.oldUsedIdx, n - 1],
      ['used_wrap_counter', this.usedWrapCounter, 1],
      ['old_used_wrap_counter', this.oldUsedWrapCounter, 1],
    ] as const) {
      if (v > max) throw violation('VHOST_INVALID_PAYLOAD', `inflight ${name} ${v} is beyond ${max} (desc_num ${n})`, 'SET_INFLIGHT_FD', RULE);
    }
    if (this.usedIdx !== this.oldUsedIdx || this.usedWrapCounter !== this.oldUsedWrapCounter) {
      const w = this.oldUsedWrapCounter;
      const available = w === 1 ? 1 << 7 : 1 << 15;
      if ((flagsAt(this.oldUsedIdx) & AVAIL_USED) !== available) {
        // The used descriptor reached the driver before the crash: commit the update.
        dv.setUint16(OLD_FREE_HEAD, this.freeHead, true);
        dv.setUint16(OLD_USED_IDX, this.usedIdx, true);
        dv.setUint8(OLD_USED_WRAP, this.usedWrapCounter);
      }
    }
    // Roll back whatever was in progress.
    dv.setUint16(FREE_HEAD, this.oldFreeHead, true);
    dv.setUint16(USED_IDX, this.oldUsedIdx, true);
    dv.setUint8(USED_WRAP, this.oldUsedWrapCounter);
    // The free list ends at an index outside the array (desc_num once every entry was used); at most n steps.
    let free = 0;
    for (let i = this.freeHead; i < n; i = this.nextOf(i)) {
      if (++free > n) throw violation('VHOST_INVALID_PAYLOAD', `inflight free list from ${this.freeHead} loops`, 'SET_INFLIGHT_FD', RULE);
      dv.setUint8(this.at(i) + D_INFLIGHT, 0);
    }
    const entries: number[] = [];
    let max = -1;
    for (let i = 0; i < n; i++) {
      const flag = dv.getUint8(this.at(i) + D_INFLIGHT);
      if (flag > 1) throw violation('VHOST_INVALID_PAYLOAD', `inflight flag ${flag} for entry ${i} is neither 0 nor 1`, 'SET_INFLIGHT_FD', RULE);
      if (flag === 1) entries.push(i);
      max = Math.max(max, this.counterOf(i));
    }
    entries.sort((a, b) => this.counterOf(a) - this.counterOf(b) || a - b);
    // Each chain: num entries linked by next, the last of which is `last`; together no more than the ring.
    let slots = 0;
    for (const e of entries) {
      const num = this.numOf(e);
      if (num < 1 || num > n) throw violation('VHOST_INVALID_PAYLOAD', `inflight entry ${e} holds a chain of ${num} descriptors (ring of ${n})`, 'SET_INFLIGHT_FD', RULE);
      let at = e;
      for (let k = 1; k < num; k++) {
        at = this.nextOf(at);
        if (at >= n) throw violation('VHOST_INVALID_PAYLOAD', `inflight chain at entry ${e} links to entry ${at}, outside ${n}`, 'SET_INFLIGHT_FD', RULE);
      }
      if (at !== this.lastOf(e)) throw violation('VHOST_INVALID_PAYLOAD', `inflight chain at entry ${e} ends at entry ${at}, but its last says ${this.lastOf(e)}`, 'SET_INFLIGHT_FD', RULE);
      slots += num;
    }
    if (slots > n) throw violation('VHOST_INVALID_PAYLOAD', `inflight chains hold ${slots} descriptors, more than the ${n} of the ring`, 'SET_INFLIGHT_FD', RULE);
    this.counter = max + 1;
    return { entries, slots, usedIdx: this.usedIdx, usedWrap: this.usedWrapCounter };
  }

  /** The descriptors of the chain whose head entry is `entry` (checked by recover()), in ring order. */
  chainOf(entry: number): PackedInflightDesc[] {
    const out: PackedInflightDesc[] = [];
    for (let k = 0, at = entry, num = this.numOf(entry); k < num; k++, at = this.nextOf(at)) out.push(this.descOf(at));
    return out;
  }

  /** @internal The mapping offset of this region (tests read the raw bytes). */
  get regionOffset(): number {
    return this.offset;
  }

  /** @internal */
  get area(): Mapping {
    return this.mapping;
  }
}
