/**
 * One mmap'd range and the JS views over it; the only owner of that mapping.
 *
 * Node 20 caps an external ArrayBuffer at 4 GiB (and larger ones abort the
 * process inside napi), so a mapping is seen through windows: each window is a
 * 2 GiB ArrayBuffer starting on a 1 GiB boundary. Windows overlap by half, so any
 * access of at most 1 GiB lies inside a single window wherever it starts.
 * Windows are made on first use and cost address-space bookkeeping only.
 *
 * close() detaches every window before munmap(): a typed array kept past close()
 * then has length 0 and reads undefined, instead of faulting on unmapped pages.
 */
import { C, libc, syscallError } from './libc.js';
import { shim } from './shim.js';
import { VhostUserError } from '../errors.js';

const WINDOW_STRIDE = 2 ** 30;
const WINDOW_LENGTH = 2 * WINDOW_STRIDE;
/** The largest single view a Mapping hands out. */
export const MAX_VIEW_LENGTH = WINDOW_STRIDE;

/** Options of {@link Mapping.map}. */
export interface MapOptions {
  /** File offset of the mapping (page aligned). */
  offset?: number;
  /** Default true: MAP_SHARED, what vhost-user memory needs. */
  shared?: boolean;
  /** PROT_READ only (default read and write). */
  readonly?: boolean;
  /** MAP_POPULATE: fault everything in now (hugetlb guests, benchmarks). */
  populate?: boolean;
}

/** One mmap'd range and the zero-copy views over it; close() detaches every view before munmap. */
export class Mapping {
  private static live = 0;
  /** Mappings made by this library and not yet closed: a leak check for tests and soak runs. */
  static get liveCount(): number {
    return Mapping.live;
  }

  /** The mapping's virtual address in this process. */
  readonly address: number;
  /** Bytes mapped. */
  readonly length: number;
  private readonly windows: (ArrayBuffer | undefined)[] = [];
  private closed = false;

  private constructor(address: number, length: number) {
    this.address = address;
    this.length = length;
    Mapping.live++;
  }

  /** Maps `length` bytes of `fd`. The fd may be closed afterwards; the mapping keeps the file alive. */
  static map(fd: number, length: number, options: MapOptions = {}): Mapping {
    checkLength(length);
    const prot = options.readonly ? C.PROT_READ : C.PROT_READ | C.PROT_WRITE;
    let flags = (options.shared ?? true) ? C.MAP_SHARED : C.MAP_PRIVATE;
    flags |= C.MAP_NORESERVE;
    if (options.populate) flags |= C.MAP_POPULATE;
    const address = libc.mmap(0, length, prot, flags, fd, options.offset ?? 0);
    if (address === -1) throw syscallError('mmap', 'VHOST_SYSCALL', undefined, `fd ${fd}, ${length} bytes`);
    return new Mapping(address, length);
  }

  /**
   * Puts `length` bytes of another file (`fd` from `offset`) in place of this
   * mapping's pages, at the same address (MAP_FIXED replaces the old pages in one
   * step, with no unmapped gap). Every view already handed out stays valid and
   * from now on reads and writes the new file: this is how a driver's rings and
   * buffers move to another guest memory without touching the objects that hold
   * views on them (live migration's switchover). The old file is no longer mapped
   * here; its fd is the caller's. The mapping must be shared and writable.
   */
  replaceFile(fd: number, offset = 0): void {
    if (this.closed) throw new VhostUserError('VHOST_MEMORY_CLOSED', 'mapping is closed');
    const flags = C.MAP_SHARED | C.MAP_FIXED | C.MAP_NORESERVE;
    const address = libc.mmap(this.address, this.length, C.PROT_READ | C.PROT_WRITE, flags, fd, offset);
    if (address === -1) throw syscallError('mmap', 'VHOST_SYSCALL', undefined, `MAP_FIXED fd ${fd}, ${this.length} bytes`);
  }

  /** Private anonymous memory, e.g. scratch space for msghdr and control messages. */
  static anonymous(length: number): Mapping {
    checkLength(length);
    const flags = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_NORESERVE;
    const address = libc.mmap(0, length, C.PROT_READ | C.PROT_WRITE, flags, -1, 0);
    if (address === -1) throw syscallError('mmap', 'VHOST_SYSCALL', undefined, `anonymous, ${length} bytes`);
    return new Mapping(address, length);
  }

  /** Whether close() ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * The ArrayBuffer window holding [offset, offset + length), and where the range
   * starts inside it. Zero-copy; valid until close().
   */
  window(offset: number, length: number): {
    /** The window's ArrayBuffer. */
    buffer: ArrayBuffer;
    /** Where the range starts in it. */
    byteOffset: number;
  } {
    if (this.closed) throw new VhostUserError('VHOST_MEMORY_CLOSED', 'mapping is closed');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new VhostUserError('VHOST_MEMORY_OUT_OF_RANGE', `range [${offset}, +${length}) is outside the ${this.length}-byte mapping`);
    }
    if (length > MAX_VIEW_LENGTH) {
      throw new VhostUserError('VHOST_MEMORY_SPANS_WINDOW', `a single view is at most ${MAX_VIEW_LENGTH} bytes (asked ${length})`);
    }
    const index = Math.floor(offset / WINDOW_STRIDE);
    let buffer = this.windows[index];
    if (buffer === undefined) {
      const start = index * WINDOW_STRIDE;
      const windowLength = Math.min(WINDOW_LENGTH, this.length - start);
      buffer = shim.externalArrayBuffer(BigInt(this.address + start), windowLength);
      this.windows[index] = buffer;
    }
    return { buffer, byteOffset: offset - index * WINDOW_STRIDE };
  }

  /** Zero-copy bytes at `offset` (at most 1 GiB); valid until close(). */
  bytes(offset: number, length: number): Uint8Array {
    const { buffer, byteOffset } = this.window(offset, length);
    return new Uint8Array(buffer, byteOffset, length);
  }

  /** A DataView on `length` bytes at `offset` (at most 1 GiB); valid until close(). */
  dataView(offset: number, length: number): DataView {
    const { buffer, byteOffset } = this.window(offset, length);
    return new DataView(buffer, byteOffset, length);
  }

  /** Detaches every view, then munmap(). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Mapping.live--;
    for (const buffer of this.windows) if (buffer !== undefined) shim.detachArrayBuffer(buffer);
    this.windows.length = 0;
    if (libc.munmap(this.address, this.length) !== 0) throw syscallError('munmap');
  }
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `mapping length must be a positive integer (got ${length})`);
  }
}
