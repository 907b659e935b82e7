/**
 * The reference back-end's blk device beyond read/write: DISCARD, WRITE_ZEROES
 * (with and without UNMAP), their config limits, and a read-only disk (virtio
 * 1.2 §5.2.4, §5.2.6), driven by a real VhostUserClient and split ring.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { decodeBlkConfig, BLK_CONFIG_SIZE } from '../../lib/devices/blk/blk-config.js';
import { hasBit, VirtioBlkFeature as F } from '../../lib/protocol/constants.js';
import { BLK_T, BlkRig } from '../helpers/blk-rig.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const OK = 0;
const IOERR = 1;
const UNSUPP = 2;
const UNMAP = 1;

describe('reference blk device: discard, write-zeroes, read-only', function () {
  this.timeout(20_000);
  let sock: ReturnType<typeof tempSocketPath>;
  let img: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend | null = null;
  let rig: BlkRig | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;

  beforeEach(() => {
    snap = resourceSnapshot();
    sock = tempSocketPath('blk.sock');
    img = tempSocketPath('disk.img');
  });
  afterEach(async () => {
    rig?.close();
    rig = null;
    backend?.close();
    backend = null;
    sock.cleanup();
    img.cleanup();
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  /** A 1 MiB image file filled with 0xa5, served by an in-process back-end. */
  async function serve(readOnly = false): Promise<BlkRig> {
    writeFileSync(img.path, new Uint8Array(1 << 20).fill(0xa5));
    backend = ReferenceBackend.listen(sock.path, { device: 'blk', blkImage: img.path, blkReadOnly: readOnly });
    rig = new BlkRig(64, 16);
    await rig.attach(sock.path);
    return rig;
  }

  it('offers DISCARD and WRITE_ZEROES with their limits in the config space', async () => {
    const r = await serve();
    const n = r.negotiated!;
    expect(hasBit(n.features, F.VIRTIO_BLK_F_DISCARD)).to.equal(true);
    expect(hasBit(n.features, F.VIRTIO_BLK_F_WRITE_ZEROES)).to.equal(true);
    expect(hasBit(n.features, F.VIRTIO_BLK_F_RO)).to.equal(false);
    const config = decodeBlkConfig(await r.client!.getConfig(0, BLK_CONFIG_SIZE), n.features);
    expect(config.discard).to.deep.equal({ maxDiscardSectors: 65536, maxDiscardSeg: 16, discardSectorAlignment: 8 });
    expect(config.writeZeroes).to.deep.equal({ maxWriteZeroesSectors: 65536, maxWriteZeroesSeg: 16, mayUnmap: true });
  });

  it('WRITE_ZEROES zeros the ranges in the image file, punching a hole with UNMAP', async () => {
    const r = await serve();
    // Two segments: 8 sectors at 16 written as zeros, 64 sectors at 128 unmapped.
    const done = await r.request(0, BLK_T.WRITE_ZEROES, 0n, { segments: [{ sector: 16n, num: 8, flags: 0 }, { sector: 128n, num: 64, flags: UNMAP }] });
    expect(done).to.deep.include({ status: OK, len: 1 });
    const file = readFileSync(img.path);
    expect(file.subarray(16 * 512, 24 * 512).every((b) => b === 0)).to.equal(true);
    expect(file.subarray(128 * 512, 192 * 512).every((b) => b === 0)).to.equal(true);
    expect(file[16 * 512 - 1]).to.equal(0xa5, 'before the first range');
    expect(file[24 * 512]).to.equal(0xa5, 'after the first range');
    expect(file[192 * 512]).to.equal(0xa5, 'after the second range');
    // Read back through the device too.
    expect((await r.request(1, BLK_T.IN, 128n)).status).to.equal(OK);
    expect(r.data(1).every((b) => b === 0)).to.equal(true);
    expect(backend!.blk.writeZeroes).to.equal(1);
  });

  it('DISCARD deallocates the range (a hole the file system reports)', async () => {
    const r = await serve();
    const blocksBefore = statSync(img.path).blocks;
    const done = await r.request(0, BLK_T.DISCARD, 0n, { segments: [{ sector: 0n, num: 1024, flags: 0 }] });
    expect(done.status).to.equal(OK);
    const blocksAfter = statSync(img.path).blocks;
    // tmpfs and the usual disk file systems punch holes; the 512 KiB range is gone from the allocation.
    expect(blocksBefore - blocksAfter, `st_blocks ${blocksBefore} → ${blocksAfter}`).to.be.at.least(1024 - 8);
    expect(statSync(img.path).size).to.equal(1 << 20, 'the size is kept');
    expect(backend!.blk.discards).to.equal(1);
  });

  it('answers UNSUPP for UNMAP on a discard and for unknown flags, IOERR beyond the limits or the disk', async () => {
    const r = await serve();
    expect((await r.request(0, BLK_T.DISCARD, 0n, { segments: [{ sector: 0n, num: 8, flags: UNMAP }] })).status).to.equal(UNSUPP);
    expect((await r.request(1, BLK_T.WRITE_ZEROES, 0n, { segments: [{ sector: 0n, num: 8, flags: 2 }] })).status).to.equal(UNSUPP);
    expect((await r.request(2, BLK_T.WRITE_ZEROES, 0n, { segments: [{ sector: 2040n, num: 16, flags: 0 }] })).status).to.equal(IOERR, 'past the end');
    expect((await r.request(3, BLK_T.DISCARD, 0n, { segments: [{ sector: 0n, num: 65537, flags: 0 }] })).status).to.equal(IOERR, 'over max_discard_sectors');
    const seventeen = Array.from({ length: 17 }, (_, i) => ({ sector: BigInt(i * 8), num: 8, flags: 0 }));
    expect((await r.request(4, BLK_T.WRITE_ZEROES, 0n, { segments: seventeen })).status).to.equal(IOERR, 'over max_write_zeroes_seg');
    expect((await r.request(5, BLK_T.DISCARD, 0n, { length: 12 })).status).to.equal(IOERR, 'a partial segment');
    // Nothing was touched by any refused request (checked before anything is applied).
    expect(readFileSync(img.path).every((b) => b === 0xa5)).to.equal(true);
  });

  it('read-only: offers VIRTIO_BLK_F_RO, reads, and answers every write-type request IOERR without writing (§5.2.6.2)', async () => {
    const r = await serve(true);
    expect(hasBit(r.negotiated!.features, F.VIRTIO_BLK_F_RO)).to.equal(true);
    expect((await r.request(0, BLK_T.IN, 8n)).status).to.equal(OK);
    expect(r.data(0).every((b) => b === 0xa5)).to.equal(true);
    r.data(1).fill(0x11);
    expect((await r.request(1, BLK_T.OUT, 8n)).status).to.equal(IOERR);
    expect((await r.request(2, BLK_T.WRITE_ZEROES, 0n, { segments: [{ sector: 0n, num: 8, flags: 0 }] })).status).to.equal(IOERR);
    expect((await r.request(3, BLK_T.DISCARD, 0n, { segments: [{ sector: 0n, num: 8, flags: 0 }] })).status).to.equal(IOERR);
    expect(readFileSync(img.path).every((b) => b === 0xa5)).to.equal(true);
    expect(backend!.blk.writes).to.equal(0);
  });

  it('offers the request features qemu-storage-daemon 7.2 offers (FLUSH, DISCARD, WRITE_ZEROES, SEG_MAX, BLK_SIZE)', async () => {
    const r = await serve();
    const ours = r.negotiated!.features;
    for (const f of [F.VIRTIO_BLK_F_FLUSH, F.VIRTIO_BLK_F_DISCARD, F.VIRTIO_BLK_F_WRITE_ZEROES, F.VIRTIO_BLK_F_SEG_MAX, F.VIRTIO_BLK_F_BLK_SIZE]) {
      expect(hasBit(ours, f), `feature bit ${f}`).to.equal(true);
    }
    expect((await r.request(0, BLK_T.FLUSH, 0n)).status).to.equal(OK);
    expect((await r.request(1, BLK_T.GET_ID, 0n, { length: 20 })).status).to.equal(OK);
    expect(Buffer.from(r.data(1).subarray(0, 14)).toString()).to.equal('vhost-user-ref');
  });
});
