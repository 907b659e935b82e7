/**
 * BlkBatch.wait against qemu-storage-daemon (null-co): sleeping on the call
 * eventfds with EVENT_IDX interrupt coalescing, the loop bench:blk runs. The
 * batch path (submit, kick, poll, wait) allocates nothing per request: a child
 * process runs it under --trace-gc and must show no scavenge while measuring.
 */
import { spawnSync } from 'node:child_process';
import { expect } from 'chai';
import { BlkBatch, BlkBatchResults } from '../../lib/devices/blk/blk-batch.js';
import { VIRTIO_BLK_T_IN } from '../../lib/devices/blk/blk-request.js';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import { isVhostUserError } from '../../lib/errors.js';
import { startQemuStorageDaemon, type QemuStorageDaemonBackend } from '../../lib/launch/qemu-storage-daemon.js';
import { stopAll } from '../../lib/launch/backend-process.js';
import { skipWithout } from '../helpers/backends.js';

const lib = (p: string) => JSON.stringify(new URL(`../../lib/${p}`, import.meta.url).href);

describe('BlkBatch.wait (qemu-storage-daemon null-co) @integration', function () {
  this.timeout(60_000);
  let qsd: QemuStorageDaemonBackend | null = null;
  before(function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
  });
  afterEach(async () => {
    await qsd?.stop();
    qsd = null;
  });
  after(() => stopAll());

  it('sleeps until the device has completed a batch: far fewer calls than requests, every request back once and OK', async () => {
    qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 16 << 20, numQueues: 2 });
    const blk = await VirtioBlk.open(qsd.socketPath, { queues: 2, mode: 'poll' });
    try {
      const qd = 16;
      const batches = [blk.createBatch(0, qd, 4096), blk.createBatch(1, qd, 4096)];
      const results = new BlkBatchResults(qd);
      const seen = new Uint32Array(2 * qd);
      // Nothing outstanding: no sleep, whatever the timeout.
      const t0 = performance.now();
      expect(BlkBatch.wait(batches, 8, 5000)).to.equal(false);
      expect(performance.now() - t0).to.be.below(1000);
      for (const b of batches) {
        for (let i = 0; i < qd; i++) expect(b.submit(i, VIRTIO_BLK_T_IN, i * 4096)).to.equal(true);
        b.kick();
      }
      let done = 0;
      let calls = 0;
      const total = 20_000;
      let submitted = 2 * qd;
      while (done < total) {
        let got = 0;
        for (let q = 0; q < 2; q++) {
          const n = batches[q]!.poll(results);
          got += n;
          for (let k = 0; k < n; k++) {
            expect(results.status[k]).to.equal(0);
            seen[q * qd + results.index[k]!]!++;
            done++;
            if (submitted < total) {
              batches[q]!.submit(results.index[k]!, VIRTIO_BLK_T_IN, (submitted % 4096) * 4096);
              submitted++;
            }
          }
          batches[q]!.kick();
        }
        if (got === 0 && BlkBatch.wait(batches, qd / 2, 5000)) calls++;
      }
      expect(done).to.equal(total);
      expect(seen.reduce((a, b) => a + b, 0)).to.equal(total);
      for (const b of batches) for (let i = 0; i < qd; i++) expect(b.isBusy(i)).to.equal(false);
      expect(calls).to.be.greaterThan(0, 'the loop slept on the call eventfds');
      // Coalesced: a call per several completions, not per completion.
      expect(calls).to.be.below(total / 4);
      expect(blk.totals().completed).to.equal(total);
      for (const b of batches) b.close();
    } finally {
      blk.close();
    }
  });

  it("refuses queues in 'interrupt' mode (the event loop's watcher owns their call eventfd)", async () => {
    qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 16 << 20 });
    const blk = await VirtioBlk.open(qsd.socketPath, { mode: 'interrupt' });
    try {
      const b = blk.createBatch(0, 4, 4096);
      try {
        BlkBatch.wait([b], 1, 10);
        expect.fail('wait accepted an interrupt-mode queue');
      } catch (e) {
        expect(isVhostUserError(e) && e.code).to.equal('VHOST_INVALID_STATE');
      }
      b.close();
    } finally {
      blk.close();
    }
  });

  it('allocates nothing per request: 200 000 reads with submit/kick/poll/wait and no scavenge', async () => {
    qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 64 << 20, numQueues: 2 });
    const script = `
      const { VirtioBlk } = await import(${lib('devices/blk/virtio-blk.js')});
      const { BlkBatch, BlkBatchResults } = await import(${lib('devices/blk/blk-batch.js')});
      const blk = await VirtioBlk.open(${JSON.stringify(qsd.socketPath)}, { queues: 2, mode: 'poll' });
      const qd = 32;
      const batches = [blk.createBatch(0, qd, 4096), blk.createBatch(1, qd, 4096)];
      const results = new BlkBatchResults(qd);
      let rng = 12345, done = 0, bad = 0;
      for (const b of batches) { for (let i = 0; i < qd; i++) b.submit(i, 0, i * 4096); b.kick(); }
      function run(n) {
        const stop = done + n;
        while (done < stop) {
          let got = 0;
          for (let q = 0; q < 2; q++) {
            const b = batches[q];
            const k = b.poll(results);
            got += k;
            for (let j = 0; j < k; j++) {
              if (results.status[j] !== 0) bad++;
              rng = (rng * 1103515245 + 12345) & 0x7fffffff;
              b.submit(results.index[j], (rng & 1), (rng % 16384) * 4096);
            }
            done += k;
            b.kick();
          }
          if (got === 0) BlkBatch.wait(batches, 16, 1000);
        }
      }
      run(100000); // warm up: let the JIT optimize
      console.log('MEASURE');
      run(200000);
      console.log('DONE ' + bad);
      for (const b of batches) while ([...Array(qd).keys()].some((i) => b.isBusy(i))) { b.poll(results); BlkBatch.wait([b], 1, 100); }
      for (const b of batches) b.close();
      blk.close();
    `;
    // A fixed 1 MiB semi-space: one heap number (16 B) per request would be 3.2 MB over the
    // 200,000 measured requests, at least 3 scavenges, however V8 would otherwise size it.
    const r = spawnSync(process.execPath, ['--trace-gc', '--min-semi-space-size=1', '--max-semi-space-size=1', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 50_000,
    });
    expect(r.status, r.stderr).to.equal(0);
    const measured = r.stdout.split('MEASURE')[1]!.split('DONE')[0]!;
    expect(r.stdout).to.match(/DONE 0\n/, 'every request completed with VIRTIO_BLK_S_OK');
    const scavenges = measured.split('\n').filter((l) => /Scavenge|Mark-Compact/.test(l));
    // At most one: what the loop does per wait (a poll(2) call through koffi, a clock read every
    // 64th idle poll) may add up to one scavenge on a machine where the device is slow to answer;
    // anything allocated per request shows as several.
    expect(scavenges.length, scavenges.join('\n')).to.be.at.most(1);
  });
});
