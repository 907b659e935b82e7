/**
 * Split virtqueue layout (virtio 1.2 §2.7): a descriptor table of 16-byte
 * entries (16-byte aligned), the driver area "avail" (2-byte aligned) and the
 * device area "used" (4-byte aligned). Both rings end with the event-index word
 * used by VIRTIO_RING_F_EVENT_IDX (used_event after avail.ring, avail_event after
 * used.ring); it is always laid out so the feature can be negotiated later.
 */
import { VhostUserError } from '../errors.js';

export const VRING_DESC_SIZE = 16;
export const VRING_AVAIL_FLAGS = 0;
export const VRING_AVAIL_IDX = 2;
export const VRING_AVAIL_RING = 4;
export const VRING_USED_FLAGS = 0;
export const VRING_USED_IDX = 2;
export const VRING_USED_RING = 4;
export const VRING_USED_ELEM_SIZE = 8;
/** Largest queue size a split ring may have (virtio 1.2 §2.7: Queue Size ≤ 32768). */
export const VIRTQUEUE_MAX_SIZE = 32768;

export interface SplitRingLayout {
  num: number;
  /** Guest-physical addresses. */
  desc: number;
  avail: number;
  used: number;
  /** First byte past the used ring. */
  end: number;
}

export function splitRingSizes(num: number): { desc: number; avail: number; used: number } {
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

export function checkQueueSize(num: number): void {
  if (!Number.isInteger(num) || num < 1 || num > VIRTQUEUE_MAX_SIZE || (num & (num - 1)) !== 0) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `split queue size must be a power of 2 in 1..${VIRTQUEUE_MAX_SIZE} (got ${num})`);
  }
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
