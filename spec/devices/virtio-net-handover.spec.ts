/**
 * VirtioNet.handOver: the rings move from one running back-end to another in the
 * middle of traffic, as in a live migration. The old back-end reports its exact
 * position (GET_VRING_BASE), so, unlike a crash, no frame is lost or delivered
 * twice; the new back-end announces the guest with a RARP frame.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VirtioNet, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { SequencedTraffic } from '../helpers/traffic.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

describe('VirtioNet.handOver: rings move to a second back-end mid-traffic', function () {
  this.timeout(60_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  let net: VirtioNet | null = null;
  const cleanups: (() => unknown)[] = [];
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    net?.close();
    net = null;
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  for (const ring of ['split', 'packed'] as RingKind[]) {
    it(`reference A -> reference B, ${ring}: every frame exactly once, RARP from B`, async () => {
      const [ta, tb] = [tempSocketPath('a.sock'), tempSocketPath('b.sock')];
      const a = ReferenceBackend.listen(ta.path, { device: 'net' });
      const b = ReferenceBackend.listen(tb.path, { device: 'net' });
      cleanups.push(() => ta.cleanup(), () => tb.cleanup(), () => a.close(), () => b.close());
      net = await VirtioNet.open(ta.path, { ring });
      const t = new SequencedTraffic(net);
      const TOTAL = 6000;
      await t.run(TOTAL, 300, () => t.seen.size >= 2000, 10_000);
      for (let i = 0; i < 8; i++) t.step(TOTAL, 300); // frames in flight during the hand-over
      const inFlight = t.sent - t.seen.size;
      const report = await net.handOver(tb.path);
      await t.run(TOTAL, 300, () => t.seen.size === TOTAL && t.rarp.length > 0, 10_000);
      process.stdout.write(`      ${ring}: ${inFlight} frames in flight at the hand-over; bases ${JSON.stringify(report.queues[0])}; ${report.ms} ms; A looped ${a.net.frames}, B ${b.net.frames}\n`);
      expect(t.sent).to.equal(TOTAL);
      expect([t.seen.size, t.duplicates, t.corrupt]).to.deep.equal([TOTAL, 0, 0]);
      expect(a.net.frames + b.net.frames).to.equal(TOTAL);
      expect(b.net.frames).to.be.above(0);
      expect(report.rarp).to.equal(true);
      expect(t.rarp).to.have.length(1);
      expect(Buffer.from(t.rarp[0]!.subarray(6, 12)).toString('hex')).to.equal('525400123456'); // the MAC from config space
      expect(a.isServing, 'A was let go').to.equal(false);
    });
  }

  describe('@integration dpdk-testpmd', () => {
    before(function () {
      skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    });
    it('testpmd A -> testpmd B (io forwarding): traffic continues, no frame twice, DPDK announces the MAC with RARP', async () => {
      const a: TestpmdBackend = await startTestpmd({ forwardMode: 'io' });
      cleanups.push(() => a.stop());
      const b: TestpmdBackend = await startTestpmd({ forwardMode: 'io' });
      cleanups.push(() => b.stop());
      net = await VirtioNet.open(a.socketPath, { timeoutMs: 5000 });
      const t = new SequencedTraffic(net);
      await t.run(1_000_000, 64, () => t.seen.size >= 500, 20_000);
      const before = t.seen.size;
      const mac = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);
      const report = await net.handOver(b.socketPath, { mac });
      await t.run(1_000_000, 64, () => t.seen.size >= before + 500 && t.rarp.length > 0, 20_000);
      process.stdout.write(`      testpmd: ${t.seen.size} distinct frames back (${t.duplicates} duplicates), hand-over ${report.ms} ms, RARP frames ${t.rarp.length}\n`);
      expect(t.seen.size).to.be.at.least(before + 500);
      expect(t.duplicates).to.equal(0);
      expect(t.corrupt).to.equal(0);
      expect(report.rarp).to.equal(true);
      expect(t.rarp.length, 'DPDK broadcasts the RARP on the new back-end').to.be.at.least(1);
      expect(Buffer.from(t.rarp[0]!.subarray(6, 12)).toString('hex')).to.equal('525400aabbcc');
    });
  });
});
