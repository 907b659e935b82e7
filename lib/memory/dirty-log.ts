/**
 * The dirty log of live migration (vhost-user.rst, "Migration" and
 * VHOST_USER_SET_LOG_BASE): a bitmap with one bit per VHOST_LOG_PAGE (4 KiB)
 * of guest memory, bit `p % 8` of byte `p / 8` for page `p`, in shared memory.
 * The front-end creates it (a memfd, handed over with LOG_SHMFD) and reads and
 * clears it; the back-end maps it and sets the bit of every page it writes.
 * Bits are set and cleared atomically, since both sides work on it at once.
 */
import { VhostUserError } from '../errors.js';
import { C, closeFd, libc, syscallError } from '../native/libc.js';
import { Mapping } from '../native/mapping.js';
import { VHOST_LOG_PAGE } from '../protocol/constants.js';

/** A log covering more than 64 TiB of guest memory is not a log a back-end believes. */
const MAX_LOG_SIZE = 2 ** 31;
const PAGE = 4096;

export class DirtyLog {
  /** The memfd when this side created the log (front-end), else -1. */
  readonly fd: number;
  /** Bytes of bitmap. */
  readonly size: number;
  /** Pages the log covers. */
  readonly pages: number;
  private readonly mapping: Mapping;
  private readonly bits: Uint8Array;

  private constructor(fd: number, mapping: Mapping, skip: number, size: number) {
    this.fd = fd;
    this.mapping = mapping;
    this.size = size;
    this.bits = mapping.bytes(skip, size);
    this.pages = size * 8;
  }

  /** Front-end: a zeroed log covering guest memory up to GPA `guestEnd`, in a memfd of whole pages (`fd`, to share with SET_LOG_BASE). */
  static create(guestEnd: number): DirtyLog {
    const size = Math.ceil(Math.ceil(guestEnd / VHOST_LOG_PAGE) / 8 / PAGE) * PAGE;
    const fd = libc.memfd_create('vhost-user-dirty-log', C.MFD_CLOEXEC);
    if (fd < 0) throw syscallError('memfd_create');
    try {
      if (libc.ftruncate(fd, size) !== 0) throw syscallError('ftruncate');
      return new DirtyLog(fd, Mapping.map(fd, size), 0, size);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Back-end: maps `size` bytes of the front-end's `fd` from `offset` (SET_LOG_BASE's mmap_size and mmap_offset). The fd may be closed afterwards. */
  static map(fd: number, size: bigint, offset: bigint, request: string): DirtyLog {
    const rule = "vhost-user.rst, 'VHOST_USER_SET_LOG_BASE'";
    if (size === 0n || size > BigInt(MAX_LOG_SIZE)) {
      throw new VhostUserError('VHOST_INVALID_PAYLOAD', `dirty log of ${size} bytes (1..${MAX_LOG_SIZE} accepted)`, { request, rule });
    }
    // mmap wants a page-aligned offset: map from the page below and skip the difference.
    const aligned = offset - (offset % BigInt(PAGE));
    const skip = Number(offset - aligned);
    let mapping: Mapping;
    try {
      mapping = Mapping.map(fd, Number(size) + skip, { offset: Number(aligned) });
    } catch (e) {
      throw new VhostUserError('VHOST_INVALID_PAYLOAD', `the dirty log fd cannot be mapped (${size} bytes at ${offset}): ${(e as VhostUserError).message}`, { request, rule });
    }
    return new DirtyLog(-1, mapping, skip, Number(size));
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

  /**
   * The pages marked since the last call, ascending, their bits cleared with an
   * atomic exchange so a mark racing with the read is kept for the next call.
   * Allocates: not for the packet path.
   */
  sync(): number[] {
    const pages: number[] = [];
    const bits = this.bits;
    for (let i = 0; i < bits.length; i++) {
      if (bits[i] === 0) continue;
      const v = Atomics.exchange(bits, i, 0);
      for (let b = 0; b < 8; b++) if (v & (1 << b)) pages.push(i * 8 + b);
    }
    return pages;
  }

  /** Unmaps the log and closes the memfd this side created. */
  close(): void {
    this.mapping.close();
    if (this.fd >= 0) closeFd(this.fd);
  }
}
