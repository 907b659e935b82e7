/**
 * Issue #9 item 3 end to end: VirtioBlk with the inflight area (opt-in) against
 * the reference blk back-end as a process on an image file. The back-end holds
 * 128 writes (--latency-ms), is killed with SIGKILL, and is started again on the
 * same socket and image; the driver hands the area over with SET_INFLIGHT_FD, the
 * new back-end resubmits from it, and every write completes exactly once with its
 * data in the file (read outside the library). Split and packed rings: the
 * back-end tracks each in its own layout of the area (QueueRegionSplit/Packed).
 */
import { closeSync, openSync, readSync, rmSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import { makeTempDir, startReferenceBackend, stopAll } from '../../lib/launch/index.js';

const MiB = 1 << 20;

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed * 29 + i * 11 + 3) & 0xff);
}

describe('VirtioBlk with the inflight area: reference back-end killed with 128 writes in flight @integration', function () {
  this.timeout(60_000);

  for (const ring of ['split', 'packed'] as const) {
    it(`${ring} ring: the restarted back-end resubmits from the area: each write completes once, the driver resubmits nothing`, async () => {
      const dir = await makeTempDir('vhost-blk-inflight-');
      const socketPath = path.join(dir, 'blk.sock');
      const image = path.join(dir, 'disk.raw');
      closeSync(openSync(image, 'w'));
      truncateSync(image, 8 * MiB);
      let blk: VirtioBlk | null = null;
      try {
        const first = await startReferenceBackend({ device: 'blk', image, socketPath, latencyMs: 60_000 });
        blk = await VirtioBlk.open(socketPath, { ring, inflight: true, queueSize: 256, reconnect: { timeoutMs: 15_000 }, timeoutMs: 30_000 });
        expect(blk.inflightShared).to.equal(true);
        expect(blk.ring).to.equal(ring);
        const reconnected = new Promise<{ resubmitted: number; failed: number; inflight?: boolean }>((r) => blk!.once('reconnect', r));
        const ops = Array.from({ length: 128 }, (_, i) => blk!.write(i * 4096, pattern(4096, i)).then(() => 'ok', (e: { code: string }) => e.code));
        await new Promise((r) => setTimeout(r, 300));
        expect(blk.queue(0).inFlight).to.equal(128);
        await first.kill9();
        rmSync(socketPath, { force: true });
        await startReferenceBackend({ device: 'blk', image, socketPath });
        const report = await reconnected;
        expect(await Promise.all(ops)).to.deep.equal(new Array(128).fill('ok'));
        expect(report.inflight, 'the new back-end got the area').to.equal(true);
        expect(report.resubmitted, 'the driver left the resubmission to the back-end').to.equal(0);
        expect(report.failed).to.equal(0);
        expect(blk.totals().completed, 'no write completed twice').to.equal(128);
        const fd = openSync(image, 'r');
        try {
          const page = new Uint8Array(4096);
          for (let i = 0; i < 128; i++) {
            readSync(fd, page, 0, 4096, i * 4096);
            expect(page, `block ${i}`).to.deep.equal(pattern(4096, i));
          }
        } finally {
          closeSync(fd);
        }
      } finally {
        blk?.close();
        await stopAll();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
