/**
 * The virtio-net driver against DPDK's vhost PMD in `io` forwarding: testpmd
 * sends every frame it receives from a queue back out of the same queue, so
 * what the driver transmits must come back, byte for byte, on its RX ring.
 */
import { expect } from 'chai';
import { RxBurst, VirtioNet, type RingKind, type VirtioNetOptions } from '../../lib/devices/net/virtio-net.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { hasBit, VirtioFeature } from '../../lib/protocol/constants.js';
import { skipWithout } from '../helpers/backends.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';

/** Deterministic frames: Ethernet header, queue and sequence number, then seeded bytes. */
function makeFrames(queue: number, count: number, seed: number): Uint8Array[] {
  let x = seed >>> 0 || 1;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), x >>> 0);
  const frames: Uint8Array[] = [];
  for (let seq = 0; seq < count; seq++) {
    const f = new Uint8Array(60 + (next() % (1514 - 60 + 1)));
    for (let i = 0; i < f.length; i++) f[i] = next() & 0xff;
    f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5], 0);
    const v = new DataView(f.buffer);
    v.setUint16(14, queue);
    v.setUint32(16, seq);
    frames.push(f);
  }
  return frames;
}

/**
 * Sends every queue's frames with at most `window` in flight per queue (so the
 * back-end never meets a full RX ring and drops), and collects what comes back.
 */
async function loopback(net: VirtioNet, perQueue: Uint8Array[][], window: number, deadlineMs: number): Promise<Uint8Array[][]> {
  const got = perQueue.map(() => [] as Uint8Array[]);
  const sent = perQueue.map(() => 0);
  const burst = new RxBurst(64);
  const deadline = Date.now() + deadlineMs;
  let spins = 0;
  while (got.some((g, q) => g.length < perQueue[q]!.length)) {
    if (Date.now() > deadline) break;
    for (let q = 0; q < perQueue.length; q++) {
      const frames = perQueue[q]!;
      const room = window - (sent[q]! - got[q]!.length);
      if (room > 0 && sent[q]! < frames.length) {
        sent[q]! += net.sendBurst(frames.slice(sent[q], sent[q]! + Math.min(room, 32)), undefined, q);
      }
      const n = net.receiveBurst(q, burst);
      for (let i = 0; i < n; i++) got[q]!.push(burst.frame(i));
    }
    if (++spins % 64 === 0) await new Promise((r) => setImmediate(r));
  }
  return got;
}

describe('virtio-net driver through dpdk-testpmd (io forwarding) @integration', function () {
  this.timeout(60_000);
  // testpmd once forwarded nothing on a queue when the driver finished its setup
  // before testpmd had started forwarding (its socket appears earlier); startTestpmd
  // now waits for that. One retry stays as a safety net for such start-up races: the
  // reporter prints every retry with testpmd's output, and a real failure fails twice.
  this.retries(1);
  let backend: TestpmdBackend | null = null;
  let net: VirtioNet | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;

  before(function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
  });
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    net?.close();
    net = null;
    await backend?.stop();
    backend = null;
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  // DPDK's vhost offers VIRTIO_F_IN_ORDER; the driver takes it with split rings unless told not to.
  const cases: { ring: RingKind; eventIdx: boolean; inOrder?: boolean }[] = [
    { ring: 'split', eventIdx: true },
    { ring: 'split', eventIdx: false },
    { ring: 'split', eventIdx: true, inOrder: false },
    { ring: 'packed', eventIdx: true },
    { ring: 'packed', eventIdx: false },
  ];
  for (const { ring, eventIdx, inOrder } of cases) {
    const inOrderOn = ring === 'split' && inOrder !== false;
    it(`10,000 frames of 60-1514 bytes on 2 queue pairs come back intact (${ring} ring, event index ${eventIdx ? 'on' : 'off'}, in order ${inOrderOn ? 'on' : 'off'})`, async function () {
      backend = await startTestpmd({ queues: 2, forwardMode: 'io', extraArgs: ['--rxq=2', '--txq=2'] });
      const options: VirtioNetOptions = { queuePairs: 2, queueSize: 256, ring, eventIdx, ...(inOrder !== undefined ? { inOrder } : {}) };
      net = await VirtioNet.open(backend.socketPath, options);
      expect(net.queuePairs).to.equal(2);
      expect(hasBit(net.features, VirtioFeature.VIRTIO_F_IN_ORDER), 'VIRTIO_F_IN_ORDER negotiated').to.equal(inOrderOn);
      const perQueue = [makeFrames(0, 5000, 1 + (ring === 'packed' ? 10 : 0) + (eventIdx ? 1 : 0)), makeFrames(1, 5000, 99)];
      const got = await loopback(net, perQueue, 128, 30_000);
      for (let q = 0; q < 2; q++) {
        if (got[q]!.length !== 5000) {
          const txOutstanding: number = net.queues(q).tx.outstanding;
          expect.fail(`queue ${q}: ${got[q]!.length} of 5000 frames back; TX outstanding ${txOutstanding}; counters ${JSON.stringify(net.counters(q))}\ntestpmd:\n${backend.output().split('\n').slice(-25).join('\n')}`);
        }
        for (let i = 0; i < 5000; i++) {
          if (Buffer.compare(Buffer.from(got[q]![i]!), Buffer.from(perQueue[q]![i]!)) !== 0) {
            expect.fail(`queue ${q}: frame ${i} differs (${got[q]![i]!.length} bytes back, ${perQueue[q]![i]!.length} sent)`);
          }
        }
        const c = net.counters(q);
        expect(c.txPackets).to.equal(5000);
        expect(c.rxPackets).to.equal(5000);
        expect(c.rxBytes).to.equal(c.txBytes);
        expect(c.rxErrors + c.rxDrops + c.txDrops).to.equal(0);
      }
    });
  }

  for (const eventIdx of [true, false]) {
    it(`interrupt mode: frames arrive as events woken by the back-end's calls (event index ${eventIdx ? 'on' : 'off'})`, async () => {
      backend = await startTestpmd({ queues: 1, forwardMode: 'io' });
      net = await VirtioNet.open(backend.socketPath, { queueSize: 256, eventIdx });
      const frames = makeFrames(0, 1000, 7);
      const got: Uint8Array[] = [];
      const done = new Promise<void>((resolve) =>
        net!.on('frames', (_q, burst) => {
          for (let i = 0; i < burst.count; i++) got.push(burst.frame(i));
          if (got.length >= frames.length) resolve();
        }),
      );
      net.startInterrupts();
      // At most 128 in flight, so DPDK never meets a full RX ring (io mode drops then).
      for (let sent = 0; sent < frames.length; ) {
        const room = 128 - (sent - got.length);
        if (room > 0) sent += net.sendBurst(frames.slice(sent, sent + Math.min(room, 64)));
        await new Promise((r) => setTimeout(r, 1)); // no polling: only calls deliver frames
      }
      await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${got.length} frames by deadline`)), 10_000))]);
      net.stopInterrupts();
      expect(got.length).to.equal(1000);
      got.forEach((f, i) => expect(Buffer.compare(Buffer.from(f), Buffer.from(frames[i]!)), `frame ${i}`).to.equal(0));
      const c = net.counters(0);
      expect(c.interrupts).to.be.greaterThan(0);
      expect(c.interrupts).to.be.at.most(1000);
    });
  }
});
