/**
 * bench:blk's pure parts: its options, the anchors' output parsers, and the
 * latency percentile; plus one tiny real cell against qemu-storage-daemon.
 */
import { expect } from 'chai';
import { parseFioJson, parseQemuImgBench } from '../../scripts/bench/blk-anchors.js';
import { parseBlkBenchArgs } from '../../scripts/bench/blk-options.js';
import { histogramPercentile, runOurs, runRawRings } from '../../scripts/bench/blk-ours.js';
import { startQemuStorageDaemon } from '../../lib/launch/qemu-storage-daemon.js';
import { findExecutable } from '../../lib/launch/backend-process.js';

describe('bench:blk', () => {
  it('parses its options, with the issue-9 cells as defaults', () => {
    const o = parseBlkBenchArgs([])!;
    expect(o).to.deep.include({ rws: ['randread', 'randwrite'], qds: [1, 32], queues: [1, 2], backends: ['qsd-null', 'qsd-file'], anchors: true, driver: 'virtio-blk', completion: 'wait', coalesce: 0, json: false });
    expect(parseBlkBenchArgs(['--completion', 'busy-poll', '--coalesce', '8'])).to.deep.include({ completion: 'busy-poll', coalesce: 8 });
    expect(() => parseBlkBenchArgs(['--completion', 'spin'])).to.throw(/--completion/);
    expect(parseBlkBenchArgs(['--qd', '4', '--backends', 'qsd-null', '--no-anchors', '--json'])).to.deep.include({ qds: [4], backends: ['qsd-null'], anchors: false, json: true });
    expect(() => parseBlkBenchArgs(['--rw', 'seqread'])).to.throw(/--rw takes randread/);
    expect(() => parseBlkBenchArgs(['--qd', '0'])).to.throw(/--qd: '0'/);
    expect(parseBlkBenchArgs(['--help'])).to.equal(undefined);
  });

  it("reads qemu-img bench's run time and fio's JSON (after any notice lines)", () => {
    expect(parseQemuImgBench('Sending 2000 read requests, 4096 bytes each, 32 in parallel (starting at offset 0, step size 4096)\nRun completed in 0.224 seconds.\n')).to.equal(0.224);
    expect(() => parseQemuImgBench('qemu-img: Could not open')).to.throw(/no 'Run completed in' line/);
    const fio = 'note: both iodepth >= 1 and synchronous I/O engine are selected\n' + JSON.stringify({
      jobs: [{ read: { iops: 1234.5, lat_ns: { mean: 25000 }, clat_ns: { percentile: { '99.000000': 80000 } } }, write: { iops: 0, lat_ns: { mean: 0 } } }],
    });
    expect(parseFioJson(fio, 'randread')).to.deep.equal({ iops: 1234.5, latUs: 25, p99Us: 80 });
  });

  it('takes the p99 from the latency histogram (0.1 µs buckets)', () => {
    const h = new Uint32Array(1000);
    h[10] = 98; // 1.0-1.1 µs
    h[500] = 2; // 50.0-50.1 µs
    expect(histogramPercentile(h, 100, 0.5)).to.be.closeTo(1.1, 1e-9);
    expect(histogramPercentile(h, 100, 0.99)).to.be.closeTo(50.1, 1e-9);
  });

  const runOursBusy = (c: Parameters<typeof runOurs>[0]) => runOurs({ ...c, completion: 'busy-poll' });
  for (const [name, run] of [['VirtioBlk (BlkBatch.wait)', runOurs], ['VirtioBlk (busy-poll)', runOursBusy], ['raw rings', runRawRings]] as const) {
    it(`measures a real cell with ${name}: qemu-storage-daemon null-co, 2 queues, randwrite qd 4 @integration`, async function () {
      if (!findExecutable('qemu-storage-daemon')) this.skip();
      this.timeout(30_000);
      const qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 16 << 20, numQueues: 2 });
      try {
        const r = await run({ rw: 'randwrite', qd: 4, queues: 2, socket: qsd.socketPath, backendPid: qsd.pid, durationMs: 300, warmupMs: 50 });
        expect(r.ios).to.be.greaterThan(100);
        expect(r.iops).to.be.greaterThan(0);
        expect(r.p99Us).to.be.at.least(r.latUs / 100);
        expect(r.backendCpuUsPerIo).to.be.greaterThan(0, 'qemu-storage-daemon used CPU for the I/O');
      } finally {
        await qsd.stop();
      }
    });
  }
});
