/**
 * VirtioBlk against qemu-storage-daemon 7.2 (a real vhost-user-blk back-end,
 * started and stopped by the tests): data checked in the image file outside
 * this library, discard and write-zeroes seen in the file, a read-only export,
 * every limit refused before sending, IOERR answered by the device, timeouts
 * with a stopped back-end, and a back-end killed with requests in flight.
 */
import { closeSync, openSync, readSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { BlkBatchResults } from '../../lib/devices/blk/blk-queue.js';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import type { BlkRequestError } from '../../lib/devices/blk/blk-request.js';
import { isVhostUserError, type VhostErrorCode } from '../../lib/errors.js';
import { makeTempDir, startQemuStorageDaemon, stopAll, type QemuStorageDaemonBackend } from '../../lib/launch/index.js';
import { hasBit, VirtioBlkFeature as F, VirtioFeature } from '../../lib/protocol/constants.js';
import { skipWithout } from '../helpers/backends.js';

const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 13 + seed * 101 + (i >> 8)) & 0xff;
  return b;
}

function readFile(file: string, offset: number, length: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const b = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, b, done, length - done, offset + done);
      if (n <= 0) break;
      done += n;
    }
    return b;
  } finally {
    closeSync(fd);
  }
}

function writeFile(file: string, offset: number, data: Uint8Array): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function rejects(p: Promise<unknown>, code: VhostErrorCode): Promise<BlkRequestError> {
  try {
    await p;
  } catch (e) {
    expect(isVhostUserError(e), String(e)).to.equal(true);
    expect((e as { code: string }).code, String(e)).to.equal(code);
    return e as BlkRequestError;
  }
  return expect.fail(`expected ${code}`);
}

describe('VirtioBlk against qemu-storage-daemon @integration', function () {
  this.timeout(30_000);
  let blk: VirtioBlk | null = null;

  before(function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
  });

  afterEach(async () => {
    blk?.close();
    blk = null;
    await stopAll();
  });

  for (const numQueues of [1, 2]) {
    describe(`file image, num-queues ${numQueues}`, () => {
      let qsd: QemuStorageDaemonBackend;
      beforeEach(async () => {
        qsd = await startQemuStorageDaemon({ numQueues, imageSize: 16 * MiB, discard: 'unmap' });
        blk = await VirtioBlk.open(qsd.socketPath, { queues: numQueues });
      });

      it('negotiates what qemu-storage-daemon offers and decodes its config', () => {
        const f = blk!.features;
        for (const b of [F.VIRTIO_BLK_F_SEG_MAX, F.VIRTIO_BLK_F_BLK_SIZE, F.VIRTIO_BLK_F_FLUSH, F.VIRTIO_BLK_F_DISCARD, F.VIRTIO_BLK_F_WRITE_ZEROES, F.VIRTIO_BLK_F_MQ]) {
          expect(hasBit(f, b), `feature ${b}`).to.equal(true);
        }
        expect(hasBit(f, VirtioFeature.VIRTIO_F_VERSION_1)).to.equal(true);
        expect(hasBit(f, F.VIRTIO_BLK_F_RO)).to.equal(false);
        expect(blk!.config.capacity).to.equal((16 * MiB) / 512);
        expect(blk!.config.numQueues).to.equal(numQueues);
        expect(blk!.config.segMax).to.equal(126);
        expect(blk!.queueCount).to.equal(numQueues);
        expect(blk!.inflightShared).to.equal(false);
      });

      it('data written through the driver is in the image file, byte for byte, on every queue', async () => {
        for (let q = 0; q < numQueues; q++) {
          const data = pattern(256 * 1024, q + 1);
          const at = MiB + q * 512 * 1024;
          await blk!.write(at, data, q);
          await blk!.flush(q);
          expect(same(readFile(qsd.imagePath!, at, data.length), data), `queue ${q}`).to.equal(true);
        }
      });

      it('data written into the file directly is read through the driver', async () => {
        const data = pattern(96 * 1024, 9);
        writeFile(qsd.imagePath!, 3 * MiB + 4096, data);
        for (let q = 0; q < numQueues; q++) expect(same(await blk!.read(3 * MiB + 4096, data.length, q), data), `queue ${q}`).to.equal(true);
        // A scatter-gather read: one descriptor per part, the parts in order.
        const parts = await blk!.queue(numQueues - 1).readv(3 * MiB + 4096, [512, 4096, 1024]);
        expect(same(parts, data.subarray(0, 5632))).to.equal(true);
      });

      it('a full ring in flight on every queue, out-of-order completions, every byte right', async () => {
        const n = 256;
        const writes: Promise<void>[] = [];
        for (let q = 0; q < numQueues; q++) for (let i = 0; i < n; i++) writes.push(blk!.write((q * n + i) * 4096, pattern(4096, q * n + i), q));
        expect(blk!.queue(0).inFlight).to.equal(256);
        await Promise.all(writes);
        const reads: Promise<Uint8Array>[] = [];
        for (let q = 0; q < numQueues; q++) for (let i = 0; i < n; i++) reads.push(blk!.read((q * n + i) * 4096, 4096, numQueues - 1 - q));
        const got = await Promise.all(reads);
        got.forEach((b, k) => expect(same(b, pattern(4096, k)), `block ${k}`).to.equal(true));
        expect(same(readFile(qsd.imagePath!, 0, 4096), pattern(4096, 0))).to.equal(true);
        const t = blk!.totals();
        expect([t.completed, t.failed, t.usedLenViolations, t.timeouts]).to.deep.equal([2 * n * numQueues, 0, 0, 0]);
      });

      it('discard and write-zeroes with UNMAP reach the file: zeroes read back, blocks deallocated', async () => {
        const at = 8 * MiB;
        await blk!.write(at, pattern(2 * MiB, 3));
        await blk!.flush();
        const before = statSync(qsd.imagePath!).blocks;
        await blk!.discard({ offset: at, length: MiB });
        await blk!.writeZeroes({ offset: at + MiB, length: MiB / 2 }, { unmap: true });
        await blk!.flush();
        expect(readFile(qsd.imagePath!, at, MiB + MiB / 2).every((b) => b === 0)).to.equal(true);
        expect(same(readFile(qsd.imagePath!, at + MiB + MiB / 2, MiB / 2), pattern(2 * MiB, 3).subarray(MiB + MiB / 2))).to.equal(true);
        expect((await blk!.read(at, MiB)).every((b) => b === 0)).to.equal(true);
        const after = statSync(qsd.imagePath!).blocks;
        expect(before - after, 'blocks freed (512-byte units)').to.be.at.least(2048);
      });

      it('get-id answers vhost_user_blk', async () => {
        expect(await blk!.getId()).to.equal('vhost_user_blk');
      });
    });
  }

  describe('limits and device answers', () => {
    let qsd: QemuStorageDaemonBackend;
    beforeEach(async () => {
      qsd = await startQemuStorageDaemon({ imageSize: 64 * MiB });
      blk = await VirtioBlk.open(qsd.socketPath, { timeoutMs: 2000 });
    });

    const cases: [string, (b: VirtioBlk) => Promise<unknown>, VhostErrorCode][] = [
      ['unaligned offset', (b) => b.read(100, 512), 'VHOST_BLK_UNALIGNED'],
      ['beyond capacity', (b) => b.read(64 * MiB - 512, 1024), 'VHOST_BLK_BEYOND_CAPACITY'],
      ['more segments than seg_max (126)', (b) => b.write(0, Array.from({ length: 127 }, () => new Uint8Array(512))), 'VHOST_BLK_TOO_MANY_SEGMENTS'],
      ['a discard beyond max_discard_sectors (32768)', (b) => b.discard({ offset: 0, length: 32769 * 512 }), 'VHOST_BLK_TOO_MANY_SECTORS'],
      ['two discard ranges with max_discard_seg 1', (b) => b.discard([{ offset: 0, length: 512 }, { offset: 4096, length: 512 }]), 'VHOST_BLK_TOO_MANY_SEGMENTS'],
      ['a write-zeroes beyond max_write_zeroes_sectors', (b) => b.writeZeroes({ offset: 0, length: 32769 * 512 }), 'VHOST_BLK_TOO_MANY_SECTORS'],
    ];
    for (const [what, call, code] of cases) {
      it(`${what}: ${code}, nothing sent`, async () => {
        await rejects(call(blk!), code);
        expect(blk!.totals().submitted).to.equal(0);
      });
    }

    it('126 segments (seg_max) are accepted and land in order', async () => {
      const parts = Array.from({ length: 126 }, (_, i) => pattern(512, i));
      await blk!.write(0, parts);
      await blk!.flush();
      parts.forEach((p, i) => expect(same(readFile(qsd.imagePath!, i * 512, 512), p), `segment ${i}`).to.equal(true));
    });

    it('IOERR from the device (a read past the end the driver was told to allow) names the request', async () => {
      (blk!.limits as { capacity: number }).capacity += 8;
      const e = await rejects(blk!.read(64 * MiB, 1024), 'VHOST_BLK_IOERR');
      expect([e.type, e.sector, e.length]).to.deep.equal([0, (64 * MiB) / 512, 1024]);
      expect(e.message).to.match(/^VIRTIO_BLK_T_IN sector 131072 length 1024: /);
      // The queue is fine afterwards.
      await blk!.read(0, 512);
    });

    it('a stopped back-end: the request times out, its slot stays in flight until the back-end returns it', async () => {
      process.kill(qsd.pid, 'SIGSTOP');
      try {
        const e = await rejects(blk!.read(4096, 4096), 'VHOST_BLK_TIMEOUT');
        expect(e.sector).to.equal(8);
        expect(blk!.queue(0).inFlight).to.equal(1);
      } finally {
        process.kill(qsd.pid, 'SIGCONT');
      }
      const t0 = Date.now();
      while (blk!.queue(0).inFlight > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      expect(blk!.queue(0).counters.lateCompletions).to.equal(1);
      expect(blk!.queue(0).inFlight).to.equal(0);
      await blk!.read(0, 512);
    });

    it('packed rings are refused: qemu-storage-daemon 7.2 offers split rings only', async () => {
      // qemu-storage-daemon serves one front-end at a time.
      blk!.close();
      blk = null;
      await rejects(VirtioBlk.open(qsd.socketPath, { ring: 'packed' }), 'VHOST_FEATURE_NOT_NEGOTIATED');
    });

    it('more queues than num_queues are refused before any ring is set up', async () => {
      blk!.close();
      blk = null;
      await rejects(VirtioBlk.open(qsd.socketPath, { queues: 2 }), 'VHOST_INVALID_ARGUMENT');
    });
  });

  it('a read-only export: RO negotiated, writes refused before sending, reads served', async () => {
    const qsd = await startQemuStorageDaemon({ imageSize: 4 * MiB, writable: false });
    writeFile(qsd.imagePath!, 0, pattern(4096, 5));
    blk = await VirtioBlk.open(qsd.socketPath);
    expect(blk.readOnly).to.equal(true);
    await rejects(blk.write(0, new Uint8Array(512)), 'VHOST_BLK_READ_ONLY');
    await rejects(blk.discard({ offset: 0, length: 512 }), 'VHOST_BLK_READ_ONLY');
    await rejects(blk.writeZeroes({ offset: 0, length: 512 }, { unmap: true }), 'VHOST_BLK_READ_ONLY');
    expect(blk.totals().submitted).to.equal(0);
    expect(same(await blk.read(0, 4096), pattern(4096, 5))).to.equal(true);
    // What the device itself says when the driver's check is bypassed: IOERR.
    (blk.limits as { readOnly: boolean }).readOnly = false;
    await rejects(blk.write(0, new Uint8Array(512)), 'VHOST_BLK_IOERR');
    expect(same(readFile(qsd.imagePath!, 0, 4096), pattern(4096, 5))).to.equal(true);
  });

  it('null-co: a device with no storage, batch API at queue depth 32 on 2 queues', async () => {
    const qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 1 << 30, numQueues: 2 });
    blk = await VirtioBlk.open(qsd.socketPath, { queues: 2, mode: 'poll' });
    expect(blk.capacityBytes).to.equal(1 << 30);
    const batches = [blk.createBatch(0, 32, 4096), blk.createBatch(1, 32, 4096)];
    const results = new BlkBatchResults(32);
    let done = 0;
    const total = 4000;
    let submitted = 0;
    const t0 = Date.now();
    for (const b of batches) {
      for (let i = 0; i < 32; i++) b.submit(i, i % 2 === 0 ? 0 : 1, ((submitted++ * 7919) % 262144) * 4096);
      b.kick();
    }
    while (done < total && Date.now() - t0 < 20_000) {
      for (const b of batches) {
        const n = b.poll(results);
        for (let k = 0; k < n; k++) {
          expect(results.status[k]).to.equal(0);
          done++;
          if (submitted < total) b.submit(results.index[k]!, submitted % 2 === 0 ? 0 : 1, ((submitted++ * 7919) % 262144) * 4096);
        }
        if (n > 0) b.kick();
      }
      await new Promise((r) => setImmediate(r));
    }
    expect(done).to.be.at.least(total);
    for (const b of batches) b.close();
  });

  describe('the back-end killed with requests in flight, started again (no inflight area)', () => {
    for (const policy of ['resubmit', 'fail'] as const) {
      it(`inflightPolicy '${policy}': ${policy === 'resubmit' ? 'every request completes once with the right data' : 'every request in flight fails with VHOST_BLK_ABORTED'}`, async () => {
        const dir = await makeTempDir('vhost-blk-reconnect-');
        const socketPath = path.join(dir, 'blk.sock');
        const image = path.join(dir, 'disk.raw');
        closeSync(openSync(image, 'w'));
        truncateSync(image, 8 * MiB);
        try {
          let qsd = await startQemuStorageDaemon({ imagePath: image, socketPath });
          blk = await VirtioBlk.open(socketPath, { reconnect: { timeoutMs: 15_000 }, inflightPolicy: policy, timeoutMs: 20_000 });
          const reconnected = new Promise<{ resubmitted: number; failed: number }>((r) => blk!.once('reconnect', r));
          // Stopped, so the 128 requests are surely in flight when it dies.
          process.kill(qsd.pid, 'SIGSTOP');
          const ops = Array.from({ length: 128 }, (_, i) => blk!.write(i * 4096, pattern(4096, i)).then(() => 'ok', (e: { code: string }) => e.code));
          await new Promise((r) => setTimeout(r, 50));
          expect(blk.queue(0).inFlight).to.equal(128);
          await qsd.kill9();
          rmSync(socketPath, { force: true });
          qsd = await startQemuStorageDaemon({ imagePath: image, socketPath });
          const report = await reconnected;
          const outcomes = await Promise.all(ops);
          const t = blk.totals();
          expect(t.completed, 'no request completed twice').to.equal(policy === 'resubmit' ? 128 : 0);
          if (policy === 'resubmit') {
            expect(report.resubmitted + report.failed).to.equal(128);
            expect(new Set(outcomes)).to.deep.equal(new Set(['ok']));
            await blk.flush();
            for (let i = 0; i < 128; i++) expect(same(readFile(image, i * 4096, 4096), pattern(4096, i)), `block ${i}`).to.equal(true);
          } else {
            expect(report.failed).to.equal(128);
            expect(new Set(outcomes)).to.deep.equal(new Set(['VHOST_BLK_ABORTED']));
          }
          // The device works after the reconnect.
          await blk.write(MiB, pattern(4096, 77));
          expect(same(await blk.read(MiB, 4096), pattern(4096, 77))).to.equal(true);
        } finally {
          blk?.close();
          blk = null;
          await stopAll();
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  });
});
