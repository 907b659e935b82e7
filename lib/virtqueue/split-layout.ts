/**
 * Split virtqueue layout (virtio 1.2 §2.7): a descriptor table of 16-byte
 * entries (16-byte aligned), the driver area "avail" (2-byte aligned) and the
 * device area "used" (4-byte aligned). Both rings end with the event-index word
 * used by VIRTIO_RING_F_EVENT_IDX (used_event after avail.ring, avail_event after
 * used.ring); it is always laid out so the feature can be negotiated later.
 */
import { VhostUserError } from '../errors.js';

/** Bytes of one descriptor {le64 addr, le32 len, le16 flags, le16 next} (§2.7.5). */
export const VRING_DESC_SIZE = 16;
/** Byte offset of `le16 flags` in the available ring (§2.7.6). */
export const VRING_AVAIL_FLAGS = 0;
/** Byte offset of `le16 idx` in the available ring: where the driver puts the next entry, free-running mod 2^16. */
export const VRING_AVAIL_IDX = 2;
/** Byte offset of `le16 ring[]` in the available ring: heads of the chains offered to the device. */
export const VRING_AVAIL_RING = 4;
/** Byte offset of `le16 flags` in the used ring (§2.7.8). */
export const VRING_USED_FLAGS = 0;
/** Byte offset of `le16 idx` in the used ring: where the device puts the next entry, free-running mod 2^16. */
export const VRING_USED_IDX = 2;
/** Byte offset of `ring[]` in the used ring. */
export const VRING_USED_RING = 4;
/** Bytes of one used element {le32 id, le32 len} (§2.7.8). */
export const VRING_USED_ELEM_SIZE = 8;
/** Largest queue size a split ring may have (virtio 1.2 §2.7: Queue Size ≤ 32768). */
export const VIRTQUEUE_MAX_SIZE = 32768;

/** Where the three areas of one split ring lie; see {@link splitRingLayout}. */
export interface SplitRingLayout {
  /** Queue size: entries in each area (a power of 2). */
  num: number;
  /** Address of the descriptor table (16-byte aligned), in the same address space as `base` was given. */
  desc: number;
  /** Address of the available ring (driver area), right after the descriptor table. */
  avail: number;
  /** Address of the used ring (device area), 4-byte aligned after the available ring. */
  used: number;
  /** First byte past the used ring. */
  end: number;
}

/**
 * Bytes of each area of a split ring of `num` entries, each including its event-index
 * word (§2.7). Throws VHOST_INVALID_ARGUMENT when `num` is not a valid queue size.
 */
export function splitRingSizes(num: number): {
  /** Bytes of the descriptor table. */
  desc: number;
  /** Bytes of the available ring: flags, idx, ring[num], used_event. */
  avail: number;
  /** Bytes of the used ring: flags, idx, ring[num], avail_event. */
  used: number;
} {
  checkQueueSize(num);
  return {
    desc: VRING_DESC_SIZE * num,
    avail: VRING_AVAIL_RING + 2 * num + 2,
    used: VRING_USED_RING + VRING_USED_ELEM_SIZE * num + 2,
  };
}

/** Places a ring of `num` entries at `base` (16-byte aligned), areas back to back. */
export function splitRingLayout(base: number, num: number): SplitRingLayout {
  if (base % 16 !== 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `descriptor table must be 16-byte aligned (0x${base.toString(16)})`);
  const sizes = splitRingSizes(num);
  const avail = base + sizes.desc;
  const used = align(avail + sizes.avail, 4);
  return { num, desc: base, avail, used, end: used + sizes.used };
}

/** Throws VHOST_INVALID_ARGUMENT unless `num` is a power of 2 in 1..{@link VIRTQUEUE_MAX_SIZE} (§2.7). */
export function checkQueueSize(num: number): void {
  if (!Number.isInteger(num) || num < 1 || num > VIRTQUEUE_MAX_SIZE || (num & (num - 1)) !== 0) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `split queue size must be a power of 2 in 1..${VIRTQUEUE_MAX_SIZE} (got ${num})`);
  }
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
