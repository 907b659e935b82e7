/**
 * Payload codecs (vhost-user.rst, 'Payload'). All numbers little-endian.
 *
 * `encode` checks only that each field fits its wire width (VHOST_INVALID_ARGUMENT),
 * so tests and the conformance suite can build payloads that break the rules;
 * `decode` enforces size (VHOST_BAD_PAYLOAD_SIZE) and field rules
 * (VHOST_INVALID_PAYLOAD). `encodePayload` does both, for senders that want
 * what they send held to the rules they apply to what they receive.
 *
 * Sizes are what QEMU (hw/virtio/vhost-user.c) and rust-vmm (vhost_user/message.rs)
 * put on the wire, which for two payloads is more than the spec's tables show:
 * - IOTLB message: 32 bytes, not 26. `struct vhost_iotlb_msg` (three u64, two u8)
 *   has 6 bytes of tail padding and QEMU sends sizeof() of it.
 * - Inflight description: 24 bytes, not 20. VhostUserInflight is not packed; QEMU
 *   sends sizeof() and rejects a GET_INFLIGHT_FD reply of any other size.
 * Memory regions are 32 bytes: the 40-byte form exists only with XEN_MMAP,
 * which this library does not negotiate.
 */
import { VhostUserError } from '../errors.js';
import {
  VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VHOST_VRING_F_LOG,
} from './constants.js';

/** Encodes and decodes one payload layout of vhost-user.rst, checking every field rule; decode errors are VHOST_BAD_PAYLOAD_SIZE or VHOST_INVALID_PAYLOAD. */
export interface PayloadCodec<T> {
  /** The spec's heading for the payload, e.g. 'A vring address description'. */
  readonly name: string;
  /** Smallest encoded size in bytes. */
  readonly minSize: number;
  /** Largest encoded size in bytes. */
  readonly maxSize: number;
  /** The payload bytes of `value`; VHOST_INVALID_ARGUMENT for a field that does not fit. */
  encode(value: T): Uint8Array;
  /** The value in `bytes`; `request` names the message in the error. */
  decode(bytes: Uint8Array, request?: string): T;
}

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;

const specRule = (section: string, why: string): string => `vhost-user.rst, '${section}': ${why}`;

/** Throws VHOST_INVALID_PAYLOAD; the rule cites `section`, by default the payload's own. */
type Fail = (why: string, message: string, section?: string) => never;

function invalidArgument(codec: string, field: string, value: unknown, width: string): never {
  throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${codec}: ${field} ${String(value)} does not fit a ${width}`);
}

/** Fixed-layout writer; every setter checks the value fits its field. */
class Out {
  readonly bytes: Uint8Array;
  private readonly dv: DataView;
  constructor(private readonly codec: string, size: number) {
    this.bytes = new Uint8Array(size);
    this.dv = new DataView(this.bytes.buffer);
  }
  private uint(field: string, v: number, max: number, width: string): number {
    if (!Number.isInteger(v) || v < 0 || v > max) invalidArgument(this.codec, field, v, width);
    return v;
  }
  u8(off: number, field: string, v: number): void {
    this.dv.setUint8(off, this.uint(field, v, 0xff, 'u8'));
  }
  u16(off: number, field: string, v: number): void {
    this.dv.setUint16(off, this.uint(field, v, 0xffff, 'u16'), true);
  }
  u32(off: number, field: string, v: number): void {
    this.dv.setUint32(off, this.uint(field, v, U32_MAX, 'u32'), true);
  }
  u64(off: number, field: string, v: bigint): void {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) invalidArgument(this.codec, field, v, 'u64');
    this.dv.setBigUint64(off, v, true);
  }
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function sizeError(codec: string, request: string | undefined, got: number, expected: string): never {
  throw new VhostUserError(
    'VHOST_BAD_PAYLOAD_SIZE',
    `${codec}: payload of ${got} bytes, expected ${expected}`,
    { request, rule: specRule(codec, `the payload is ${expected} bytes`) },
  );
}

function failer(codec: string, request: string | undefined): Fail {
  return (why, message, section = codec) => {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `${codec}: ${message}`, {
      request,
      rule: specRule(section, why),
    });
  };
}

function fixed<T>(
  name: string,
  size: number,
  write: (out: Out, value: T) => void,
  read: (dv: DataView, fail: Fail, bytes: Uint8Array) => T,
): PayloadCodec<T> {
  return {
    name,
    minSize: size,
    maxSize: size,
    encode(value) {
      const out = new Out(name, size);
      write(out, value);
      return out.bytes;
    },
    decode(bytes, request) {
      if (bytes.length !== size) sizeError(name, request, bytes.length, String(size));
      return read(view(bytes), failer(name, request), bytes);
    },
  };
}

/** Encodes and then decodes again, so the bytes obey every rule `decode` checks. */
export function encodePayload<T>(codec: PayloadCodec<T>, value: T, request?: string): Uint8Array {
  const bytes = codec.encode(value);
  codec.decode(bytes, request);
  return bytes;
}

function endOverflows(base: bigint, size: bigint): boolean {
  return base + size > U64_MAX;
}

/** `what` names the sum, e.g. 'log offset + log size'; `label` prefixes the message only. */
function checkEnd(fail: Fail, base: bigint, size: bigint, what: string, section?: string, label = ''): void {
  if (endOverflows(base, size)) fail(`${what} must not overflow u64`, `${label}${what} overflows u64`, section);
}

// ---------------------------------------------------------------- u64

/** vhost-user.rst, 'A single 64-bit integer'. */
export type U64 = bigint;
/** Codec of {@link U64} (little-endian). */
export const U64: PayloadCodec<U64> = fixed(
  'A single 64-bit integer',
  8,
  (out, v) => out.u64(0, 'u64', v),
  (dv) => dv.getBigUint64(0, true),
);

// ---------------------------------------------------------------- vring state

/** vhost-user.rst, 'A vring state description' (SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE). */
export interface VringState {
  /** The vring. */
  index: number;
  /** The number the request carries: ring size, base index or enable flag. */
  num: number;
}
/** Codec of {@link VringState}. */
export const VringState: PayloadCodec<VringState> = fixed(
  'A vring state description',
  8,
  (out, v) => {
    out.u32(0, 'index', v.index);
    out.u32(4, 'num', v.num);
  },
  (dv) => ({ index: dv.getUint32(0, true), num: dv.getUint32(4, true) }),
);

// ---------------------------------------------------------------- vring address

/** Field names follow the kernel's struct vhost_vring_addr, which QEMU sends. */
export interface VringAddr {
  /** The vring. */
  index: number;
  /** VHOST_VRING_F_LOG or 0. */
  flags: number;
  /** Descriptor table (packed: descriptor ring), a front-end virtual address. */
  descUserAddr: bigint;
  /** Used ring (packed: device event suppression), a front-end virtual address. */
  usedUserAddr: bigint;
  /** Available ring (packed: driver event suppression), a front-end virtual address. */
  availUserAddr: bigint;
  /** Guest-physical address where used-ring writes are logged, with VHOST_VRING_F_LOG. */
  logGuestAddr: bigint;
}
// The spec's table once showed a 'size' column; no implementation has one: 40 bytes.
/** Codec of {@link VringAddr} (SET_VRING_ADDR). */
export const VringAddr: PayloadCodec<VringAddr> = fixed(
  'A vring address description',
  40,
  (out, v) => {
    out.u32(0, 'index', v.index);
    out.u32(4, 'flags', v.flags);
    out.u64(8, 'descriptor', v.descUserAddr);
    out.u64(16, 'used', v.usedUserAddr);
    out.u64(24, 'available', v.availUserAddr);
    out.u64(32, 'log', v.logGuestAddr);
  },
  (dv, fail) => {
    const flags = dv.getUint32(4, true);
    if (flags & ~VHOST_VRING_F_LOG) {
      const message = `flags 0x${flags.toString(16)} set unknown bits`;
      fail('VHOST_VRING_F_LOG (bit 0) is the only vring flag', message, 'Migration');
    }
    return {
      index: dv.getUint32(0, true),
      flags,
      descUserAddr: dv.getBigUint64(8, true),
      usedUserAddr: dv.getBigUint64(16, true),
      availUserAddr: dv.getBigUint64(24, true),
      logGuestAddr: dv.getBigUint64(32, true),
    };
  },
);

/**
 * Ring alignment is a virtio layout rule, not syntax, so it is checked apart:
 * split rings (virtio 1.2, 'Split Virtqueues') need descriptors 16, avail 2 and
 * used 4; packed rings ('Packed Virtqueues') need descriptors 16 and both event
 * suppression areas (passed as avail/used) 4.
 */
export function checkVringAddrAlignment(addr: VringAddr, packed = false, request?: string): void {
  const rules: [string, bigint, bigint][] = [
    ['descriptor table', addr.descUserAddr, 16n],
    [packed ? 'driver area' : 'available ring', addr.availUserAddr, packed ? 4n : 2n],
    [packed ? 'device area' : 'used ring', addr.usedUserAddr, 4n],
  ];
  for (const [what, at, align] of rules) {
    if (at % align !== 0n) {
      throw new VhostUserError(
        'VHOST_INVALID_PAYLOAD',
        `${what} address 0x${at.toString(16)} is not ${align}-byte aligned`,
        { request, rule: `virtio 1.2, '${packed ? 'Packed' : 'Split'} Virtqueues': ${what} alignment ${align}` },
      );
    }
  }
}

// ---------------------------------------------------------------- memory regions

/** vhost-user.rst, 'Memory region description': one region of guest memory and where the front-end maps it. */
export interface MemoryRegion {
  /** Guest-physical start address. */
  guestPhysAddr: bigint;
  /** Bytes. */
  memorySize: bigint;
  /** Where the front-end has it mapped (ring addresses are in this space). */
  userAddr: bigint;
  /** Where the region starts in the fd that travels with the message. */
  mmapOffset: bigint;
}

const REGION_SIZE = 32;

function writeRegion(out: Out, off: number, r: MemoryRegion): void {
  out.u64(off, 'guest address', r.guestPhysAddr);
  out.u64(off + 8, 'size', r.memorySize);
  out.u64(off + 16, 'user address', r.userAddr);
  out.u64(off + 24, 'mmap offset', r.mmapOffset);
}

function readRegion(dv: DataView, off: number): MemoryRegion {
  return {
    guestPhysAddr: dv.getBigUint64(off, true),
    memorySize: dv.getBigUint64(off + 8, true),
    userAddr: dv.getBigUint64(off + 16, true),
    mmapOffset: dv.getBigUint64(off + 24, true),
  };
}

const REGION_SECTION = 'Memory region description';

/** Per-region rules: non-empty, and no range wraps past 2^64 (back-end CVEs of this class). */
function checkRegion(r: MemoryRegion, fail: Fail, label: string): void {
  if (r.memorySize === 0n) fail('a region has a non-zero size', `${label} has size 0`, REGION_SECTION);
  const ends: [string, bigint][] = [
    ['guest address', r.guestPhysAddr],
    ['user address', r.userAddr],
    ['mmap offset', r.mmapOffset],
  ];
  for (const [field, base] of ends) checkEnd(fail, base, r.memorySize, `${field} + size`, REGION_SECTION, `${label}: `);
}

/** vhost-user.rst, 'Memory access': an address maps to the region containing it. */
function checkDisjoint(regions: MemoryRegion[], key: 'guestPhysAddr' | 'userAddr', fail: Fail): void {
  const sorted = [...regions].sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev[key] + prev.memorySize > cur[key]) {
      const what = key === 'guestPhysAddr' ? 'guest' : 'user';
      fail(
        `each ${what} address maps to one region, so ${what} ranges must not overlap`,
        `${what} ranges at 0x${prev[key].toString(16)} and 0x${cur[key].toString(16)} overlap`,
        'Memory access',
      );
    }
  }
}

/** Codec of one {@link MemoryRegion}. */
export const MemoryRegion: PayloadCodec<MemoryRegion> = fixed(
  REGION_SECTION,
  REGION_SIZE,
  (out, r) => writeRegion(out, 0, r),
  (dv, fail) => {
    const r = readRegion(dv, 0);
    checkRegion(r, fail, 'region');
    return r;
  },
);

/** vhost-user.rst, 'Multiple Memory regions description' (SET_MEM_TABLE). */
export interface MemoryTable {
  /** At most 8 regions, one fd each. */
  regions: MemoryRegion[];
}

const TABLE_SECTION = 'Multiple Memory regions description';
const TABLE_MAX_ENCODABLE = Math.floor((VHOST_USER_MAX_PAYLOAD - 8) / REGION_SIZE);

/** SET_MEM_TABLE: u32 num regions, u32 padding, then the regions (region0..region7). */
export const MemoryTable: PayloadCodec<MemoryTable> = {
  name: TABLE_SECTION,
  minSize: 8 + REGION_SIZE,
  maxSize: 8 + REGION_SIZE * VHOST_MEMORY_BASELINE_NREGIONS,
  encode({ regions }) {
    if (regions.length > TABLE_MAX_ENCODABLE) invalidArgument(TABLE_SECTION, 'region count', regions.length, 'payload');
    const out = new Out(TABLE_SECTION, 8 + REGION_SIZE * regions.length);
    out.u32(0, 'num regions', regions.length);
    regions.forEach((r, i) => writeRegion(out, 8 + REGION_SIZE * i, r));
    return out.bytes;
  },
  decode(bytes, request) {
    if (bytes.length < 8) sizeError(TABLE_SECTION, request, bytes.length, 'at least 8');
    const fail = failer(TABLE_SECTION, request);
    const dv = view(bytes);
    const n = dv.getUint32(0, true);
    if (n === 0 || n > VHOST_MEMORY_BASELINE_NREGIONS) {
      fail(`num regions is 1..${VHOST_MEMORY_BASELINE_NREGIONS} (region0 ... region7)`, `num regions is ${n}`);
    }
    if (bytes.length !== 8 + REGION_SIZE * n) {
      sizeError(TABLE_SECTION, request, bytes.length, `${8 + REGION_SIZE * n} for ${n} regions`);
    }
    // The padding word is not required to be zero by the spec, so it is not checked.
    const regions = Array.from({ length: n }, (_, i) => readRegion(dv, 8 + REGION_SIZE * i));
    regions.forEach((r, i) => checkRegion(r, fail, `region ${i}`));
    checkDisjoint(regions, 'guestPhysAddr', fail);
    checkDisjoint(regions, 'userAddr', fail);
    return { regions };
  },
};

/** ADD_MEM_REG / REM_MEM_REG: u64 padding, then one region. */
export type SingleMemoryRegion = MemoryRegion;
/** Codec of {@link SingleMemoryRegion}. */
export const SingleMemoryRegion: PayloadCodec<SingleMemoryRegion> = fixed(
  'Single memory region description',
  8 + REGION_SIZE,
  (out, r) => writeRegion(out, 8, r),
  (dv, fail) => {
    const r = readRegion(dv, 8);
    checkRegion(r, fail, 'region');
    return r;
  },
);

// ---------------------------------------------------------------- log

/** vhost-user.rst, 'Log description' (SET_LOG_BASE). */
export interface Log {
  /** Bytes of the dirty log. */
  mmapSize: bigint;
  /** Where the log starts in the fd. */
  mmapOffset: bigint;
}
/** Codec of {@link Log}. */
export const Log: PayloadCodec<Log> = fixed(
  'Log description',
  16,
  (out, v) => {
    out.u64(0, 'log size', v.mmapSize);
    out.u64(8, 'log offset', v.mmapOffset);
  },
  (dv, fail) => {
    const v = { mmapSize: dv.getBigUint64(0, true), mmapOffset: dv.getBigUint64(8, true) };
    if (v.mmapSize === 0n) fail('the log covers the guest address space, so its size is non-zero', 'log size is 0');
    checkEnd(fail, v.mmapOffset, v.mmapSize, 'log offset + log size (CVE-2020-10722)');
    return v;
  },
);

// ---------------------------------------------------------------- IOTLB

/**
 * vhost-user.rst, 'An IOTLB message': the message type.
 *
 * @enum
 */
export const IotlbType = { MISS: 1, UPDATE: 2, INVALIDATE: 3, ACCESS_FAIL: 4 } as const;
/**
 * vhost-user.rst, 'An IOTLB message': access permissions.
 *
 * @enum
 */
export const IotlbPerm = { NONE: 0, READ: 1, WRITE: 2, READ_WRITE: 3 } as const;

/** vhost-user.rst, 'An IOTLB message' (IOTLB_MSG, both directions). */
export interface IotlbMsg {
  /** I/O virtual address. */
  iova: bigint;
  /** Bytes. */
  size: bigint;
  /** Front-end virtual address the range maps to. */
  userAddr: bigint;
  /** {@link IotlbPerm}. */
  perm: number;
  /** {@link IotlbType}. */
  type: number;
}
/** Codec of {@link IotlbMsg}. */
export const IotlbMsg: PayloadCodec<IotlbMsg> = fixed(
  'An IOTLB message',
  32,
  (out, v) => {
    out.u64(0, 'iova', v.iova);
    out.u64(8, 'size', v.size);
    out.u64(16, 'user address', v.userAddr);
    out.u8(24, 'permissions flags', v.perm);
    out.u8(25, 'type', v.type);
  },
  (dv, fail) => {
    const v = {
      iova: dv.getBigUint64(0, true),
      size: dv.getBigUint64(8, true),
      userAddr: dv.getBigUint64(16, true),
      perm: dv.getUint8(24),
      type: dv.getUint8(25),
    };
    if (v.perm > IotlbPerm.READ_WRITE) fail('permissions are 0..3', `permissions flags ${v.perm}`);
    if (v.type < IotlbType.MISS || v.type > IotlbType.ACCESS_FAIL) fail('type is 1..4', `type ${v.type}`);
    // Size and user address are only meaningful for updates and invalidations.
    if (v.type === IotlbType.UPDATE || v.type === IotlbType.INVALIDATE) checkEnd(fail, v.iova, v.size, 'iova + size');
    if (v.type === IotlbType.UPDATE) checkEnd(fail, v.userAddr, v.size, 'user address + size');
    return v;
  },
);

// ---------------------------------------------------------------- config space

/**
 * Flag values, not bits (spec: 0 writable fields, 1 live migration).
 *
 * @enum
 */
export const ConfigFlags = { WRITABLE: 0, LIVE_MIGRATION: 1 } as const;

/** vhost-user.rst, 'Virtio device config space' (GET_CONFIG, SET_CONFIG). */
export interface Config {
  /** Offset in config space. */
  offset: number;
  /** Bytes of config space in `payload`. */
  size: number;
  /** {@link ConfigFlags}. */
  flags: number;
  /** The config bytes. */
  payload: Uint8Array;
}

const CONFIG_SECTION = 'Virtio device config space';

/**
 * 12-byte header then `size` bytes. QEMU caps config space at 256 bytes. rust-vmm
 * reads flags as bits (WRITABLE 1, LIVE_MIGRATION 2); the spec and QEMU use the
 * values 0 and 1, which this codec follows.
 */
export const Config: PayloadCodec<Config> = {
  name: CONFIG_SECTION,
  minSize: 12,
  maxSize: 12 + VHOST_USER_MAX_CONFIG_SIZE,
  encode(v) {
    if (!(v.payload instanceof Uint8Array) || v.payload.length > VHOST_USER_MAX_PAYLOAD - 12) {
      invalidArgument(CONFIG_SECTION, 'payload', v.payload?.length, 'payload');
    }
    const out = new Out(CONFIG_SECTION, 12 + v.payload.length);
    out.u32(0, 'offset', v.offset);
    out.u32(4, 'size', v.size);
    out.u32(8, 'flags', v.flags);
    out.bytes.set(v.payload, 12);
    return out.bytes;
  },
  decode(bytes, request) {
    if (bytes.length < 12) sizeError(CONFIG_SECTION, request, bytes.length, 'at least 12');
    const fail = failer(CONFIG_SECTION, request);
    const dv = view(bytes);
    const offset = dv.getUint32(0, true);
    const size = dv.getUint32(4, true);
    const flags = dv.getUint32(8, true);
    const max = VHOST_USER_MAX_CONFIG_SIZE;
    if (size > max) fail(`config space is at most ${max} bytes (QEMU)`, `size ${size} exceeds ${max}`);
    // Both operands are below 2^32, so the JS sum is exact: a u32 wrap cannot hide it.
    if (offset + size > max) {
      fail(`offset + size stays within the ${max}-byte config space`, `offset ${offset} + size ${size} exceeds ${max}`);
    }
    if (flags > ConfigFlags.LIVE_MIGRATION) {
      fail('flags is 0 (writable fields) or 1 (live migration)', `flags ${flags}`);
    }
    if (bytes.length !== 12 + size) sizeError(CONFIG_SECTION, request, bytes.length, `${12 + size} for size ${size}`);
    return { offset, size, flags, payload: bytes.slice(12) };
  },
};

// ---------------------------------------------------------------- vring fd index

/** The u64 of SET_VRING_KICK / CALL / ERR, decoded. */
export interface VringFdIndex {
  /** The vring (bits 0-7). */
  index: number;
  /** Bit 8: no fd is passed. */
  nofd: boolean;
}

const KICK_SECTION = 'VHOST_USER_SET_VRING_KICK';
const KICK_WHY = 'bits 0-7 are the ring index, bit 8 the invalid-FD flag';

/** The u64 of SET_VRING_KICK / CALL / ERR and of the vring area description. */
export function encodeVringFdIndex(index: number, nofd = false): bigint {
  if (!Number.isInteger(index) || index < 0 || index > VHOST_USER_VRING_IDX_MASK) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `vring index ${index} does not fit bits 0-7`, {
      rule: specRule(KICK_SECTION, KICK_WHY),
    });
  }
  return BigInt(index) | (nofd ? BigInt(VHOST_USER_VRING_NOFD_MASK) : 0n);
}

function splitFdIndex(u64: bigint, fail: Fail): VringFdIndex {
  if (u64 & ~BigInt(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
    fail(KICK_WHY, `vring fd index 0x${u64.toString(16)} sets bits above 8`, KICK_SECTION);
  }
  return {
    index: Number(u64 & BigInt(VHOST_USER_VRING_IDX_MASK)),
    nofd: (u64 & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n,
  };
}

/** Decodes the u64 of SET_VRING_KICK / CALL / ERR; VHOST_INVALID_PAYLOAD for bits above 8. */
export function decodeVringFdIndex(u64: bigint, request?: string): VringFdIndex {
  if (typeof u64 !== 'bigint' || u64 < 0n || u64 > U64_MAX) invalidArgument('vring fd index', 'u64', u64, 'u64');
  return splitFdIndex(u64, failer('vring fd index', request));
}

// ---------------------------------------------------------------- vring area

/** vhost-user.rst, 'Vring area description' (VRING_HOST_NOTIFIER_MSG). */
export interface VringArea {
  /** The vring. */
  index: number;
  /** No fd: the notification area is withdrawn. */
  nofd: boolean;
  /** Bytes of the area. */
  size: bigint;
  /** Where the area starts in the fd. */
  offset: bigint;
}
/** Codec of {@link VringArea}. */
export const VringArea: PayloadCodec<VringArea> = fixed(
  'Vring area description',
  24,
  (out, v) => {
    out.u64(0, 'u64', encodeVringFdIndex(v.index, v.nofd));
    out.u64(8, 'size', v.size);
    out.u64(16, 'offset', v.offset);
  },
  (dv, fail) => {
    const { index, nofd } = splitFdIndex(dv.getBigUint64(0, true), fail);
    const v = { index, nofd, size: dv.getBigUint64(8, true), offset: dv.getBigUint64(16, true) };
    // Without an fd there is nothing to map, so size and offset carry no meaning.
    if (!nofd) checkEnd(fail, v.offset, v.size, 'offset + size');
    return v;
  },
);

// ---------------------------------------------------------------- inflight

/** vhost-user.rst, 'Inflight description' (GET_INFLIGHT_FD, SET_INFLIGHT_FD). */
export interface Inflight {
  /** Bytes of the area. */
  mmapSize: bigint;
  /** Where the area starts in the fd. */
  mmapOffset: bigint;
  /** Queues tracked. */
  numQueues: number;
  /** Descriptors per queue. */
  queueSize: number;
}
/** Codec of {@link Inflight}. */
export const Inflight: PayloadCodec<Inflight> = fixed(
  'Inflight description',
  24,
  (out, v) => {
    out.u64(0, 'mmap size', v.mmapSize);
    out.u64(8, 'mmap offset', v.mmapOffset);
    out.u16(16, 'num queues', v.numQueues);
    out.u16(18, 'queue size', v.queueSize);
  },
  (dv, fail) => {
    const v = {
      mmapSize: dv.getBigUint64(0, true),
      mmapOffset: dv.getBigUint64(8, true),
      numQueues: dv.getUint16(16, true),
      queueSize: dv.getUint16(18, true),
    };
    checkEnd(fail, v.mmapOffset, v.mmapSize, 'mmap offset + mmap size');
    return v;
  },
);

// ---------------------------------------------------------------- shared object

/** vhost-user.rst, 'VhostUserShared': a virtio shared object's UUID. */
export interface SharedObject {
  /** 16 bytes; the first three UUID fields are big-endian, as the spec says. */
  uuid: Uint8Array;
}
/** Codec of {@link SharedObject}. */
export const SharedObject: PayloadCodec<SharedObject> = fixed(
  'VhostUserShared',
  16,
  (out, v) => {
    if (!(v.uuid instanceof Uint8Array) || v.uuid.length !== 16) {
      invalidArgument('VhostUserShared', 'uuid of length', v.uuid?.length, '16-byte UUID');
    }
    out.bytes.set(v.uuid);
  },
  (_dv, _fail, bytes) => ({ uuid: bytes.slice(0, 16) }),
);

// ---------------------------------------------------------------- device state

/**
 * vhost-user.rst, 'Device state transfer parameters': direction.
 *
 * @enum
 */
export const TransferDirection = { SAVE: 0, LOAD: 1 } as const;
/**
 * vhost-user.rst, 'Device state transfer parameters': phase.
 *
 * @enum
 */
export const TransferPhase = { STOPPED: 0 } as const;

/** vhost-user.rst, 'Device state transfer parameters' (SET_DEVICE_STATE_FD). */
export interface DeviceStateTransfer {
  /** {@link TransferDirection}. */
  direction: number;
  /** {@link TransferPhase}. */
  phase: number;
}
/** Codec of {@link DeviceStateTransfer}. */
export const DeviceStateTransfer: PayloadCodec<DeviceStateTransfer> = fixed(
  'Device state transfer parameters',
  8,
  (out, v) => {
    out.u32(0, 'transfer direction', v.direction);
    out.u32(4, 'migration phase', v.phase);
  },
  (dv, fail) => {
    const v = { direction: dv.getUint32(0, true), phase: dv.getUint32(4, true) };
    if (v.direction > TransferDirection.LOAD) {
      fail('direction is 0 (save) or 1 (load)', `transfer direction ${v.direction}`);
    }
    if (v.phase !== TransferPhase.STOPPED) fail('the only phase is 0 (stopped)', `migration phase ${v.phase}`);
    return v;
  },
);

/** SET_DEVICE_STATE_FD's u64 reply, decoded. */
export interface DeviceStateFdReply {
  /** Bits 0-7: 0 on success. */
  status: number;
  /** Bit 8: the back-end sent no fd of its own (the front-end's is used). */
  nofd: boolean;
}

const STATE_FD_RULE = specRule(
  'VHOST_USER_SET_DEVICE_STATE_FD',
  'bits 0-7 status, bit 8 invalid-FD flag; an error comes without an fd',
);

/** The u64 reply of SET_DEVICE_STATE_FD. */
export function decodeDeviceStateFdReply(u64: bigint, request = 'SET_DEVICE_STATE_FD'): DeviceStateFdReply {
  if (typeof u64 !== 'bigint' || u64 < 0n || u64 > U64_MAX) invalidArgument('device state reply', 'u64', u64, 'u64');
  const status = Number(u64 & 0xffn);
  const nofd = (u64 & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n;
  if (u64 >> 9n !== 0n || (status !== 0 && !nofd)) {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `device state reply 0x${u64.toString(16)} is malformed`, {
      request,
      rule: STATE_FD_RULE,
    });
  }
  return { status, nofd };
}

// ---------------------------------------------------------------- shared memory

/** Flag bits of VhostUserMMap (QEMU VHOST_USER_FLAG_MAP_RW, rust-vmm WRITABLE). */
export const ShmemMapFlags = {
  /** Map writable (else read-only). */
  MAP_RW: 1n,
} as const;

/** vhost-user.rst, 'VhostUserMMap' (SHMEM_MAP, SHMEM_UNMAP). */
export interface ShmemMap {
  /** The VIRTIO Shared Memory Region. */
  shmid: number;
  /** Where the mapping starts in the fd. */
  fdOffset: bigint;
  /** Where it goes in the shared memory region. */
  shmOffset: bigint;
  /** Bytes. */
  len: bigint;
  /** {@link ShmemMapFlags}. */
  flags: bigint;
}

/** SHMEM_MAP / SHMEM_UNMAP (back-end requests): u8 shmid, 7 padding bytes, four u64. */
export const ShmemMap: PayloadCodec<ShmemMap> = fixed(
  'VhostUserMMap',
  40,
  (out, v) => {
    out.u8(0, 'shmid', v.shmid);
    out.u64(8, 'fd_offset', v.fdOffset);
    out.u64(16, 'shm_offset', v.shmOffset);
    out.u64(24, 'len', v.len);
    out.u64(32, 'flags', v.flags);
  },
  (dv, fail) => {
    const v = {
      shmid: dv.getUint8(0),
      fdOffset: dv.getBigUint64(8, true),
      shmOffset: dv.getBigUint64(16, true),
      len: dv.getBigUint64(24, true),
      flags: dv.getBigUint64(32, true),
    };
    const at = 'VHOST_USER_BACKEND_SHMEM_MAP';
    if (v.flags & ~ShmemMapFlags.MAP_RW) {
      fail('MAP_RW (bit 0) is the only flag', `flags 0x${v.flags.toString(16)} set unknown bits`, at);
    }
    if (v.len === 0n) fail('a mapping covers a non-empty range', 'len is 0', at);
    checkEnd(fail, v.fdOffset, v.len, 'fd_offset + len', at);
    checkEnd(fail, v.shmOffset, v.len, 'shm_offset + len', at);
    return v;
  },
);

/** Entries in GET_SHMEM_CONFIG's reply (shmid is a u8). */
export const VIRTIO_MAX_SHMEM_REGIONS = 256;

/** vhost-user.rst, 'VIRTIO Shared Memory Region configuration' (GET_SHMEM_CONFIG). */
export interface ShmemConfig {
  /** Size of each VIRTIO Shared Memory Region, indexed by shmid; 0 marks an unused id. */
  memorySizes: bigint[];
}

/** GET_SHMEM_CONFIG reply: u32 num regions, u32 padding, 256 u64 sizes (2056 bytes). */
export const ShmemConfig: PayloadCodec<ShmemConfig> = fixed(
  'VIRTIO Shared Memory Region configuration',
  8 + 8 * VIRTIO_MAX_SHMEM_REGIONS,
  (out, v) => {
    if (v.memorySizes.length > VIRTIO_MAX_SHMEM_REGIONS) {
      invalidArgument('shmem config', 'region count', v.memorySizes.length, '256-entry array');
    }
    out.u32(0, 'num regions', v.memorySizes.length);
    v.memorySizes.forEach((s, i) => out.u64(8 + 8 * i, `mem size ${i}`, s));
  },
  (dv, fail) => {
    const n = dv.getUint32(0, true);
    if (n > VIRTIO_MAX_SHMEM_REGIONS) fail(`num regions is at most ${VIRTIO_MAX_SHMEM_REGIONS}`, `num regions is ${n}`);
    return { memorySizes: Array.from({ length: n }, (_, i) => dv.getBigUint64(8 + 8 * i, true)) };
  },
);

// ---------------------------------------------------------------- opaque

/** CREATE_CRYPTO_SESSION's 'crypto session description' has no layout in the spec: bytes as is. */
export type Opaque = Uint8Array;
/** Codec of {@link Opaque}: the bytes as they are. */
export const Opaque: PayloadCodec<Opaque> = {
  name: 'crypto session description',
  minSize: 0,
  maxSize: VHOST_USER_MAX_PAYLOAD,
  encode(v) {
    if (!(v instanceof Uint8Array) || v.length > VHOST_USER_MAX_PAYLOAD) {
      invalidArgument('opaque payload', 'length', v?.length, 'payload');
    }
    return v.slice();
  },
  decode(bytes, request) {
    if (bytes.length > VHOST_USER_MAX_PAYLOAD) {
      sizeError('crypto session description', request, bytes.length, `at most ${VHOST_USER_MAX_PAYLOAD}`);
    }
    return bytes.slice();
  },
};

// ---------------------------------------------------------------- vring base

/** vhost-user.rst, 'VHOST_USER_SET_VRING_BASE': the packed-ring reading of the vring base. */
export interface PackedVringBase {
  /** Bits 0-14: the next descriptor the device reads. */
  lastAvailIdx: number;
  /** Bit 15: the driver ring wrap counter. */
  availWrapCounter: boolean;
  /** Bits 16-30: the next descriptor the device writes back. */
  lastUsedIdx: number;
  /** Bit 31: the device ring wrap counter. */
  usedWrapCounter: boolean;
}

const PACKED_RULE = specRule('Vring descriptor indices for packed virtqueues', 'bits 0-14, 15, 16-30, 31');

/** The `num` of SET_/GET_VRING_BASE for packed rings: bits 0-14, 15, 16-30, 31. */
export function decodePackedVringBase(num: number): PackedVringBase {
  if (!Number.isInteger(num) || num < 0 || num > U32_MAX) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `vring base ${num} is not a u32`, { rule: PACKED_RULE });
  }
  return {
    lastAvailIdx: num & 0x7fff,
    availWrapCounter: (num & 0x8000) !== 0,
    lastUsedIdx: (num >>> 16) & 0x7fff,
    usedWrapCounter: (num & 0x80000000) !== 0,
  };
}

/** The `num` of SET_VRING_BASE for a packed ring; VHOST_INVALID_ARGUMENT for an index above 15 bits. */
export function encodePackedVringBase(v: PackedVringBase): number {
  for (const [field, idx] of [['lastAvailIdx', v.lastAvailIdx], ['lastUsedIdx', v.lastUsedIdx]] as const) {
    if (!Number.isInteger(idx) || idx < 0 || idx > 0x7fff) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${field} ${idx} does not fit 15 bits`, { rule: PACKED_RULE });
    }
  }
  const avail = v.lastAvailIdx | (v.availWrapCounter ? 0x8000 : 0);
  const used = v.lastUsedIdx | (v.usedWrapCounter ? 0x8000 : 0);
  return (avail | (used << 16)) >>> 0;
}
