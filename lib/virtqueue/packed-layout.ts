/**
 * Packed virtqueue layout (virtio 1.2 §2.8): one descriptor ring of 16-byte
 * descriptors (16-byte aligned, the Descriptor Area), then the 4-byte Driver
 * Event Suppression structure (Driver Area) and the 4-byte Device Event
 * Suppression structure (Device Area), each 4-byte aligned (§2.8.10.1).
 */
import { VhostUserError } from '../errors.js';

/** struct pvirtq_desc (§2.8.13): addr u64 @0, len u32 @8, id u16 @12, flags u16 @14. */
export const PACKED_DESC_SIZE = 16;
/** Byte offset of `le64 addr` in a packed descriptor: the buffer's guest-physical address. */
export const PACKED_DESC_ADDR = 0;
/** Byte offset of `le32 len` in a packed descriptor: buffer length, or bytes written when the device marks it used. */
export const PACKED_DESC_LEN = 8;
/** Byte offset of `le16 id` in a packed descriptor: the buffer id the device returns with it. */
export const PACKED_DESC_ID = 12;
/** Byte offset of `le16 flags` in a packed descriptor (NEXT, WRITE, INDIRECT, AVAIL, USED). */
export const PACKED_DESC_FLAGS = 14;

/** Descriptor flag (§2.8.1): equals the driver's wrap counter when the driver makes the descriptor available. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/**
 * Descriptor flag (§2.8.1): the device sets it equal to AVAIL (both to its wrap counter) when it
 * marks the descriptor used; AVAIL ≠ USED means available and not yet used.
 */
export const VIRTQ_DESC_F_USED = 1 << 15;

/**
 * struct pvirtq_event_suppress (§2.8.14): `desc` u16 (offset in bits 0-14, wrap
 * counter in bit 15) at 0, `flags` u16 at 2.
 */
export const PACKED_EVENT_SIZE = 4;
/** Byte offset of `le16 desc` in an event suppression structure: the descriptor offset and wrap counter for RING_EVENT_FLAGS_DESC. */
export const PACKED_EVENT_DESC = 0;
/** Byte offset of `le16 flags` in an event suppression structure (RING_EVENT_FLAGS_*). */
export const PACKED_EVENT_FLAGS = 2;
/** Bit 15 of `desc`: the wrap counter the event offset refers to. */
export const PACKED_EVENT_WRAP = 1 << 15;

/** Event suppression flags (§2.8.10): send every notification. */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Event suppression flags (§2.8.10): send no notification. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/**
 * Event suppression flags (§2.8.10): notify only when the descriptor at `desc` (with its wrap counter)
 * is reached. Valid only with VIRTIO_RING_F_EVENT_IDX.
 */
export const RING_EVENT_FLAGS_DESC = 2;

/** Packed rings hold up to 2^15 entries; the size need not be a power of 2 (§2.8, §2.8.10.1). */
export const PACKED_QUEUE_MAX_SIZE = 32768;

/** Where the three areas of one packed ring lie; see {@link packedRingLayout}. */
export interface PackedRingLayout {
  /** Queue size: descriptors in the ring (1..{@link PACKED_QUEUE_MAX_SIZE}, any number). */
  size: number;
  /** Address of the descriptor ring (Descriptor Area, 16-byte aligned), in the address space `base` was given in. */
  desc: number;
  /** Address of the Driver Event Suppression structure (Driver Area), written by the driver. */
  driver: number;
  /** Address of the Device Event Suppression structure (Device Area), written by the device. */
  device: number;
  /** First byte past the device event suppression structure. */
  end: number;
}

/** Places a packed ring of `size` descriptors at `base` (16-byte aligned), areas back to back. */
export function packedRingLayout(base: number, size: number): PackedRingLayout {
  checkPackedQueueSize(size);
  if (!Number.isSafeInteger(base) || base < 0 || base % 16 !== 0) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `descriptor ring must be 16-byte aligned (0x${base.toString(16)})`, {
      rule: 'virtio 1.2 §2.8.10.1: Descriptor Ring alignment 16',
    });
  }
  // 16 * size keeps the next area 16-aligned, so both 4-byte structures are aligned too.
  const driver = base + PACKED_DESC_SIZE * size;
  const device = driver + PACKED_EVENT_SIZE;
  return { size, desc: base, driver, device, end: device + PACKED_EVENT_SIZE };
}

/** Throws VHOST_INVALID_ARGUMENT unless `size` is an integer in 1..{@link PACKED_QUEUE_MAX_SIZE} (§2.8). */
export function checkPackedQueueSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > PACKED_QUEUE_MAX_SIZE) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `packed queue size must be in 1..${PACKED_QUEUE_MAX_SIZE} (got ${size})`, {
      rule: 'virtio 1.2 §2.8: packed virtqueues support up to 2^15 entries',
    });
  }
}
