/**
 * One region of guest RAM: a file (memfd by default) mapped MAP_SHARED in this
 * process, whose fd is what SET_MEM_TABLE / ADD_MEM_REG hand to the back-end.
 *
 * memfds are sealed against shrinking: a back-end that ftruncate()s guest RAM
 * would otherwise make this process take SIGBUS on its next access
 * (vhost-user-notes §5). The file is sparse, so a 64 GiB region costs nothing
 * until pages are touched.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { VhostUserError } from '../errors.js';
import { C, closeFd, libc, syscallError } from '../native/libc.js';
import { Mapping } from '../native/mapping.js';

/** What holds a region's memory; every kind gives the back-end an fd it can map. */
export type RegionBacking =
  /** An anonymous memfd, sealed against shrinking (the default). */
  | {
      /** An anonymous memfd. */
      kind: 'memfd';
    }
  /** MFD_HUGETLB; needs reserved huge pages (/proc/sys/vm/nr_hugepages). */
  | {
      /** Huge pages. */
      kind: 'hugetlb';
      /** Default '2M'. */
      pageSize?: '2M' | '1G';
    }
  /** A file mapped shared, e.g. on /dev/shm or a hugetlbfs mount; created or extended to `size`. */
  | {
      /** A shared file mapping. */
      kind: 'file';
      /** The file. */
      path: string;
    };

/** Options of {@link GuestRegion.create} and {@link GuestMemory.addRegion}. */
export interface GuestRegionOptions {
  /** Where the region starts in guest-physical address space. */
  guestPhysAddr: number;
  /** Bytes; a multiple of 4 KiB (of the huge page size for hugetlb). */
  size: number;
  /** Default `{ kind: 'memfd' }`. */
  backing?: RegionBacking;
  /** Fault every page in at creation (MAP_POPULATE). */
  populate?: boolean;
  /** Name shown in /proc/PID/maps for memfds. */
  name?: string;
}

const PAGE_SIZE = 4096;
const MFD_HUGE_SHIFT = 26;
const HUGE_PAGE = { '2M': 2 * 2 ** 20, '1G': 2 ** 30 } as const;

/** One region of guest memory: an fd mapped shared into this process, handed to the back-end with SET_MEM_TABLE or ADD_MEM_REG. */
export class GuestRegion {
  /** Where the region starts in guest-physical address space (guest_phys_addr). */
  readonly guestPhysAddr: number;
  /** Bytes (memory_size). */
  readonly size: number;
  /** Offset into `fd` where the region starts (mmap_offset in the spec). */
  readonly mmapOffset = 0;
  /** What holds the memory. */
  readonly backing: RegionBacking;
  private fdOwned: number;
  private readonly mapping: Mapping;

  private constructor(guestPhysAddr: number, size: number, fd: number, mapping: Mapping, backing: RegionBacking) {
    this.guestPhysAddr = guestPhysAddr;
    this.size = size;
    this.fdOwned = fd;
    this.mapping = mapping;
    this.backing = backing;
  }

  /** Creates and maps the backing (memfd, hugetlb memfd or file). */
  static create(options: GuestRegionOptions): GuestRegion {
    const backing = options.backing ?? { kind: 'memfd' };
    const { guestPhysAddr, size } = options;
    const align = backing.kind === 'hugetlb' ? HUGE_PAGE[backing.pageSize ?? '2M'] : PAGE_SIZE;
    if (!Number.isSafeInteger(size) || size <= 0 || size % align !== 0) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `region size ${size} must be a positive multiple of ${align}`);
    }
    if (!Number.isSafeInteger(guestPhysAddr) || guestPhysAddr < 0 || guestPhysAddr % align !== 0) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `guest physical address ${guestPhysAddr} must be a non-negative multiple of ${align}`);
    }
    const fd = openBacking(backing, size, options.name ?? `guest-ram@${guestPhysAddr.toString(16)}`);
    try {
      const mapping = Mapping.map(fd, size, { shared: true, populate: options.populate ?? false });
      return new GuestRegion(guestPhysAddr, size, fd, mapping, backing);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** The fd to pass to the back-end; owned by this region. */
  get fd(): number {
    if (this.fdOwned < 0) throw new VhostUserError('VHOST_MEMORY_CLOSED', 'region is closed');
    return this.fdOwned;
  }

  /** This process's virtual address of the region: `userspace_addr` in the spec. */
  get userAddr(): number {
    return this.mapping.address;
  }

  /** The first guest-physical address past the region. */
  get end(): number {
    return this.guestPhysAddr + this.size;
  }

  /** Whether close() ran. */
  get isClosed(): boolean {
    return this.fdOwned < 0;
  }

  /** Whether [gpa, gpa + length) lies inside this region. */
  containsRange(gpa: number, length: number): boolean {
    return gpa >= this.guestPhysAddr && length >= 0 && gpa + length <= this.end;
  }

  /** Zero-copy bytes at an offset into the region (at most 1 GiB per view). */
  bytes(offset: number, length: number): Uint8Array {
    return this.mapping.bytes(offset, length);
  }

  /** A DataView on `length` bytes at an offset into the region. */
  dataView(offset: number, length: number): DataView {
    return this.mapping.dataView(offset, length);
  }

  /** The ArrayBuffer window and offset of a range of the region, for typed arrays of any element type. */
  window(offset: number, length: number): {
    /** The mapping's ArrayBuffer. */
    buffer: ArrayBuffer;
    /** Where the range starts in it. */
    byteOffset: number;
  } {
    return this.mapping.window(offset, length);
  }

  /**
   * Exchanges the memory behind this region and `other` (same size): each
   * region's mapping now shows the other's file, at its own unchanged address,
   * and each owns the other's fd. Views handed out by either region stay valid
   * and follow the exchange. Live migration uses it at switchover: the driver's
   * region (its rings and buffers hold views into it) takes the destination's
   * memfd, so the driver runs on the destination memory unchanged and with no
   * per-packet cost, while `other` keeps the source's memfd for the checks that
   * follow (see lib/migration).
   */
  swapBacking(other: GuestRegion): void {
    if (other.size !== this.size || this.isClosed || other.isClosed) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `cannot exchange the memory of regions of ${this.size} and ${other.size} bytes (or a closed one)`);
    }
    const mine = this.fdOwned;
    this.mapping.replaceFile(other.fdOwned, other.mmapOffset);
    other.mapping.replaceFile(mine, this.mmapOffset);
    this.fdOwned = other.fdOwned;
    other.fdOwned = mine;
  }

  /** Unmaps (detaching every view handed out) and closes the fd. Idempotent. */
  close(): void {
    if (this.fdOwned < 0) return;
    this.mapping.close();
    closeFd(this.fdOwned);
    this.fdOwned = -1;
  }
}

function openBacking(backing: RegionBacking, size: number, name: string): number {
  if (backing.kind === 'file') {
    const fd = openSync(backing.path, 'a+');
    // 'a+' is only to create without truncating; the mapping ignores O_APPEND.
    if (fstatSync(fd).size < size && libc.ftruncate(fd, size) !== 0) {
      const e = syscallError('ftruncate', 'VHOST_SYSCALL', undefined, backing.path);
      closeSync(fd);
      throw e;
    }
    return fd;
  }
  let flags = C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING;
  if (backing.kind === 'hugetlb') flags |= C.MFD_HUGETLB | (Math.log2(HUGE_PAGE[backing.pageSize ?? '2M']) << MFD_HUGE_SHIFT);
  const fd = libc.memfd_create(name, flags);
  if (fd < 0) throw syscallError('memfd_create', 'VHOST_SYSCALL', undefined, backing.kind);
  if (libc.ftruncate(fd, size) !== 0 || libc.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK | C.F_SEAL_GROW | C.F_SEAL_SEAL) !== 0) {
    const e = syscallError('memfd setup', 'VHOST_SYSCALL', undefined, `${size} bytes`);
    closeFd(fd);
    throw e;
  }
  return fd;
}
