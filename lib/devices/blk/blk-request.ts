/**
 * virtio-blk requests (virtio 1.2 §5.2.6), the driver's side: the limits a device
 * publishes in its config space and feature bits, and the checks a driver makes
 * against those limits before it puts anything in a ring. The wire constants live
 * in lib/protocol/virtio-blk.ts (shared with the reference back-end) and are
 * re-exported here.
 *
 * A request is one descriptor chain: a 16-byte device-readable header
 * {le32 type, le32 reserved, le64 sector}, the data (device-readable for OUT,
 * DISCARD and WRITE_ZEROES, device-writable for IN and GET_ID, absent for
 * FLUSH), and a 1-byte device-writable status. `sector` is always in 512-byte
 * units, whatever blk_size says (§5.2.6). SPDK insists that the header and the
 * status each have a descriptor of their own and of exactly that size, so this
 * driver always builds them so.
 */
import { VhostUserError, type VhostErrorCode } from '../../errors.js';
import { hasBit, VirtioBlkFeature as F } from '../../protocol/constants.js';
import { SECTOR_SIZE, type BlkConfig } from './blk-config.js';

export {
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  BLK_REQ_HEADER_SIZE,
  BLK_REQ_STATUS_SIZE,
  VIRTIO_BLK_ID_BYTES,
  BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from '../../protocol/virtio-blk.js';
import {
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../protocol/virtio-blk.js';

/** The spec name of a request type, for messages. */
export function blkRequestName(type: number): string {
  switch (type) {
    case VIRTIO_BLK_T_IN:
      return 'VIRTIO_BLK_T_IN';
    case VIRTIO_BLK_T_OUT:
      return 'VIRTIO_BLK_T_OUT';
    case VIRTIO_BLK_T_FLUSH:
      return 'VIRTIO_BLK_T_FLUSH';
    case VIRTIO_BLK_T_GET_ID:
      return 'VIRTIO_BLK_T_GET_ID';
    case VIRTIO_BLK_T_DISCARD:
      return 'VIRTIO_BLK_T_DISCARD';
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return 'VIRTIO_BLK_T_WRITE_ZEROES';
    default:
      return `type ${type}`;
  }
}

/**
 * An error about one block request: refused before it was sent (a limit), or
 * answered with a failure status, a wrong used length, or not answered at all.
 * `type`, `sector` and `length` name the request.
 */
export class BlkRequestError extends VhostUserError {
  /** The request type (VIRTIO_BLK_T_*). */
  readonly type: number;
  /** First 512-byte sector (0 for FLUSH and GET_ID; the first range's for DISCARD and WRITE_ZEROES). */
  readonly sector: number;
  /** Data bytes (for DISCARD and WRITE_ZEROES: the bytes the ranges cover). */
  readonly length: number;

  constructor(code: VhostErrorCode, type: number, sector: number, length: number, message: string, rule?: string) {
    super(code, `${blkRequestName(type)} sector ${sector} length ${length}: ${message}`, { request: blkRequestName(type), rule });
    this.name = 'BlkRequestError';
    this.type = type;
    this.sector = sector;
    this.length = length;
  }
}

/** One range of a DISCARD or WRITE_ZEROES request, in bytes from the start of the disk. */
export interface BlkRange {
  /** Byte offset: a multiple of 512 and of the block size. */
  offset: number;
  /** Bytes: a multiple of 512 and of the block size. */
  length: number;
}

/**
 * What a device accepts, from its config space and the negotiated features.
 * Numbers are 0 where the device sets no limit.
 */
export interface BlkLimits {
  /** Disk size in 512-byte sectors. */
  capacity: number;
  /** Block size in bytes: offsets and lengths are multiples of it (512 without VIRTIO_BLK_F_BLK_SIZE). */
  blkSize: number;
  /** Largest data segment in bytes (VIRTIO_BLK_F_SIZE_MAX; 0: none). */
  sizeMax: number;
  /** Most data segments in one request (VIRTIO_BLK_F_SEG_MAX; 0: none besides the ring's). */
  segMax: number;
  /** VIRTIO_BLK_F_RO: every write, discard and write-zeroes is refused before it is sent. */
  readOnly: boolean;
  /** VIRTIO_BLK_F_FLUSH. */
  flush: boolean;
  /** VIRTIO_BLK_F_DISCARD: its limits, or null when not negotiated. */
  discard: {
    /** max_discard_sectors: most 512-byte sectors in one range (0: no limit besides le32). */
    maxSectors: number;
    /** max_discard_seg: most ranges in one request (0: no limit). */
    maxSeg: number;
  } | null;
  /** VIRTIO_BLK_F_WRITE_ZEROES: its limits, or null when not negotiated. */
  writeZeroes: {
    /** max_write_zeroes_sectors: most 512-byte sectors in one range (0: no limit besides le32). */
    maxSectors: number;
    /** max_write_zeroes_seg: most ranges in one request (0: no limit). */
    maxSeg: number;
    /** write_zeroes_may_unmap: the device may deallocate zeroed blocks when asked with the UNMAP flag. */
    mayUnmap: boolean;
  } | null;
}

/** The limits of a device with `config` (decoded with the negotiated `features`). */
export function blkLimits(config: BlkConfig, features: bigint): BlkLimits {
  const blkSize = config.blkSize ?? SECTOR_SIZE;
  return {
    capacity: config.capacity,
    // A device may publish a block size below 512 or not a power of 2 (a bug); sectors stay the unit then.
    blkSize: blkSize >= SECTOR_SIZE && (blkSize & (blkSize - 1)) === 0 ? blkSize : SECTOR_SIZE,
    sizeMax: config.sizeMax ?? 0,
    segMax: config.segMax ?? 0,
    readOnly: hasBit(features, F.VIRTIO_BLK_F_RO),
    flush: hasBit(features, F.VIRTIO_BLK_F_FLUSH),
    discard: config.discard && hasBit(features, F.VIRTIO_BLK_F_DISCARD) ? { maxSectors: config.discard.maxDiscardSectors, maxSeg: config.discard.maxDiscardSeg } : null,
    writeZeroes:
      config.writeZeroes && hasBit(features, F.VIRTIO_BLK_F_WRITE_ZEROES)
        ? { maxSectors: config.writeZeroes.maxWriteZeroesSectors, maxSeg: config.writeZeroes.maxWriteZeroesSeg, mayUnmap: config.writeZeroes.mayUnmap }
        : null,
  };
}

/**
 * Checks a read or write of `length` bytes at byte `offset` in `segments` data
 * segments whose largest is `largestSegment` bytes. `maxSegments` is the most
 * the ring can carry (the driver's own cap). Throws a BlkRequestError.
 */
export function checkTransfer(limits: BlkLimits, type: number, offset: number, length: number, segments: number, largestSegment: number, maxSegments: number): void {
  const sector = Math.floor(offset / SECTOR_SIZE);
  if (type === VIRTIO_BLK_T_OUT && limits.readOnly) {
    throw new BlkRequestError('VHOST_BLK_READ_ONLY', type, sector, length, 'the device is read-only (VIRTIO_BLK_F_RO)', 'virtio 1.2 §5.2.6.1: the driver MUST NOT write to a read-only device');
  }
  checkExtent(limits, type, offset, length);
  if (length === 0) throw new BlkRequestError('VHOST_BLK_UNALIGNED', type, sector, length, 'no data', 'virtio 1.2 §5.2.6');
  const cap = limits.segMax > 0 ? Math.min(limits.segMax, maxSegments) : maxSegments;
  if (segments > cap) {
    throw new BlkRequestError('VHOST_BLK_TOO_MANY_SEGMENTS', type, sector, length, `${segments} data segments; at most ${cap} (seg_max ${limits.segMax || 'none'})`, 'virtio 1.2 §5.2.4: seg_max');
  }
  if (limits.sizeMax > 0 && largestSegment > limits.sizeMax) {
    throw new BlkRequestError('VHOST_BLK_SEGMENT_TOO_LARGE', type, sector, length, `a segment of ${largestSegment} bytes; size_max is ${limits.sizeMax}`, 'virtio 1.2 §5.2.4: size_max');
  }
}

/** Checks a DISCARD or WRITE_ZEROES of `ranges` (feature, read-only, alignment, capacity, sector and segment limits). */
export function checkRanges(limits: BlkLimits, type: number, ranges: readonly BlkRange[]): void {
  const first = ranges[0];
  const sector = first ? Math.floor(first.offset / SECTOR_SIZE) : 0;
  const total = ranges.reduce((a, r) => a + r.length, 0);
  const lim = type === VIRTIO_BLK_T_DISCARD ? limits.discard : limits.writeZeroes;
  const feature = type === VIRTIO_BLK_T_DISCARD ? 'VIRTIO_BLK_F_DISCARD' : 'VIRTIO_BLK_F_WRITE_ZEROES';
  if (lim === null) {
    throw new BlkRequestError('VHOST_FEATURE_NOT_NEGOTIATED', type, sector, total, `${feature} was not negotiated`, 'virtio 1.2 §5.2.6.1');
  }
  if (limits.readOnly) {
    throw new BlkRequestError('VHOST_BLK_READ_ONLY', type, sector, total, 'the device is read-only (VIRTIO_BLK_F_RO)', 'virtio 1.2 §5.2.6.1');
  }
  if (ranges.length === 0) throw new BlkRequestError('VHOST_INVALID_ARGUMENT', type, sector, total, 'no ranges');
  const field = type === VIRTIO_BLK_T_DISCARD ? 'max_discard' : 'max_write_zeroes';
  if (lim.maxSeg > 0 && ranges.length > lim.maxSeg) {
    throw new BlkRequestError('VHOST_BLK_TOO_MANY_SEGMENTS', type, sector, total, `${ranges.length} ranges; ${field}_seg is ${lim.maxSeg}`, `virtio 1.2 §5.2.4: ${field}_seg`);
  }
  for (const r of ranges) {
    checkExtent(limits, type, r.offset, r.length);
    const sectors = r.length / SECTOR_SIZE;
    // num_sectors is a le32 whatever the device says.
    const max = lim.maxSectors > 0 ? lim.maxSectors : 0xffffffff;
    if (sectors === 0 || sectors > max) {
      throw new BlkRequestError('VHOST_BLK_TOO_MANY_SECTORS', type, Math.floor(r.offset / SECTOR_SIZE), r.length, `a range of ${sectors} sectors; ${field}_sectors is ${lim.maxSectors}`, `virtio 1.2 §5.2.4: ${field}_sectors`);
    }
  }
}

/** Alignment to blk_size (and so to the 512-byte sector) and the extent within capacity. */
function checkExtent(limits: BlkLimits, type: number, offset: number, length: number): void {
  const sector = Math.floor(offset / SECTOR_SIZE);
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new BlkRequestError('VHOST_INVALID_ARGUMENT', type, sector, length, `offset ${offset} and length ${length} must be non-negative integers`);
  }
  if (offset % limits.blkSize !== 0 || length % limits.blkSize !== 0) {
    throw new BlkRequestError('VHOST_BLK_UNALIGNED', type, sector, length, `offset ${offset} or length ${length} is not a multiple of the block size ${limits.blkSize}`, 'virtio 1.2 §5.2.4: blk_size');
  }
  if (offset + length > limits.capacity * SECTOR_SIZE) {
    throw new BlkRequestError('VHOST_BLK_BEYOND_CAPACITY', type, sector, length, `ends at byte ${offset + length}, beyond the capacity of ${limits.capacity * SECTOR_SIZE} bytes`, 'virtio 1.2 §5.2.6.1: the driver MUST NOT access beyond capacity');
  }
}
