import { expect } from 'chai';
import { isVhostUserError } from '../../lib/errors.js';
import { BLK_CONFIG_SIZE, decodeBlkConfig } from '../../lib/devices/blk/blk-config.js';
import { bit, VirtioBlkFeature as F } from '../../lib/protocol/constants.js';

const ALL = Object.values(F).reduce((m, b) => m | bit(b), 0n);

/** A 60-byte virtio_blk_config, little-endian, every field distinct. */
function sample(): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, 131072n, true);
  v.setUint32(8, 65536, true);
  v.setUint32(12, 126, true);
  v.setUint16(16, 1024, true);
  v.setUint8(18, 16);
  v.setUint8(19, 63);
  v.setUint32(20, 4096, true);
  v.setUint8(24, 3);
  v.setUint8(25, 1);
  v.setUint16(26, 8, true);
  v.setUint32(28, 256, true);
  v.setUint8(32, 1);
  v.setUint8(33, 0xee); // unused0: must not leak into num_queues
  v.setUint16(34, 4, true);
  v.setUint32(36, 32768, true);
  v.setUint32(40, 2, true);
  v.setUint32(44, 8, true);
  v.setUint32(48, 16384, true);
  v.setUint32(52, 3, true);
  v.setUint8(56, 1);
  return b;
}

describe('devices/blk-config', () => {
  it('asks for 60 bytes: through unused1, what qemu-storage-daemon 7.2 accepts', () => {
    expect(BLK_CONFIG_SIZE).to.equal(60);
  });

  it('decodes every field at its spec offset when the features are set', () => {
    expect(decodeBlkConfig(sample(), ALL)).to.deep.equal({
      capacity: 131072,
      capacityBytes: 64 * 1024 * 1024,
      sizeMax: 65536,
      segMax: 126,
      geometry: { cylinders: 1024, heads: 16, sectors: 63 },
      blkSize: 4096,
      topology: { physicalBlockExp: 3, alignmentOffset: 1, minIoSize: 8, optIoSize: 256 },
      writeback: true,
      numQueues: 4,
      discard: { maxDiscardSectors: 32768, maxDiscardSeg: 2, discardSectorAlignment: 8 },
      writeZeroes: { maxWriteZeroesSectors: 16384, maxWriteZeroesSeg: 3, mayUnmap: true },
    });
  });

  it('keeps capacity without features and nulls the rest', () => {
    const c = decodeBlkConfig(sample(), 0n);
    expect(c.capacity).to.equal(131072);
    const { capacity: _c, capacityBytes: _b, ...rest } = c;
    expect(Object.values(rest).every((v) => v === null)).to.equal(true);
    expect(decodeBlkConfig(sample(), bit(F.VIRTIO_BLK_F_MQ))).to.include({ numQueues: 4, blkSize: null, writeback: null });
  });

  it('accepts a shorter buffer: groups that do not fit are null', () => {
    const c = decodeBlkConfig(sample().subarray(0, 36), ALL);
    expect(c).to.include({ capacity: 131072, blkSize: 4096, writeback: true, numQueues: 4, discard: null, writeZeroes: null });
    expect(decodeBlkConfig(sample().subarray(0, 31), ALL).topology).to.equal(null);
    expect(decodeBlkConfig(sample().subarray(0, 56), ALL).writeZeroes).to.equal(null);
    expect(decodeBlkConfig(sample().subarray(0, 8), ALL)).to.include({ capacity: 131072, sizeMax: null });
  });

  it('rejects a buffer without capacity, and capacities beyond 2^53 bytes', () => {
    for (const bad of [new Uint8Array(7), (() => {
      const b = sample();
      new DataView(b.buffer).setBigUint64(0, 1n << 44n, true);
      return b;
    })()]) {
      let err: unknown;
      try {
        decodeBlkConfig(bad, ALL);
      } catch (e) {
        err = e;
      }
      expect(isVhostUserError(err, 'VHOST_INVALID_PAYLOAD'), String(err)).to.equal(true);
    }
    const b = sample();
    new DataView(b.buffer).setBigUint64(0, (1n << 44n) - 1n, true);
    expect(decodeBlkConfig(b, 0n).capacityBytes).to.equal(Number.MAX_SAFE_INTEGER - 511);
  });
});
