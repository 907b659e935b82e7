/**
 * The driver side of a virtqueue, split or packed: what a device driver needs to
 * put buffers in front of a device and take them back (virtio 1.2 §2.6, §2.7, §2.8).
 *
 * The rings live in GuestMemory, shared with the back-end; the queue reads and
 * writes only there and in its own private bookkeeping, which is what it trusts.
 * Everything the device writes (used entries) is validated before it is believed:
 * an id out of range or not outstanding, a length beyond the writable bytes, or
 * more completions than buffers outstanding makes the queue broken for good and
 * throws a VhostUserError with one of the VHOST_RING_* codes.
 *
 * The hot path allocates nothing: buffers are added one call per chain with plain
 * numbers, and completions are reaped in bursts into caller-owned typed arrays.
 * Notifications are decided here but not sent: `publish()` says whether the
 * device wants a kick, and the caller signals its kick eventfd.
 */
import { VhostUserError, type VhostErrorCode } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';

/** Descriptor flag shared by both layouts (virtio 1.2 §2.7.5, §2.8.1): the chain continues (split: at `next`; packed: in the next slot). */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag (§2.7.5, §2.8.1): the buffer is device-writable (the device fills it); clear means device-readable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag (§2.7.5.3, §2.8.7): the buffer is a table of descriptors (needs VIRTIO_RING_F_INDIRECT_DESC). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** How to build a {@link SplitVirtqueue} or {@link PackedVirtqueue}. */
export interface VirtqueueOptions {
  /** The guest memory that holds the ring and the buffers, shared with the back-end (SET_MEM_TABLE). */
  memory: GuestMemory;
  /** The vring index, for messages and SET_VRING_* calls. */
  index: number;
  /** Queue size: a power of 2 up to 32768 for split rings; up to 32768 for packed. */
  size: number;
  /** GPA where the ring structures go; 16-byte aligned; `footprint` bytes are used from here. */
  ringGpa: number;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /**
   * VIRTIO_RING_F_INDIRECT_DESC was negotiated and chains of more than one segment
   * go into indirect tables of up to this many descriptors (0: no indirect).
   * The tables are laid out after the ring and counted in `footprint`.
   */
  indirectMax?: number;
  /**
   * A used length beyond the buffer's writable bytes normally breaks the queue
   * (VHOST_RING_LEN_TOO_LARGE). With this set it is clamped to the writable bytes
   * and counted in `usedLenClamped` instead, so a caller can drive a back-end known
   * to report lengths wrongly (DPDK's vhost_blk example reports the data length
   * of a write); Linux's virtio drivers ignore the used length altogether. Default false.
   */
  clampUsedLen?: boolean;
  /**
   * VIRTIO_F_IN_ORDER was negotiated (split rings): the device uses buffers in the
   * order they were made available, and may write one used entry for a whole batch
   * (virtio 1.2 §2.7.9). Descriptors are then handed out in ring order (§2.7.5).
   */
  inOrder?: boolean;
}

/** Guest-physical addresses to hand to SET_VRING_ADDR (after translation to user addresses). */
export interface VirtqueueAddresses {
  /** Descriptor table (split) or descriptor ring (packed). */
  desc: number;
  /** Driver area: avail ring (split) or driver event suppression (packed). */
  driver: number;
  /** Device area: used ring (split) or device event suppression (packed). */
  device: number;
}

/**
 * The driver side of one virtqueue, split ({@link SplitVirtqueue}) or packed
 * ({@link PackedVirtqueue}); devices drive either through this interface.
 */
export interface Virtqueue {
  /** The vring index given in {@link VirtqueueOptions.index}. */
  readonly index: number;
  /** Queue size: descriptors (split) or ring slots (packed); what SET_VRING_NUM announces. */
  readonly size: number;
  /** True for a packed ring (VIRTIO_F_RING_PACKED, §2.8), false for a split ring (§2.7). */
  readonly packed: boolean;
  /** Where the ring's areas lie, for SET_VRING_ADDR. */
  readonly addresses: VirtqueueAddresses;
  /** Bytes of guest memory used from `ringGpa`. */
  readonly footprint: number;
  /** Descriptors (split) or ring slots (packed) free for new chains. */
  readonly freeCount: number;
  /** Chains made available and not yet returned by the device. */
  readonly outstanding: number;
  /** Used entries whose length exceeded the writable bytes and were clamped (see VirtqueueOptions.clampUsedLen). */
  readonly usedLenClamped: number;
  /** The error that broke the queue, or null. */
  readonly error: VhostUserError | null;

  /**
   * Makes one single-segment buffer available (not yet visible to the device: see
   * publish()). `writable`: the device writes it (RX) rather than reads it (TX).
   * Returns false when the ring is full. `token` comes back with the completion.
   */
  addBuffer(gpa: number, length: number, writable: boolean, token: number): boolean;

  /**
   * Makes a chain available: `count` segments from `gpas`/`lengths`, the first
   * `readable` of them device-readable and the rest device-writable (§2.7.4: all
   * readable before all writable). Uses an indirect table when configured and
   * count > 1. Returns false when there is no room.
   */
  addChain(gpas: ArrayLike<number>, lengths: ArrayLike<number>, count: number, readable: number, token: number): boolean;

  /**
   * Exposes everything added since the last publish() to the device, with the
   * barriers the spec requires, and returns true when the device asked to be
   * notified (event index or flags), i.e. the caller should kick.
   */
  publish(): boolean;

  /**
   * Takes up to `max` completions in ring order into `tokens`/`lengths` (bytes the
   * device wrote) and returns how many. Validates each entry; throws a VHOST_RING_*
   * error, and breaks the queue, on any violation.
   */
  reap(tokens: Uint32Array, lengths: Uint32Array, max: number): number;

  /** True when completions are waiting (a cheap peek, no validation). */
  hasUsed(): boolean;

  /**
   * Asks the device for a call (interrupt) on the next completion. Returns true if
   * completions arrived meanwhile, so the caller must reap before sleeping (§2.7.10).
   */
  enableInterrupts(): boolean;

  /**
   * Interrupt coalescing: asks for a call once `count` buffers beyond the last
   * reaped one are used, not on the first. With VIRTIO_RING_F_EVENT_IDX on a split
   * ring this sets used_event to the index of the `count`-th (§2.7.10.2); otherwise
   * it is enableInterrupts() (a call on the next completion). Returns true when
   * `count` completions (one without event index) are already waiting, so the
   * caller reaps instead of sleeping. `count` must not exceed what the device
   * will complete (the buffers outstanding), or the call never comes.
   */
  enableInterruptsAfter(count: number): boolean;

  /** Asks the device not to send calls: the driver polls. This is the initial state. */
  disableInterrupts(): void;

  /**
   * The ring position to send with SET_VRING_BASE: the next avail index (split),
   * or the packed encoding of avail/used positions and wrap counters.
   */
  readonly vringBase: number;

  /**
   * Where a new device should resume when the old one vanished without
   * answering GET_VRING_BASE (a crash): just past the last completion it wrote,
   * reaped or not. Buffers made available after that are processed again by the
   * new device. Assumes the device completes in order, as every vhost-user net
   * back-end does; QEMU makes the same assumption when it restores last_avail_idx
   * from the used index (virtio_queue_restore_last_avail_idx). Throws a
   * VHOST_RING_* error if the used ring shows more completions than are outstanding.
   */
  resumeBase(): number;

  /**
   * Forgets every buffer and starts over as a fresh ring (indexes and wrap
   * counters at their initial values, ring memory zeroed, a broken queue usable
   * again), as after a device reset (virtio 1.2 §2.1.1). For a driver that puts
   * its outstanding requests in front of a new back-end itself; the caller must
   * take what the old device completed first (reap) and must not start the ring
   * on a back-end before re-adding.
   */
  reset(): void;
}

/** @internal A VHOST_RING_* error naming vring `index`, for the queue implementations. */
export function ringError(code: VhostErrorCode, index: number, message: string, rule: string, cause?: unknown): VhostUserError {
  return new VhostUserError(code, `vring ${index}: ${message}`, { rule, cause });
}
