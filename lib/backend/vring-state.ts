/**
 * One vring as the reference back-end sees it (vhost-user.rst, 'Starting and
 * stopping rings'): its size, addresses and base as set by the front-end, its
 * kick, call and err fds, whether it is enabled and started, and the device
 * queue model (split or packed) built over mapped memory once everything is
 * known. Each setter checks what the spec asks of that request for this ring.
 */
import { closeFd } from '../native/libc.js';
import { VHOST_VRING_F_LOG } from '../protocol/constants.js';
import { VringAddr, checkVringAddrAlignment } from '../protocol/payloads.js';
import { EventFd } from '../transport/eventfd.js';
import { PackedDeviceQueue, type PackedDeviceChain } from '../virtqueue/device/packed-device.js';
import { SplitDeviceQueue, type DeviceChain } from '../virtqueue/device/split-device.js';
import { PACKED_DESC_SIZE, PACKED_QUEUE_MAX_SIZE } from '../virtqueue/packed-layout.js';
import { VIRTQUEUE_MAX_SIZE } from '../virtqueue/split-layout.js';
import type { BackendMemory } from './backend-memory.js';
import type { DirtyLog } from '../memory/dirty-log.js';
import type { Fault } from './faults.js';
import type { InflightRegion, PackedInflightRegion, SplitInflightRegion } from './inflight-area.js';
import { violation } from './violation.js';

/** Asks the fault plan whether the next completion on ring `index` is to be corrupted. */
export type RingFaultSource = (index: number) => Fault | null;

/** A chain popped from either ring kind. */
export interface Chain {
  head: number;
  descCount: number;
  segments: { gpa: number; len: number; writable: boolean }[];
  readableBytes: number;
  writableBytes: number;
  /**
   * Packed rings with an inflight area: the head DescStatePacked entry tracking
   * this chain (entries are a free list, not ring slots); -1 otherwise. Split
   * rings track a chain by its head.
   */
  entry: number;
}

function fromSplit(c: DeviceChain): Chain {
  return { head: c.head, descCount: 1, segments: c.segments, readableBytes: c.readableBytes, writableBytes: c.writableBytes, entry: -1 };
}

function fromPacked(c: PackedDeviceChain, entry: number): Chain {
  return { head: c.id, descCount: c.descCount, segments: c.segments, readableBytes: c.readableBytes, writableBytes: c.writableBytes, entry };
}

/** Scratch for copying a taken packed chain's descriptors into the inflight area. */
const descScratch = { addr: 0, len: 0, flags: 0, id: 0 };

/** Ring area GPAs, once translated. */
export interface RingAreas {
  desc: number;
  avail: number;
  used: number;
}

export class Vring {
  num = 0;
  addr: VringAddr | null = null;
  /** SET_VRING_BASE value, used when the device queue is (re)built. */
  base = 0;
  kick: EventFd | null = null;
  /** NOFD kick: the ring is polled on a timer. */
  kickPolled = false;
  call: EventFd | null = null;
  err: number | null = null;
  enabled = false;
  started = false;
  split: SplitDeviceQueue | null = null;
  packed: PackedDeviceQueue | null = null;
  /** net TX: a chain taken from the ring, waiting for an RX buffer. */
  pendingTx: Chain | null = null;
  /** GPA of the device area (split used ring, packed device event suppression) of the built queue model. */
  private usedGpa = 0;
  /** Set while VHOST_F_LOG_ALL is negotiated and a log is shared: every write is logged there. */
  log: DirtyLog | null = null;
  /** This ring's region of the inflight area (INFLIGHT_SHMFD), when one is set. */
  inflight: InflightRegion | null = null;
  /** Set by SET_INFLIGHT_FD: the next build recovers what the area says was in flight. */
  recoverInflight = false;
  /** Heads (split) or head entries (packed) to serve again before anything new: in flight when the previous back-end stopped. */
  private resubmit: number[] = [];
  /** Chains a device took and has not completed yet (a device with latency). */
  held: Chain[] = [];
  private heldTimer: NodeJS.Timeout | null = null;
  private completeHeld: (() => void) | null = null;

  constructor(
    readonly index: number,
    private readonly ringFault: RingFaultSource | null = null,
    /** Dirty-logging faults (faults.ts, LOG_FAULTS): whether to leave this write out of the log. */
    private readonly logFault: ((ring: number, name: 'unlogged-write' | 'unlogged-used') => boolean) | null = null,
  ) {}

  /** True when a device queue model (split or packed) is built. */
  get hasQueue(): boolean {
    return this.split !== null || this.packed !== null;
  }

  // ---------------------------------------------------------------- front-end requests

  /** SET_VRING_NUM. */
  setNum(num: number, packed: boolean, request: string): void {
    if (this.started) throw violation('VHOST_INVALID_STATE', `ring ${this.index} is running; stop it (GET_VRING_BASE) first`, request);
    const max = packed ? PACKED_QUEUE_MAX_SIZE : VIRTQUEUE_MAX_SIZE;
    const pow2 = (num & (num - 1)) === 0;
    if (num === 0 || num > max || (!packed && !pow2)) {
      throw violation('VHOST_INVALID_PAYLOAD', `queue size ${num} is not ${packed ? '' : 'a power of 2 '}in 1..${max}`, request, `virtio 1.2 ${packed ? '§2.8' : '§2.7'}: Queue Size`);
    }
    this.num = num;
    this.addr = null; // the addresses were checked against the old size
  }

  /** SET_VRING_ADDR; `logAll` tells whether VHOST_F_LOG_ALL was negotiated. */
  setAddr(a: VringAddr, packed: boolean, logAll: boolean, memory: BackendMemory, request: string): void {
    if (a.flags & VHOST_VRING_F_LOG && !logAll) {
      throw violation('VHOST_FEATURE_NOT_NEGOTIATED', 'VHOST_VRING_F_LOG without VHOST_F_LOG_ALL', request);
    }
    if (this.started) {
      // vhost-user.rst, 'Migration': logging is switched on a running ring with SET_VRING_ADDR
      // and VHOST_VRING_F_LOG; the ring itself may not move.
      const o = this.addr;
      if (o === null || o.descUserAddr !== a.descUserAddr || o.availUserAddr !== a.availUserAddr || o.usedUserAddr !== a.usedUserAddr) {
        throw violation('VHOST_INVALID_STATE', `ring ${this.index} is running: only its logging (flags, log_guest_addr) may change`, request);
      }
      this.addr = a;
      return;
    }
    if (this.num === 0) throw violation('VHOST_INVALID_STATE', `SET_VRING_ADDR for ring ${this.index} before SET_VRING_NUM`, request);
    checkVringAddrAlignment(a, packed, request);
    this.translate(memory, a, packed, request);
    this.addr = a;
  }

  /** SET_VRING_BASE. */
  setBase(base: number, packed: boolean, request: string): void {
    if (this.started) throw violation('VHOST_INVALID_STATE', `ring ${this.index} is running`, request);
    if (packed) {
      if (this.num !== 0 && ((base & 0x7fff) >= this.num || ((base >>> 16) & 0x7fff) >= this.num)) {
        throw violation('VHOST_INVALID_PAYLOAD', `packed base 0x${base.toString(16)} is outside a ring of ${this.num}`, request);
      }
    } else if (base > 0xffff) {
      throw violation('VHOST_INVALID_PAYLOAD', `split ring base ${base} does not fit 16 bits`, request);
    }
    this.base = base;
  }

  /** SET_VRING_KICK: `fd` null for NOFD (the ring is then polled). The caller starts the ring. */
  setKick(fd: number | null, onKick: () => void): void {
    this.kick?.close();
    this.kick = null;
    this.kickPolled = fd === null;
    if (fd !== null) {
      this.kick = EventFd.adopt(fd);
      this.kick.watch(onKick);
    }
  }

  /** SET_VRING_CALL: `fd` null for NOFD. */
  setCall(fd: number | null): void {
    this.call?.close();
    this.call = fd === null ? null : EventFd.adopt(fd);
  }

  /** SET_VRING_ERR: `fd` null for NOFD. */
  setErr(fd: number | null): void {
    if (this.err !== null) closeFd(this.err);
    this.err = fd;
  }

  /** GET_VRING_BASE: stop the ring, return its position; kick and call fds are released. */
  stop(): number {
    this.drain();
    // Heads recovered but not served yet stay in flight in the area: the next start recovers them again.
    if (this.resubmit.length > 0) this.recoverInflight = true;
    this.resubmit = [];
    const base = this.position();
    this.base = base;
    this.started = false;
    this.split = null;
    this.packed = null;
    this.pendingTx = null;
    this.kick?.close();
    this.kick = null;
    this.kickPolled = false;
    this.call?.close();
    this.call = null;
    return base;
  }

  // ---------------------------------------------------------------- device queue model

  /** Checks the ring areas lie in mapped memory; returns their GPAs. */
  translate(memory: BackendMemory, a: VringAddr, packed: boolean, request: string): RingAreas {
    const n = this.num;
    const sizes = packed
      ? { desc: PACKED_DESC_SIZE * n, avail: 4, used: 4 }
      : { desc: 16 * n, avail: 6 + 2 * n, used: 6 + 8 * n };
    try {
      return {
        desc: memory.userToGpa(a.descUserAddr, sizes.desc),
        avail: memory.userToGpa(a.availUserAddr, sizes.avail),
        used: memory.userToGpa(a.usedUserAddr, sizes.used),
      };
    } catch (e) {
      throw violation('VHOST_MEMORY_OUT_OF_RANGE', `ring ${this.index} addresses do not translate into mapped memory: ${(e as Error).message}`, request);
    }
  }

  /** Builds the device queue model when the ring has its size and addresses (features and memory are the caller's to check). */
  build(memory: BackendMemory, packed: boolean, eventIdx: boolean): void {
    if (this.hasQueue) return;
    if (this.addr === null || this.num === 0) return;
    const gpa = this.translate(memory, this.addr, packed, 'SET_VRING_ADDR');
    this.usedGpa = gpa.used;
    try {
      if (packed) {
        this.packed = new PackedDeviceQueue(memory, { size: this.num, desc: gpa.desc, driver: gpa.avail, device: gpa.used, end: gpa.used + 4 }, { eventIdx, base: this.base });
      } else {
        this.split = new SplitDeviceQueue(memory, { num: this.num, desc: gpa.desc, avail: gpa.avail, used: gpa.used, end: gpa.used + 6 + 8 * this.num }, { eventIdx, base: this.base & 0xffff });
      }
    } catch (e) {
      throw violation('VHOST_INVALID_PAYLOAD', `ring ${this.index} cannot be set up: ${(e as Error).message}`, 'SET_VRING_ADDR');
    }
    const region = this.inflight;
    if (region === null) return;
    if (this.split && region.layout === 'split' && this.recoverInflight) this.recover(this.split, region);
    if (this.packed && region.layout === 'packed') {
      if (this.recoverInflight) this.recoverPacked(this.packed, region);
      // The area follows the ring's position when the ring was set up from SET_VRING_BASE.
      else region.setPosition((this.packed.base >>> 16) & 0x7fff, this.packed.base >>> 31);
    }
  }

  /**
   * vhost-user.rst, 'Inflight I/O tracking', "When reconnecting": the position
   * comes from the area and the used ring, not from SET_VRING_BASE (a front-end
   * whose back-end crashed could not ask GET_VRING_BASE): every head still in
   * flight was taken from the avail ring after the last used one, so the next
   * avail entry is used.idx plus their number; they are served first, in counter order.
   */
  private recover(split: SplitDeviceQueue, region: SplitInflightRegion): void {
    this.recoverInflight = false;
    if (region.descNum !== this.num) {
      throw violation('VHOST_INVALID_PAYLOAD', `inflight area tracks ${region.descNum} descriptors per queue, ring ${this.index} has ${this.num}`, 'SET_INFLIGHT_FD', "vhost-user.rst, 'Inflight I/O tracking'");
    }
    const used = split.ringUsedIdx();
    const heads = region.recover(used);
    split.restore(used + heads.length, used);
    this.resubmit = heads;
  }

  /**
   * The packed counterpart (vhost-user.rst, 'Inflight I/O tracking', packed
   * virtqueue, "When reconnecting"): the used position is the one the area
   * committed; every chain still in flight was taken after it, so the next
   * available descriptor is that many ring slots further (with the wrap counter
   * flipping where the ring wraps). With nothing in flight the ring starts from
   * SET_VRING_BASE, and the area follows it.
   */
  private recoverPacked(packed: PackedDeviceQueue, region: PackedInflightRegion): void {
    this.recoverInflight = false;
    if (region.descNum !== this.num) {
      throw violation('VHOST_INVALID_PAYLOAD', `inflight area tracks ${region.descNum} descriptors per queue, ring ${this.index} has ${this.num}`, 'SET_INFLIGHT_FD', "vhost-user.rst, 'Inflight I/O tracking'");
    }
    const base = packed.base;
    const r = region.recover((base >>> 16) & 0x7fff, base >>> 31, (slot) => packed.flagsAt(slot));
    if (r.entries.length === 0) {
      region.setPosition((base >>> 16) & 0x7fff, base >>> 31);
      return;
    }
    let avail = r.usedIdx + r.slots;
    let wrap = r.usedWrap;
    if (avail >= this.num) {
      avail -= this.num;
      wrap ^= 1;
    }
    packed.restore((avail | (wrap << 15) | (r.usedIdx << 16) | (r.usedWrap << 31)) >>> 0);
    this.resubmit = r.entries;
  }

  /** Drops the device queue model (its views die with the old mappings) keeping its position. */
  detach(): void {
    this.drain();
    if (this.hasQueue) this.base = this.position();
    this.split = null;
    this.packed = null;
    this.pendingTx = null;
  }

  /** The device's position, with a pending (taken but unused) TX chain given back. */
  position(): number {
    if (this.split) {
      const held = this.pendingTx ? 1 : 0;
      return (this.split.base - held) & 0xffff;
    }
    if (this.packed) {
      const b = this.packed.base;
      if (!this.pendingTx) return b;
      let slot = (b & 0x7fff) - this.pendingTx.descCount;
      let wrap = (b >>> 15) & 1;
      if (slot < 0) {
        slot += this.num;
        wrap ^= 1;
      }
      return ((b & 0xffff0000) | slot | (wrap << 15)) >>> 0;
    }
    return this.base;
  }

  /** Closes every fd and drops the queue model (reset and session end). */
  release(): void {
    // What is held is dropped, not completed: as if the back-end died. With an
    // inflight area those requests stay marked there for the next back-end.
    this.dropHeld();
    this.resubmit = [];
    this.kick?.close();
    this.call?.close();
    if (this.err !== null) closeFd(this.err);
    this.kick = null;
    this.call = null;
    this.err = null;
    this.split = null;
    this.packed = null;
    this.started = false;
    this.pendingTx = null;
  }

  // ---------------------------------------------------------------- chains

  /** Pops the next available chain; the queue model must be built. */
  take(): Chain | null {
    const c = this.takeChain();
    // Popping may rewrite the event suppression words (avail_event, packed device event).
    if (this.log !== null && !(this.logFault?.(this.index, 'unlogged-used') ?? false)) this.logDeviceWords();
    return c;
  }

  private takeChain(): Chain | null {
    if (this.split) {
      const again = this.resubmit.shift();
      if (again !== undefined) return fromSplit(this.split.chainAt(again));
      const c = this.split.pop();
      if (c && this.inflight?.layout === 'split') this.inflight.begin(c.head);
      return c && fromSplit(c);
    }
    const packed = this.packed!;
    const region = this.inflight?.layout === 'packed' ? this.inflight : null;
    if (region !== null) {
      const again = this.resubmit.shift();
      if (again !== undefined) return fromPacked(packed.chainOf(region.chainOf(again)), again);
    }
    const slot = packed.availSlot;
    const c = packed.pop();
    if (c === null) return null;
    if (region === null) return fromPacked(c, -1);
    // The chain's head entry, then each descriptor copied in ring order (its slots are not overwritten yet).
    const entry = region.oldFreeHead;
    for (let k = 0; k < c.descCount; k++) {
      packed.readDesc((slot + k) % this.num, descScratch);
      region.receive(descScratch.addr, descScratch.len, descScratch.flags, descScratch.id, k === 0, k === c.descCount - 1);
    }
    return fromPacked(c, entry);
  }

  push(c: Chain, len: number): void {
    const fault = this.ringFault?.(this.index) ?? null;
    if (fault !== null) return this.pushCorrupt(fault, c, len);
    const region = this.inflight;
    if (this.split) {
      const split = region?.layout === 'split' ? region : null;
      split?.beforeUsed(c.head);
      this.split.push(c.head, len);
      split?.afterUsed(c.head, this.split.usedIndex);
      if (this.log) this.logPush(c, len, (this.split.usedIndex - 1) & 0xffff);
    } else {
      const packed = region?.layout === 'packed' && c.entry >= 0 ? region : null;
      const slot = this.packed!.usedSlot;
      // vhost-user.rst, packed "When supplying used buffers": free list and used_idx, then d.flags, then inflight = 0 and the old_* fields.
      packed?.beforeUsed(c.entry);
      this.packed!.push(c.head, c.descCount, len);
      packed?.afterUsed(c.entry);
      if (this.log) this.logPush(c, len, slot);
    }
  }

  /**
   * Logs the device's notification words, which it writes outside completions
   * (virtio 1.2 §2.7.10, §2.8.10): split used.flags and avail_event (the word
   * after used.ring), packed device event suppression. Their place follows from
   * the ring's own device area (SET_VRING_ADDR's used address), whatever
   * log_guest_addr says.
   */
  private logDeviceWords(): void {
    const a = this.addr;
    const log = this.log;
    if (a === null || log === null || (a.flags & VHOST_VRING_F_LOG) === 0 || !this.hasQueue) return;
    const used = this.usedGpa;
    if (this.split) {
      log.mark(used, 2);
      log.mark(used + 4 + 8 * this.num, 2);
    } else if (this.packed) {
      log.mark(used, 4);
    }
  }

  /**
   * Logs what completing `c` wrote (vhost-user.rst, "Migration"): the first `len`
   * bytes of its writable segments, and, when the ring was set up with
   * VHOST_VRING_F_LOG, the used entry and used.idx at log_guest_addr (split) or
   * the descriptor written back at log_guest_addr + 16 * slot (packed, whose used
   * entries overwrite descriptors: log_guest_addr is the descriptor ring, as DPDK
   * reads it).
   */
  private logPush(c: Chain, len: number, slot: number): void {
    const log = this.log!;
    let left = this.logFault?.(this.index, 'unlogged-write') ? 0 : len;
    for (const seg of c.segments) {
      if (left <= 0) break;
      if (!seg.writable) continue;
      const n = Math.min(seg.len, left);
      log.mark(seg.gpa, n);
      left -= n;
    }
    const a = this.addr;
    if (a === null || (a.flags & VHOST_VRING_F_LOG) === 0) return;
    if (this.logFault?.(this.index, 'unlogged-used')) return;
    this.logDeviceWords();
    if (this.split) {
      const used = Number(a.logGuestAddr);
      log.mark(used + 4 + 8 * (slot % this.num), 8); // vring_used_elem
      log.mark(used + 2, 2); // used.idx
    } else {
      log.mark(Number(a.logGuestAddr) + PACKED_DESC_SIZE * slot, PACKED_DESC_SIZE);
    }
  }

  /**
   * Completes `c` the way a buggy device would (faults.ts, RING_FAULTS). 'Not
   * outstanding' uses the id half a ring away from the chain's: outstanding only
   * when more than half the ring is in flight (a full RX ring), so target a TX ring
   * for a deterministic fault.
   */
  private pushCorrupt(fault: Fault, c: Chain, len: number): void {
    const size = this.num;
    const other = (c.head + (size >> 1)) % size;
    const s = this.split;
    const p = this.packed!;
    switch (fault.name) {
      case 'used-id-out-of-range':
        return s ? s.pushRaw(size, len) : p.push(size, c.descCount, len);
      case 'used-id-not-outstanding':
        return s ? s.pushRaw(other, len) : p.push(other, c.descCount, len);
      case 'used-len-too-large':
        return s ? s.push(c.head, c.writableBytes + 1) : p.push(c.head, c.descCount, c.writableBytes + 1);
      case 'used-duplicate':
        if (s) {
          s.push(c.head, len);
          return s.pushRaw(c.head, len);
        }
        p.push(c.head, c.descCount, len);
        return p.push(c.head, c.descCount, len);
      case 'used-idx-jump':
        if (s) {
          s.push(c.head, len);
          return s.setUsedIdx(s.usedIndex + size + 1);
        }
        // Packed rings have no index: one completion more than was made available.
        p.push(c.head, c.descCount, len);
        return p.pushRaw(p.usedSlot, c.head, len, p.usedFlags);
      default:
        throw new Error(`${fault.name} is not a used-ring fault`);
    }
  }

  // ---------------------------------------------------------------- held chains

  /**
   * Holds `c` for `ms` before `complete` serves everything held (a device with
   * latency). One timer per ring; what is held when the ring stops or its memory
   * changes is completed at once (drain), what is held when the session ends is dropped.
   */
  hold(c: Chain, ms: number, complete: () => void): void {
    this.held.push(c);
    this.completeHeld = complete;
    if (this.heldTimer === null) {
      this.heldTimer = setTimeout(() => {
        this.heldTimer = null;
        if (this.hasQueue && this.held.length > 0) this.completeHeld?.();
      }, ms);
    }
  }

  /** Completes every held chain now (GET_VRING_BASE and memory changes drain the ring first). */
  private drain(): void {
    if (this.heldTimer !== null) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    if (this.held.length > 0 && this.hasQueue) this.completeHeld?.();
    this.held = [];
  }

  private dropHeld(): void {
    if (this.heldTimer !== null) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    this.held = [];
    this.completeHeld = null;
  }

  /** Signals the call fd when the driver asked for it. */
  notify(): void {
    const q = this.split ?? this.packed;
    if (q && q.needsCall()) this.call?.signal();
  }
}
