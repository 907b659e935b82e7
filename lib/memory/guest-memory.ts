/**
 * Guest RAM: a set of non-overlapping GuestRegions addressed by guest-physical
 * address (GPA). Virtqueues and devices read and write the guest only through
 * this class; the back-end sees the same pages through the fds.
 *
 * GPAs are JS numbers: exact up to 2^53, far above any guest this library maps.
 */
import { VhostUserError } from '../errors.js';
import { GuestRegion, type GuestRegionOptions } from './guest-region.js';

/** Options of {@link GuestMemory.create}: `size` or `regions`. */
export interface GuestMemoryOptions {
  /** One memfd region of this many bytes at GPA 0 (shorthand for `regions`). */
  size?: number;
  /** The regions, any backing; they must not overlap. */
  regions?: GuestRegionOptions[];
}

/** Guest memory as a vhost-user back-end sees it: regions of fd-backed shared memory, addressed by guest-physical address. */
export class GuestMemory {
  private readonly list: GuestRegion[] = [];
  private last: GuestRegion | null = null;
  private closed = false;

  /** Creates and maps every region. */
  static create(options: GuestMemoryOptions): GuestMemory {
    const specs = options.regions ?? (options.size !== undefined ? [{ guestPhysAddr: 0, size: options.size }] : []);
    if (specs.length === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'GuestMemory needs `size` or at least one region');
    const memory = new GuestMemory();
    try {
      for (const spec of specs) memory.addRegion(spec);
    } catch (e) {
      memory.close();
      throw e;
    }
    return memory;
  }

  /** Regions in ascending GPA order. */
  get regions(): readonly GuestRegion[] {
    return this.list;
  }

  /** Bytes in all regions. */
  get totalSize(): number {
    return this.list.reduce((sum, r) => sum + r.size, 0);
  }

  /** Creates one more region (VHOST_MEMORY_OVERLAP if it overlaps one); the caller hands it to the back-end (ADD_MEM_REG). */
  addRegion(options: GuestRegionOptions): GuestRegion {
    this.checkOpen();
    const end = options.guestPhysAddr + options.size;
    const clash = this.list.find((r) => options.guestPhysAddr < r.end && r.guestPhysAddr < end);
    if (clash) {
      throw new VhostUserError(
        'VHOST_MEMORY_OVERLAP',
        `region [0x${options.guestPhysAddr.toString(16)}, 0x${end.toString(16)}) overlaps [0x${clash.guestPhysAddr.toString(16)}, 0x${clash.end.toString(16)})`,
      );
    }
    const region = GuestRegion.create(options);
    this.list.push(region);
    this.list.sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
    return region;
  }

  /** Unmaps and closes a region. The caller must first tell the back-end (REM_MEM_REG or a new SET_MEM_TABLE). */
  removeRegion(region: GuestRegion): void {
    const i = this.list.indexOf(region);
    if (i < 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'region does not belong to this GuestMemory');
    this.list.splice(i, 1);
    if (this.last === region) this.last = null;
    region.close();
  }

  /** The region holding [gpa, gpa + length) entirely, or a VHOST_MEMORY_OUT_OF_RANGE error. */
  regionOf(gpa: number, length = 1): GuestRegion {
    const last = this.last;
    if (last !== null && last.containsRange(gpa, length)) return last;
    this.checkOpen();
    for (const r of this.list) {
      if (r.containsRange(gpa, length)) return (this.last = r);
    }
    throw new VhostUserError('VHOST_MEMORY_OUT_OF_RANGE', `guest range [0x${gpa.toString(16)}, +${length}) is not inside one region`);
  }

  /** Guest-physical to this process's virtual address (what vring addresses carry). */
  userAddr(gpa: number, length = 1): number {
    const r = this.regionOf(gpa, length);
    return r.userAddr + (gpa - r.guestPhysAddr);
  }

  /** Zero-copy view of guest bytes (at most 1 GiB, inside one region). */
  bytes(gpa: number, length: number): Uint8Array {
    const r = this.regionOf(gpa, length);
    return r.bytes(gpa - r.guestPhysAddr, length);
  }

  /** A DataView on guest bytes (inside one region). */
  dataView(gpa: number, length: number): DataView {
    const r = this.regionOf(gpa, length);
    return r.dataView(gpa - r.guestPhysAddr, length);
  }

  /** The ArrayBuffer window and offset of a guest range, for building typed arrays of any element type. */
  window(gpa: number, length: number): {
    /** The mapping's ArrayBuffer. */
    buffer: ArrayBuffer;
    /** Where the range starts in it. */
    byteOffset: number;
  } {
    const r = this.regionOf(gpa, length);
    return r.window(gpa - r.guestPhysAddr, length);
  }

  /** A copy of guest bytes. */
  read(gpa: number, length: number): Uint8Array {
    return this.bytes(gpa, length).slice();
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    this.bytes(gpa, data.length).set(data);
  }

  /** A new memory with the same regions (addresses, sizes, backing kind memfd), its own fds, zero-filled: a migration destination. */
  static createLike(memory: GuestMemory, name = 'guest-ram-destination'): GuestMemory {
    return GuestMemory.create({ regions: memory.regions.map((r) => ({ guestPhysAddr: r.guestPhysAddr, size: r.size, name: `${name}@${r.guestPhysAddr.toString(16)}` })) });
  }

  /**
   * Exchanges the memory behind every region of this and `other` (the same
   * layout, see createLike): views handed out by either stay valid and now show
   * the other's memory (GuestRegion.swapBacking).
   */
  swapBacking(other: GuestMemory): void {
    this.checkOpen();
    const mine = this.list;
    const theirs = other.regions;
    if (mine.length !== theirs.length || mine.some((r, i) => r.guestPhysAddr !== theirs[i]!.guestPhysAddr || r.size !== theirs[i]!.size)) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'guest memories of different layouts cannot exchange their backing');
    }
    for (let i = 0; i < mine.length; i++) mine[i]!.swapBacking(theirs[i]!);
  }

  /** Unmaps every region and closes every fd. Views handed out become empty. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.last = null;
    for (const r of this.list.splice(0)) r.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new VhostUserError('VHOST_MEMORY_CLOSED', 'guest memory is closed');
  }
}
