/**
 * A back-end's view of guest memory, built from SET_MEM_TABLE, ADD_MEM_REG and
 * REM_MEM_REG (vhost-user.rst, 'Memory access'). Each region's fd is mapped
 * MAP_SHARED over [0, mmap_offset + memory_size) and seen from mmap_offset; the
 * fd is closed right after mmap() (the mapping keeps the file alive), so the
 * only resources held are the mappings, all released by close().
 *
 * Addresses: guest-physical (GPA) for descriptors, front-end virtual ("user")
 * addresses for SET_VRING_ADDR, translated to GPAs with userToGpa().
 *
 * It provides the GuestMemoryAccess methods, so SplitDeviceQueue and
 * PackedDeviceQueue run on it unchanged.
 */
import { fstatSync } from 'node:fs';
import { VhostUserError } from '../errors.js';
import type { GuestMemoryAccess } from '../memory/guest-memory-access.js';
import { closeFd } from '../native/libc.js';
import { Mapping } from '../native/mapping.js';
import type { MemoryRegion } from '../protocol/payloads.js';

/** One region of the front-end's memory as the back-end mapped it (vhost-user.rst, "Memory region description"). */
export interface BackendRegion {
  /** Guest physical address of the region's first byte. */
  readonly guestPhysAddr: number;
  /** Bytes in the region. */
  readonly size: number;
  /** The front-end's virtual address of the first byte (used by SET_VRING_ADDR without IOMMU). */
  readonly userAddr: bigint;
  /** Offset of the region in the fd's mapping. */
  readonly mmapOffset: number;
  /** The back-end's mapping of the fd (from 0 to mmapOffset + size). */
  readonly mapping: Mapping;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const RULE = "vhost-user.rst, 'Memory access'";

function refuse(code: 'VHOST_MEMORY_OVERLAP' | 'VHOST_INVALID_PAYLOAD' | 'VHOST_MEMORY_OUT_OF_RANGE', message: string, request?: string): never {
  throw new VhostUserError(code, message, { request, rule: RULE });
}

/** Checks one region's numbers; GPA, size and offset become JS numbers (exact below 2^53). */
function checkRegion(r: MemoryRegion, request?: string): void {
  if (r.memorySize === 0n) refuse('VHOST_INVALID_PAYLOAD', 'region has size 0', request);
  for (const [what, base] of [
    ['guest address', r.guestPhysAddr],
    ['user address', r.userAddr],
    ['mmap offset', r.mmapOffset],
  ] as const) {
    if (base + r.memorySize > (1n << 64n) - 1n) refuse('VHOST_INVALID_PAYLOAD', `${what} + size overflows u64`, request);
  }
  if (r.guestPhysAddr + r.memorySize > MAX_SAFE || r.mmapOffset + r.memorySize > MAX_SAFE) {
    refuse('VHOST_MEMORY_OUT_OF_RANGE', `region [0x${r.guestPhysAddr.toString(16)}, +0x${r.memorySize.toString(16)}) lies beyond 2^53`, request);
  }
}

function overlaps(aBase: bigint, aSize: bigint, bBase: bigint, bSize: bigint): boolean {
  return aBase < bBase + bSize && bBase < aBase + aSize;
}

export class BackendMemory implements GuestMemoryAccess {
  private list: BackendRegion[] = [];
  private last: BackendRegion | null = null;
  private closed = false;

  /** @param maxRegions the slot count offered with GET_MAX_MEM_SLOTS. */
  constructor(
    /** Most regions the table may hold at once (ADD_MEM_REG beyond it is refused). */
    readonly maxRegions = 32,
  ) {}

  /** The regions mapped now, in the order added. */
  get regions(): readonly BackendRegion[] {
    return this.list;
  }

  /** True before the first memory table and after the last region was removed. */
  get isEmpty(): boolean {
    return this.list.length === 0;
  }

  /**
   * SET_MEM_TABLE: replaces every region. Takes ownership of `fds` (closed in
   * every case). On failure nothing changes.
   */
  setTable(regions: readonly MemoryRegion[], fds: readonly number[], request = 'SET_MEM_TABLE'): void {
    const mapped: BackendRegion[] = [];
    try {
      this.checkOpen();
      if (regions.length !== fds.length) refuse('VHOST_INVALID_PAYLOAD', `${regions.length} regions but ${fds.length} fds`, request);
      if (regions.length > this.maxRegions) refuse('VHOST_INVALID_PAYLOAD', `${regions.length} regions, at most ${this.maxRegions}`, request);
      regions.forEach((r) => checkRegion(r, request));
      for (let i = 0; i < regions.length; i++) {
        for (let j = 0; j < i; j++) checkDisjoint(regions[i]!, regions[j]!, request);
      }
      for (let i = 0; i < regions.length; i++) mapped.push(mapRegion(regions[i]!, fds[i]!, request));
    } catch (e) {
      for (const m of mapped) m.mapping.close();
      throw e;
    } finally {
      for (const fd of fds) closeFd(fd);
    }
    this.releaseAll();
    this.list = mapped.sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
  }

  /** ADD_MEM_REG: one more region. Takes ownership of `fd`. */
  add(region: MemoryRegion, fd: number): BackendRegion {
    let mapped: BackendRegion;
    try {
      this.checkOpen();
      checkRegion(region, 'ADD_MEM_REG');
      if (this.list.length >= this.maxRegions) refuse('VHOST_INVALID_PAYLOAD', `all ${this.maxRegions} memory slots are in use`, 'ADD_MEM_REG');
      for (const r of this.list) checkDisjoint(region, describe(r), 'ADD_MEM_REG');
      mapped = mapRegion(region, fd, 'ADD_MEM_REG');
    } finally {
      closeFd(fd);
    }
    this.list.push(mapped);
    this.list.sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
    return mapped;
  }

  /**
   * REM_MEM_REG: removes the region with this guest address, size and user
   * address (the mmap offset is not compared: QEMU sends 0 there). Returns false
   * when no such region exists.
   */
  remove(region: MemoryRegion): boolean {
    this.checkOpen();
    const i = this.list.findIndex(
      (r) => BigInt(r.guestPhysAddr) === region.guestPhysAddr && BigInt(r.size) === region.memorySize && r.userAddr === region.userAddr,
    );
    if (i < 0) return false;
    const [r] = this.list.splice(i, 1);
    if (this.last === r) this.last = null;
    r!.mapping.close();
    return true;
  }

  /** The region holding [gpa, gpa + length) entirely, or VHOST_MEMORY_OUT_OF_RANGE. */
  regionOf(gpa: number, length = 1): BackendRegion {
    const last = this.last;
    if (last !== null && gpa >= last.guestPhysAddr && length >= 0 && gpa + length <= last.guestPhysAddr + last.size) return last;
    this.checkOpen();
    if (Number.isSafeInteger(gpa) && Number.isSafeInteger(length) && gpa >= 0 && length >= 0) {
      for (const r of this.list) {
        if (gpa >= r.guestPhysAddr && gpa + length <= r.guestPhysAddr + r.size) return (this.last = r);
      }
    }
    throw new VhostUserError('VHOST_MEMORY_OUT_OF_RANGE', `guest range [0x${gpa.toString(16)}, +${length}) is not inside one mapped region`, { rule: RULE });
  }

  /** Front-end virtual address to GPA; the whole [addr, addr + length) must lie in one region. */
  userToGpa(userAddr: bigint, length = 1): number {
    this.checkOpen();
    const len = BigInt(length);
    for (const r of this.list) {
      if (userAddr >= r.userAddr && userAddr + len <= r.userAddr + BigInt(r.size)) {
        return r.guestPhysAddr + Number(userAddr - r.userAddr);
      }
    }
    throw new VhostUserError('VHOST_MEMORY_OUT_OF_RANGE', `user range [0x${userAddr.toString(16)}, +${length}) is not inside one mapped region`, { rule: RULE });
  }

  bytes(gpa: number, length: number): Uint8Array {
    const r = this.regionOf(gpa, length);
    return r.mapping.bytes(r.mmapOffset + (gpa - r.guestPhysAddr), length);
  }

  dataView(gpa: number, length: number): DataView {
    const r = this.regionOf(gpa, length);
    return r.mapping.dataView(r.mmapOffset + (gpa - r.guestPhysAddr), length);
  }

  /**
   * The ArrayBuffer window holding guest range [gpa, gpa + length) and where the range starts in it,
   * for typed-array views; VHOST_INVALID_ADDRESS when the range is not inside one region.
   */
  window(gpa: number, length: number): {
    /** The mapping window holding the range. */
    buffer: ArrayBuffer;
    /** Where the range starts in `buffer`. */
    byteOffset: number;
  } {
    const r = this.regionOf(gpa, length);
    return r.mapping.window(r.mmapOffset + (gpa - r.guestPhysAddr), length);
  }

  /** Unmaps every region (views handed out become empty). Stays usable: a new table may follow. */
  clear(): void {
    this.releaseAll();
  }

  /** Unmaps everything. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.releaseAll();
    this.closed = true;
  }

  private releaseAll(): void {
    this.last = null;
    for (const r of this.list.splice(0)) r.mapping.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new VhostUserError('VHOST_MEMORY_CLOSED', 'back-end memory is closed');
  }
}

function describe(r: BackendRegion): MemoryRegion {
  return { guestPhysAddr: BigInt(r.guestPhysAddr), memorySize: BigInt(r.size), userAddr: r.userAddr, mmapOffset: BigInt(r.mmapOffset) };
}

function checkDisjoint(a: MemoryRegion, b: MemoryRegion, request?: string): void {
  if (overlaps(a.guestPhysAddr, a.memorySize, b.guestPhysAddr, b.memorySize)) {
    refuse('VHOST_MEMORY_OVERLAP', `guest ranges at 0x${a.guestPhysAddr.toString(16)} and 0x${b.guestPhysAddr.toString(16)} overlap`, request);
  }
  if (overlaps(a.userAddr, a.memorySize, b.userAddr, b.memorySize)) {
    refuse('VHOST_MEMORY_OVERLAP', `user ranges at 0x${a.userAddr.toString(16)} and 0x${b.userAddr.toString(16)} overlap`, request);
  }
}

/**
 * Maps [0, mmap_offset + size) of `fd` and checks the file is that long first:
 * touching pages past the end of a file raises SIGBUS, which would kill us.
 */
function mapRegion(r: MemoryRegion, fd: number, request?: string): BackendRegion {
  const size = Number(r.memorySize);
  const offset = Number(r.mmapOffset);
  const length = offset + size;
  let st;
  try {
    st = fstatSync(fd);
  } catch (cause) {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `region fd ${fd} is not usable`, { request, cause });
  }
  if ((st.isFile() || st.size > 0) && st.size < length) {
    refuse('VHOST_MEMORY_OUT_OF_RANGE', `region needs ${length} bytes of its file (mmap offset ${offset} + size ${size}); the file has ${st.size}`, request);
  }
  let mapping: Mapping;
  try {
    mapping = Mapping.map(fd, length, { shared: true });
  } catch (cause) {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `mmap of a ${length}-byte region failed`, { request, cause });
  }
  return { guestPhysAddr: Number(r.guestPhysAddr), size, userAddr: r.userAddr, mmapOffset: offset, mapping };
}
