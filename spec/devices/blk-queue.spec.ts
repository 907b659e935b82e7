/**
 * BlkQueue against the in-process device model (spec/helpers/blk-model.ts):
 * real guest memory and rings, no back-end. Each request type, each limit
 * refused before sending, each device answer turned into a typed error,
 * timeouts, the batch API and rebind after a lost device, on split and packed rings.
 */
import { expect } from 'chai';
import {
  BLK_RESULT_TIMEOUT,
  BlkBatch,
  BlkBatchResults,
} from '../../lib/devices/blk/blk-queue.js';
import { BlkRequestError, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../lib/devices/blk/blk-request.js';
import { isVhostUserError, type VhostErrorCode } from '../../lib/errors.js';
import { BlkModel, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES, type ModelOptions } from '../helpers/blk-model.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

async function rejects(p: Promise<unknown>, code: VhostErrorCode): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    expect(isVhostUserError(e), String(e)).to.equal(true);
    expect((e as { code: string }).code, String(e)).to.equal(code);
    return e;
  }
  expect.fail(`expected ${code}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const ring of ['split', 'packed'] as const) {
  describe(`BlkQueue (${ring} ring, device model)`, function () {
    this.timeout(10_000);
    let m: BlkModel;
    const open = (o: ModelOptions = {}) => (m = new BlkModel({ ring, ...o }));
    afterEach(() => m?.close());

    it('writes and reads back data; header 16 bytes, status 1 byte, sector in 512-byte units', async () => {
      open();
      const data = pattern(8192, 1);
      await m.queue.write(4096, data);
      expect(Buffer.from(m.disk.subarray(4096, 4096 + 8192)).equals(Buffer.from(data))).to.equal(true);
      const back = await m.queue.read(4096, 8192);
      expect(Buffer.from(back).equals(Buffer.from(data))).to.equal(true);
      expect(m.seen.map((s) => [s.type, s.sector])).to.deep.equal([
        [T_OUT, 8],
        [T_IN, 8],
      ]);
      for (const s of m.seen) {
        expect(s.segments[0]).to.equal(16);
        expect(s.segments[s.segments.length - 1]).to.equal(1);
      }
      expect(m.queue.inFlight).to.equal(0);
    });

    it('splits a buffer into size_max segments and sends a scatter-gather list as given', async () => {
      open({ limits: { sizeMax: 4096 } });
      await m.queue.write(0, pattern(16384, 2));
      expect(m.seen[0]!.segments).to.deep.equal([16, 4096, 4096, 4096, 4096, 1]);
      await m.queue.write(0, [pattern(512, 3), pattern(1024, 4), pattern(512, 5)]);
      expect(m.seen[1]!.segments).to.deep.equal([16, 512, 1024, 512, 1]);
      expect(Buffer.from(m.disk.subarray(512, 1536)).equals(Buffer.from(pattern(1024, 4)))).to.equal(true);
      const parts = await m.queue.readv(0, [512, 1024]);
      expect(m.seen[2]!.segments).to.deep.equal([16, 512, 1024, 1]);
      expect(Buffer.from(parts.subarray(512)).equals(Buffer.from(pattern(1024, 4)))).to.equal(true);
    });

    it('reads and writes zero-copy through caller-owned guest buffers', async () => {
      open();
      const a = m.queue.allocBuffer(4096);
      const b = m.queue.allocBuffer(512);
      a.bytes.set(pattern(4096, 6));
      b.bytes.set(pattern(512, 7));
      await m.queue.writeFrom(1024, [a, b]);
      expect(Buffer.from(m.disk.subarray(1024 + 4096, 1024 + 4608)).equals(Buffer.from(pattern(512, 7)))).to.equal(true);
      a.bytes.fill(0);
      await m.queue.readInto(1024, [a]);
      expect(Buffer.from(a.bytes).equals(Buffer.from(pattern(4096, 6)))).to.equal(true);
      m.queue.freeBuffer(a);
      m.queue.freeBuffer(b);
    });

    it('flush, get-id, discard, write-zeroes with UNMAP; sector 0 in their headers', async () => {
      open({ limits: { discard: { maxSectors: 64, maxSeg: 4 } } });
      m.disk.fill(0xaa);
      await m.queue.flush();
      expect(m.flushes).to.equal(1);
      expect(await m.queue.getId()).to.equal('blk-model');
      await m.queue.discard([
        { offset: 0, length: 1024 },
        { offset: 8192, length: 512 },
        { offset: 16384, length: 4096 },
      ]);
      await m.queue.writeZeroes({ offset: 65536, length: 2048 }, { unmap: true });
      const types = m.seen.map((s) => s.type);
      expect(types).to.deep.equal([T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES]);
      expect(m.seen.every((s) => s.sector === 0)).to.equal(true);
      expect(m.seen[2]!.ranges).to.deep.equal([
        { sector: 0, sectors: 2, flags: 0 },
        { sector: 16, sectors: 1, flags: 0 },
        { sector: 32, sectors: 8, flags: 0 },
      ]);
      expect(m.seen[3]!.ranges).to.deep.equal([{ sector: 128, sectors: 4, flags: 1 }]);
      expect(m.disk[0]).to.equal(0);
      expect(m.disk[1024]).to.equal(0xaa);
      expect(m.disk[65536 + 2047]).to.equal(0);
      expect(m.disk[65536 + 2048]).to.equal(0xaa);
    });

    describe('limits, refused before anything is sent', () => {
      const cases: [string, ModelOptions['limits'], (m: BlkModel) => Promise<unknown>, VhostErrorCode][] = [
        ['an offset not aligned to blk_size', { blkSize: 4096 }, (m) => m.queue.read(512, 4096), 'VHOST_BLK_UNALIGNED'],
        ['a length not aligned to blk_size', { blkSize: 4096 }, (m) => m.queue.write(0, new Uint8Array(1024)), 'VHOST_BLK_UNALIGNED'],
        ['a read beyond capacity', {}, (m) => m.queue.read(1024 * 1024 - 512, 1024), 'VHOST_BLK_BEYOND_CAPACITY'],
        ['a discard beyond capacity', {}, (m) => m.queue.discard({ offset: 1024 * 1024, length: 512 }), 'VHOST_BLK_BEYOND_CAPACITY'],
        ['more segments than seg_max', { segMax: 2 }, (m) => m.queue.write(0, [new Uint8Array(512), new Uint8Array(512), new Uint8Array(512)]), 'VHOST_BLK_TOO_MANY_SEGMENTS'],
        ['a segment beyond size_max', { sizeMax: 4096 }, (m) => m.queue.write(0, [new Uint8Array(8192)]), 'VHOST_BLK_SEGMENT_TOO_LARGE'],
        ['a discard beyond max_discard_sectors', { discard: { maxSectors: 8, maxSeg: 1 } }, (m) => m.queue.discard({ offset: 0, length: 8192 }), 'VHOST_BLK_TOO_MANY_SECTORS'],
        ['more discard ranges than max_discard_seg', { discard: { maxSectors: 8, maxSeg: 1 } }, (m) => m.queue.discard([{ offset: 0, length: 512 }, { offset: 1024, length: 512 }]), 'VHOST_BLK_TOO_MANY_SEGMENTS'],
        ['a write-zeroes beyond max_write_zeroes_sectors', { writeZeroes: { maxSectors: 1, maxSeg: 1, mayUnmap: false } }, (m) => m.queue.writeZeroes({ offset: 0, length: 1024 }), 'VHOST_BLK_TOO_MANY_SECTORS'],
        ['a write to a read-only device', { readOnly: true }, (m) => m.queue.write(0, new Uint8Array(512)), 'VHOST_BLK_READ_ONLY'],
        ['a discard on a read-only device', { readOnly: true }, (m) => m.queue.discard({ offset: 0, length: 512 }), 'VHOST_BLK_READ_ONLY'],
        ['a write-zeroes on a read-only device', { readOnly: true }, (m) => m.queue.writeZeroes({ offset: 0, length: 512 }), 'VHOST_BLK_READ_ONLY'],
        ['a flush without VIRTIO_BLK_F_FLUSH', { flush: false }, (m) => m.queue.flush(), 'VHOST_FEATURE_NOT_NEGOTIATED'],
        ['a discard without VIRTIO_BLK_F_DISCARD', { discard: null }, (m) => m.queue.discard({ offset: 0, length: 512 }), 'VHOST_FEATURE_NOT_NEGOTIATED'],
        ['a write-zeroes without VIRTIO_BLK_F_WRITE_ZEROES', { writeZeroes: null }, (m) => m.queue.writeZeroes({ offset: 0, length: 512 }), 'VHOST_FEATURE_NOT_NEGOTIATED'],
      ];
      for (const [what, limits, call, code] of cases) {
        it(`${what}: ${code}`, async () => {
          open({ limits });
          const e = (await rejects(call(m), code)) as BlkRequestError;
          expect(e).to.be.instanceOf(BlkRequestError);
          expect(m.seen).to.have.length(0);
          expect(m.queue.counters.submitted).to.equal(0);
        });
      }
      it('a read-only device still serves reads', async () => {
        open({ limits: { readOnly: true } });
        m.disk.set(pattern(512, 9));
        expect(Buffer.from(await m.queue.read(0, 512)).equals(Buffer.from(pattern(512, 9)))).to.equal(true);
      });
    });

    describe('device answers', () => {
      it('IOERR and UNSUPP are typed errors naming the request', async () => {
        open();
        m.forceStatus = 1;
        const e = (await rejects(m.queue.write(2048, new Uint8Array(1024)), 'VHOST_BLK_IOERR')) as BlkRequestError;
        expect([e.type, e.sector, e.length]).to.deep.equal([T_OUT, 4, 1024]);
        expect(e.message).to.contain('VIRTIO_BLK_T_OUT sector 4 length 1024');
        m.forceStatus = 2;
        const u = (await rejects(m.queue.flush(), 'VHOST_BLK_UNSUPP')) as BlkRequestError;
        expect(u.type).to.equal(T_FLUSH);
        m.forceStatus = null;
        await m.queue.read(0, 512);
        expect(m.queue.counters.failed).to.equal(2);
      });

      it('a status byte that is no VIRTIO_BLK_S_* value: VHOST_BLK_BAD_STATUS', async () => {
        open();
        m.forceStatus = 7;
        await rejects(m.queue.read(0, 512), 'VHOST_BLK_BAD_STATUS');
      });

      it('strict used length: a short length fails the request, a long one breaks the ring', async () => {
        open();
        m.lenOverride = (type, real) => (type === T_IN ? real - 1 : real);
        const e = (await rejects(m.queue.read(0, 1024), 'VHOST_BLK_USED_LEN')) as BlkRequestError;
        expect(e.message).to.contain('used len 1024');
        // The ring is still healthy after a short length.
        m.lenOverride = (type, real, writable) => (type === T_OUT ? writable + 1023 : real);
        await rejects(m.queue.write(0, new Uint8Array(1024)), 'VHOST_RING_LEN_TOO_LARGE');
        await rejects(m.queue.read(0, 512), 'VHOST_RING_LEN_TOO_LARGE');
      });

      it('lenient used length (DPDK vhost_blk reports the data length of a write): counted, status believed', async () => {
        open({ clampUsedLen: true, queue: { strictUsedLen: false } });
        m.lenOverride = (type, real) => (type === T_OUT ? 1024 : real);
        await m.queue.write(0, pattern(1024, 3));
        await m.queue.write(1024, pattern(1024, 4));
        expect(m.queue.counters.usedLenViolations).to.equal(2);
        expect(m.vq.usedLenClamped).to.equal(2);
        expect(Buffer.from(await m.queue.read(0, 1024)).equals(Buffer.from(pattern(1024, 3)))).to.equal(true);
        expect(m.queue.counters.usedLenViolations).to.equal(2);
      });
    });

    it('a request never completed times out; its slot stays with the device until it completes', async () => {
      open({ queue: { timeoutMs: 60 } });
      m.hold = true;
      const t0 = Date.now();
      const e = (await rejects(m.queue.read(8192, 512), 'VHOST_BLK_TIMEOUT')) as BlkRequestError;
      expect(Date.now() - t0).to.be.within(50, 2000);
      expect(e.sector).to.equal(16);
      expect(m.queue.inFlight).to.equal(1);
      expect(m.held).to.have.length(1);
      m.hold = false;
      m.release();
      await sleep(20);
      m.queue.poll();
      expect(m.queue.counters.lateCompletions).to.equal(1);
      expect(m.queue.inFlight).to.equal(0);
      await m.queue.write(0, new Uint8Array(512));
    });

    it('requests waiting for a slot time out too, and nothing is left behind', async () => {
      open({ size: 8, queue: { timeoutMs: 60 } });
      m.hold = true;
      const all = Array.from({ length: 20 }, (_, i) => m.queue.read(i * 512, 512).then(() => 'ok', (e: { code: string }) => e.code));
      expect(m.queue.queued).to.be.greaterThan(0);
      const codes = await Promise.all(all);
      expect(new Set(codes)).to.deep.equal(new Set(['VHOST_BLK_TIMEOUT']));
      expect(m.queue.queued).to.equal(0);
    });

    it('more requests than the ring holds, completed out of order, all land once with the right data', async () => {
      open({ size: 16 });
      m.reverse = true;
      const n = 100;
      await Promise.all(Array.from({ length: n }, (_, i) => m.queue.write(i * 1024, pattern(1024, i))));
      const back = await Promise.all(Array.from({ length: n }, (_, i) => m.queue.read(i * 1024, 1024)));
      back.forEach((b, i) => expect(Buffer.from(b).equals(Buffer.from(pattern(1024, i))), `request ${i}`).to.equal(true));
      expect(m.queue.counters.completed).to.equal(2 * n);
      expect(m.seen).to.have.length(2 * n);
    });

    it('interrupt mode: completions arrive through the call eventfd', async () => {
      open({ mode: 'interrupt' });
      await Promise.all(Array.from({ length: 40 }, (_, i) => m.queue.write(i * 512, pattern(512, i))));
      expect(m.queue.counters.interrupts).to.be.greaterThan(0);
      expect(Buffer.from(await m.queue.read(39 * 512, 512)).equals(Buffer.from(pattern(512, 39)))).to.equal(true);
    });

    it('batch API: preallocated buffers, submit N, poll completions into a reused result array', async () => {
      open({ auto: false, size: 64, indirectMax: 8 });
      const batch = new BlkBatch(m.queue, 32, 4096);
      const results = new BlkBatchResults(32);
      for (let i = 0; i < 32; i++) {
        batch.buffer(i).set(pattern(4096, i));
        expect(batch.submit(i, VIRTIO_BLK_T_OUT, i * 4096)).to.equal(true);
      }
      batch.kick();
      expect(m.serve()).to.equal(32);
      let got = 0;
      while (got < 32) {
        const n = batch.poll(results);
        for (let k = 0; k < n; k++) expect(results.status[k]).to.equal(0);
        got += n;
      }
      for (let i = 0; i < 32; i++) {
        batch.buffer(i).fill(0);
        batch.submit(i, VIRTIO_BLK_T_IN, (31 - i) * 4096);
      }
      batch.kick();
      m.serve();
      const seenIdx = new Set<number>();
      for (let n = batch.poll(results); n > 0 || seenIdx.size < 32; n = batch.poll(results)) {
        for (let k = 0; k < n; k++) seenIdx.add(results.index[k]!);
      }
      for (let i = 0; i < 32; i++) expect(Buffer.from(batch.buffer(i)).equals(Buffer.from(pattern(4096, 31 - i))), `buffer ${i}`).to.equal(true);
      batch.close();
    });

    it('batch API: a buffer that timed out stays busy until the device returns it', async () => {
      open({ auto: false, queue: { timeoutMs: 30 } });
      const batch = new BlkBatch(m.queue, 4, 512);
      const results = new BlkBatchResults(4);
      batch.submit(2, VIRTIO_BLK_T_IN, 0);
      batch.kick();
      m.hold = true;
      m.serve();
      let n = 0;
      const t0 = Date.now();
      while (n === 0 && Date.now() - t0 < 2000) {
        await sleep(5);
        n = batch.poll(results);
      }
      expect([n, results.index[0], results.status[0]]).to.deep.equal([1, 2, BLK_RESULT_TIMEOUT]);
      expect(batch.isBusy(2)).to.equal(true);
      expect(() => batch.submit(2, VIRTIO_BLK_T_IN, 0)).to.throw(/in flight/);
      m.release();
      expect(batch.poll(results)).to.equal(0);
      expect(batch.isBusy(2)).to.equal(false);
      expect(m.queue.counters.lateCompletions).to.equal(1);
    });

    it('rebind after a lost device: resubmit puts requests in flight on the new ring; they complete once with the right data', async () => {
      open();
      m.disk.set(pattern(4096, 11));
      m.hold = true;
      const reads = Array.from({ length: 8 }, (_, i) => m.queue.read(i * 512, 512));
      const write = m.queue.write(8192, pattern(512, 12));
      await sleep(20);
      expect(m.held).to.have.length(9);
      m.replaceDevice();
      m.hold = false;
      expect(m.queue.rebind('resubmit')).to.deep.include({ resubmitted: 9, failed: 0 });
      m.queue.publishNow();
      const got = await Promise.all(reads);
      await write;
      got.forEach((b, i) => expect(Buffer.from(b).equals(Buffer.from(pattern(4096, 11).subarray(i * 512, i * 512 + 512)))).to.equal(true));
      expect(Buffer.from(m.disk.subarray(8192, 8704)).equals(Buffer.from(pattern(512, 12)))).to.equal(true);
      expect(m.queue.counters.completed).to.equal(9);
      expect(m.queue.counters.resubmitted).to.equal(9);
    });

    it('rebind after a lost device: fail rejects requests in flight with VHOST_BLK_ABORTED', async () => {
      open();
      m.hold = true;
      const p = m.queue.read(1024, 512);
      await sleep(20);
      const vq = m.replaceRing();
      expect(m.queue.rebind('fail', vq)).to.deep.include({ resubmitted: 0, failed: 1 });
      const e = (await rejects(p, 'VHOST_BLK_ABORTED')) as BlkRequestError;
      expect(e.sector).to.equal(2);
      m.hold = false;
      await m.queue.read(0, 512);
    });

    it('close fails what is in flight with VHOST_CLIENT_CLOSED', async () => {
      open();
      m.hold = true;
      const p = m.queue.read(0, 512);
      await sleep(10);
      m.queue.close();
      await rejects(p, 'VHOST_CLIENT_CLOSED');
      await rejects(m.queue.read(0, 512), 'VHOST_CLIENT_CLOSED');
    });
  });
}
