/**
 * `struct virtio_blk_config` (virtio 1.3, 5.2.4 "Block Device: Device
 * configuration layout"):
 *
 *   le64 capacity @0; le32 size_max @8; le32 seg_max @12;
 *   geometry { le16 cylinders @16; u8 heads @18; u8 sectors @19 };
 *   le32 blk_size @20;
 *   topology { u8 physical_block_exp @24; u8 alignment_offset @25;
 *              le16 min_io_size @26; le32 opt_io_size @28 };
 *   u8 writeback @32; u8 unused0 @33; le16 num_queues @34;
 *   le32 max_discard_sectors @36; le32 max_discard_seg @40;
 *   le32 discard_sector_alignment @44; le32 max_write_zeroes_sectors @48;
 *   le32 max_write_zeroes_seg @52; u8 write_zeroes_may_unmap @56; u8 unused1[3] @57;
 *   (secure erase @60 and zoned @72 follow; not decoded)
 */
import { VhostUserError } from '../../errors.js';
import { VirtioBlkFeature as F } from '../../protocol/constants.js';
import { ConfigReader } from '../config-reader.js';

/**
 * Bytes to ask GET_CONFIG for: through `unused1`. Not larger: libvhost-user (as in
 * qemu-storage-daemon 7.2) answers a request beyond its own sizeof(struct
 * virtio_blk_config) with an empty, failed reply.
 */
export const BLK_CONFIG_SIZE = 60;

/** The unit of `capacity` and of every *_sectors field (5.2.4). */
export const SECTOR_SIZE = 512;

/** `geometry` (5.2.4, VIRTIO_BLK_F_GEOMETRY): the legacy cylinder/head/sector shape of the disk, advisory only. */
export interface BlkGeometry {
  /** Number of cylinders (le16). */
  cylinders: number;
  /** Heads per cylinder. */
  heads: number;
  /** Sectors per track. */
  sectors: number;
}

/** `topology` (5.2.4, VIRTIO_BLK_F_TOPOLOGY): hints for aligning I/O to the physical layout. */
export interface BlkTopology {
  /** log2 of logical blocks per physical block. */
  physicalBlockExp: number;
  /** Offset of the first aligned logical block. */
  alignmentOffset: number;
  /** Suggested minimum I/O size, in logical blocks. */
  minIoSize: number;
  /** Optimal (suggested maximum) I/O size, in logical blocks. */
  optIoSize: number;
}

/** The discard fields of the config space (5.2.4, VIRTIO_BLK_F_DISCARD). */
export interface BlkDiscard {
  /** max_discard_sectors: most 512-byte sectors in one discard range. */
  maxDiscardSectors: number;
  /** max_discard_seg: most ranges in one VIRTIO_BLK_T_DISCARD request. */
  maxDiscardSeg: number;
  /** discard_sector_alignment: ranges should start and end on multiples of this many 512-byte sectors. */
  discardSectorAlignment: number;
}

/** The write-zeroes fields of the config space (5.2.4, VIRTIO_BLK_F_WRITE_ZEROES). */
export interface BlkWriteZeroes {
  /** max_write_zeroes_sectors: most 512-byte sectors in one write-zeroes range. */
  maxWriteZeroesSectors: number;
  /** max_write_zeroes_seg: most ranges in one VIRTIO_BLK_T_WRITE_ZEROES request. */
  maxWriteZeroesSeg: number;
  /** write_zeroes_may_unmap: the device may deallocate the zeroed blocks when a range carries the UNMAP flag. */
  mayUnmap: boolean;
}

/**
 * A decoded block config space. `capacity` always exists; every other field is
 * null when its feature bit is not set in the mask given to {@link decodeBlkConfig}
 * or when the bytes end before it.
 */
export interface BlkConfig {
  /** In 512-byte sectors, whatever `blkSize` says. */
  capacity: number;
  /** `capacity * 512`. */
  capacityBytes: number;
  /** VIRTIO_BLK_F_SIZE_MAX. */
  sizeMax: number | null;
  /** VIRTIO_BLK_F_SEG_MAX. */
  segMax: number | null;
  /** VIRTIO_BLK_F_GEOMETRY. */
  geometry: BlkGeometry | null;
  /** VIRTIO_BLK_F_BLK_SIZE. */
  blkSize: number | null;
  /** VIRTIO_BLK_F_TOPOLOGY. */
  topology: BlkTopology | null;
  /** true: writeback cache, false: writethrough; VIRTIO_BLK_F_CONFIG_WCE. */
  writeback: boolean | null;
  /** VIRTIO_BLK_F_MQ. */
  numQueues: number | null;
  /** VIRTIO_BLK_F_DISCARD. */
  discard: BlkDiscard | null;
  /** VIRTIO_BLK_F_WRITE_ZEROES. */
  writeZeroes: BlkWriteZeroes | null;
}

/**
 * Decodes a block config space read with GET_CONFIG. `features` is the device's
 * feature mask (offered when probing, negotiated after SET_FEATURES).
 * Throws VHOST_INVALID_PAYLOAD when `capacity` is missing or its byte count is
 * beyond Number.MAX_SAFE_INTEGER (8 PiB).
 */
export function decodeBlkConfig(bytes: Uint8Array, features: bigint): BlkConfig {
  const r = new ConfigReader(bytes, features);
  const sectors = r.u64(0);
  if (sectors === null) {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `virtio_blk_config needs at least 8 bytes (capacity), got ${bytes.length}`, { request: 'GET_CONFIG' });
  }
  if (sectors * BigInt(SECTOR_SIZE) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VhostUserError('VHOST_INVALID_PAYLOAD', `virtio_blk_config capacity ${sectors} sectors is beyond 2^53 bytes`, { request: 'GET_CONFIG' });
  }
  const capacity = Number(sectors);
  return {
    capacity,
    capacityBytes: capacity * SECTOR_SIZE,
    sizeMax: r.when(F.VIRTIO_BLK_F_SIZE_MAX, 12, () => r.u32(8)!),
    segMax: r.when(F.VIRTIO_BLK_F_SEG_MAX, 16, () => r.u32(12)!),
    geometry: r.when(F.VIRTIO_BLK_F_GEOMETRY, 20, () => ({ cylinders: r.u16(16)!, heads: r.u8(18)!, sectors: r.u8(19)! })),
    blkSize: r.when(F.VIRTIO_BLK_F_BLK_SIZE, 24, () => r.u32(20)!),
    topology: r.when(F.VIRTIO_BLK_F_TOPOLOGY, 32, () => ({
      physicalBlockExp: r.u8(24)!,
      alignmentOffset: r.u8(25)!,
      minIoSize: r.u16(26)!,
      optIoSize: r.u32(28)!,
    })),
    writeback: r.when(F.VIRTIO_BLK_F_CONFIG_WCE, 33, () => r.u8(32)! !== 0),
    numQueues: r.when(F.VIRTIO_BLK_F_MQ, 36, () => r.u16(34)!),
    discard: r.when(F.VIRTIO_BLK_F_DISCARD, 48, () => ({
      maxDiscardSectors: r.u32(36)!,
      maxDiscardSeg: r.u32(40)!,
      discardSectorAlignment: r.u32(44)!,
    })),
    writeZeroes: r.when(F.VIRTIO_BLK_F_WRITE_ZEROES, 57, () => ({
      maxWriteZeroesSectors: r.u32(48)!,
      maxWriteZeroesSeg: r.u32(52)!,
      mayUnmap: r.u8(56)! !== 0,
    })),
  };
}
