/**
 * A first-fit allocator over one range of guest-physical addresses: where a
 * device driver puts buffers it fills or reads for one request (bounce buffers,
 * discard segment tables) when the caller did not bring its own guest memory.
 *
 * Free extents are kept sorted by address and merged with their neighbours on
 * free, so the heap never fragments into more extents than there are live
 * allocations plus one. It is for the ordinary request path: alloc() and free()
 * allocate a little JS memory; hot paths preallocate their buffers instead.
 */
import { VhostUserError } from '../errors.js';

/**
 * First-fit allocation of guest-physical byte ranges inside [base, base + size); it hands out
 * addresses only and never touches the memory behind them.
 */
export class GuestHeap {
  /** First GPA of the range. */
  readonly base: number;
  /** Bytes in the range. */
  readonly size: number;
  /** Free extents [start, end) in ascending order. */
  private readonly starts: number[];
  private readonly ends: number[];
  private readonly live = new Map<number, number>();
  private freeTotal: number;

  constructor(base: number, size: number) {
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(size) || size <= 0) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `guest heap [${base}, +${size}) is not a positive range`);
    }
    this.base = base;
    this.size = size;
    this.starts = [base];
    this.ends = [base + size];
    this.freeTotal = size;
  }

  /** Bytes not allocated (possibly in several extents). */
  get freeBytes(): number {
    return this.freeTotal;
  }

  /** Allocations not yet freed. */
  get allocations(): number {
    return this.live.size;
  }

  /**
   * The GPA of `length` bytes aligned to `align` (a power of 2), or -1 when no
   * free extent is large enough (the caller waits for a free() and tries again).
   */
  alloc(length: number, align = 8): number {
    if (!Number.isSafeInteger(length) || length <= 0 || align <= 0 || (align & (align - 1)) !== 0) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `guest heap: cannot allocate ${length} bytes aligned to ${align}`);
    }
    for (let i = 0; i < this.starts.length; i++) {
      const start = this.starts[i]!;
      const end = this.ends[i]!;
      const at = Math.ceil(start / align) * align;
      if (at + length > end) continue;
      // Split the extent into what lies before the allocation and what lies after.
      const before = at > start;
      const after = at + length < end;
      if (before && after) {
        this.ends[i] = at;
        this.starts.splice(i + 1, 0, at + length);
        this.ends.splice(i + 1, 0, end);
      } else if (before) {
        this.ends[i] = at;
      } else if (after) {
        this.starts[i] = at + length;
      } else {
        this.starts.splice(i, 1);
        this.ends.splice(i, 1);
      }
      this.live.set(at, length);
      this.freeTotal -= length;
      return at;
    }
    return -1;
  }

  /** Returns an allocation. Throws VHOST_INVALID_ARGUMENT for a GPA alloc() did not return (or returned and was freed). */
  free(gpa: number): void {
    const length = this.live.get(gpa);
    if (length === undefined) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `guest heap: 0x${gpa.toString(16)} is not allocated`);
    this.live.delete(gpa);
    this.freeTotal += length;
    const end = gpa + length;
    let i = 0;
    while (i < this.starts.length && this.starts[i]! < gpa) i++;
    const joinPrev = i > 0 && this.ends[i - 1] === gpa;
    const joinNext = i < this.starts.length && this.starts[i] === end;
    if (joinPrev && joinNext) {
      this.ends[i - 1] = this.ends[i]!;
      this.starts.splice(i, 1);
      this.ends.splice(i, 1);
    } else if (joinPrev) {
      this.ends[i - 1] = end;
    } else if (joinNext) {
      this.starts[i] = gpa;
    } else {
      this.starts.splice(i, 0, gpa);
      this.ends.splice(i, 0, end);
    }
  }
}
