/**
 * The dirty log a front-end shares for live migration (vhost-user.rst,
 * "Migration" and VHOST_USER_SET_LOG_BASE): a bitmap with one bit per 4 KiB
 * guest page, bit `p % 8` of byte `p / 8` for page `p`, in memory the front-end
 * hands over as an fd (LOG_SHMFD). While VHOST_F_LOG_ALL is negotiated the
 * back-end sets the bit of every page it writes: buffers it fills and, for rings
 * set up with VHOST_VRING_F_LOG, the used ring. Bits are set with an atomic OR,
 * since the front-end reads and clears them concurrently.
 */
import { VhostUserError } from '../errors.js';
import { Mapping } from '../native/mapping.js';
import { VHOST_LOG_PAGE } from '../protocol/constants.js';
import { violation } from './violation.js';

/** A log covering more than 64 TiB of guest memory is not a log this back-end believes. */
const MAX_LOG_SIZE = 2 ** 31;

export class DirtyLog {
  private readonly mapping: Mapping;
  private readonly bits: Uint8Array;
  /** Pages the log covers. */
  readonly pages: number;

  private constructor(mapping: Mapping, skip: number, size: number) {
    this.mapping = mapping;
    this.bits = mapping.bytes(skip, size);
    this.pages = size * 8;
  }

  /** Maps `size` bytes of `fd` from `offset` (SET_LOG_BASE's mmap_size and mmap_offset). The fd may be closed afterwards. */
  static map(fd: number, size: bigint, offset: bigint, request: string): DirtyLog {
    if (size === 0n || size > BigInt(MAX_LOG_SIZE)) {
      throw violation('VHOST_INVALID_PAYLOAD', `dirty log of ${size} bytes (1..${MAX_LOG_SIZE} accepted)`, request, "vhost-user.rst, 'VHOST_USER_SET_LOG_BASE'");
    }
    // mmap wants a page-aligned offset: map from the page below and skip the difference.
    const aligned = offset - (offset % BigInt(VHOST_LOG_PAGE));
    const skip = Number(offset - aligned);
    let mapping: Mapping;
    try {
      mapping = Mapping.map(fd, Number(size) + skip, { offset: Number(aligned) });
    } catch (e) {
      throw violation('VHOST_INVALID_PAYLOAD', `the dirty log fd cannot be mapped (${size} bytes at ${offset}): ${(e as VhostUserError).message}`, request);
    }
    return new DirtyLog(mapping, skip, Number(size));
  }

  /** Marks every page of [gpa, gpa + length) dirty. A page beyond the log is the front-end's error. */
  mark(gpa: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(gpa / VHOST_LOG_PAGE);
    const last = Math.floor((gpa + length - 1) / VHOST_LOG_PAGE);
    if (last >= this.pages) {
      throw new VhostUserError('VHOST_MEMORY_OUT_OF_RANGE', `a write to guest page ${last} (GPA 0x${gpa.toString(16)}) falls outside a dirty log covering ${this.pages} pages`, { rule: "vhost-user.rst, 'Migration': the log covers all of guest memory" });
    }
    for (let p = first; p <= last; p++) Atomics.or(this.bits, p >>> 3, 1 << (p & 7));
  }

  close(): void {
    this.mapping.close();
  }
}
