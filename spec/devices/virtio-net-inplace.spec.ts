/**
 * VirtioNet.sendInPlace: frames written straight into the TX slots in guest
 * memory, looped back by the reference back-end and checked byte for byte.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { RxBurst, VirtioNet, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { VhostUserError } from '../../lib/errors.js';
import { framePayloadIntact, frameSequence, UdpFrameTemplate } from '../../lib/net/frame-builder.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

async function receive(net: VirtioNet, want: number): Promise<Uint8Array[]> {
  const burst = new RxBurst(64);
  const got: Uint8Array[] = [];
  for (const deadline = Date.now() + 3000; got.length < want && Date.now() < deadline; await settle(1)) {
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) got.push(burst.frame(i));
  }
  return got;
}

describe('VirtioNet.sendInPlace (zero-copy TX)', () => {
  let tmp: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend;
  let net: VirtioNet | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;
  beforeEach(() => {
    snap = resourceSnapshot();
    tmp = tempSocketPath();
    backend = ReferenceBackend.listen(tmp.path, { device: 'net' });
  });
  afterEach(async () => {
    net?.close();
    net = null;
    backend.close();
    tmp.cleanup();
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  for (const ring of ['split', 'packed'] as RingKind[]) {
    it(`${ring}: frames written into the slots come back intact, in order`, async () => {
      net = await VirtioNet.open(tmp.path, { ring, queueSize: 128 });
      const t = new UdpFrameTemplate(300);
      let seq = 0;
      const frames: Uint8Array[] = [];
      for (let round = 0; round < 10; round++) {
        const sent = net.sendInPlace(100, (frame) => t.write(seq++, frame).length);
        expect(sent).to.equal(100);
        frames.push(...(await receive(net, 100)));
      }
      expect(frames).to.have.length(1000);
      frames.forEach((f, i) => {
        expect(f.length).to.equal(300);
        expect(frameSequence(f)).to.equal(i);
        expect(framePayloadIntact(f)).to.equal(true);
      });
      expect(net.counters(0)).to.deep.include({ txPackets: 1000, txBytes: 300_000, rxPackets: 1000 });
    });
  }

  it('a slot keeps its bytes: rewriting only the header resends the old payload with the new header', async () => {
    net = await VirtioNet.open(tmp.path, { queueSize: 64 });
    const t = new UdpFrameTemplate(200);
    // Every slot once with a whole frame (64 slots, one ring's worth)...
    expect(net.sendInPlace(64, (frame, i) => t.write(i, frame).length)).to.equal(64);
    expect(await receive(net, 64)).to.have.length(64);
    // ...then only the destination MAC changes.
    expect(net.sendInPlace(64, (frame) => (frame.set([0x02, 0xde, 0xad, 0xbe, 0xef, 0x00]), 200))).to.equal(64);
    const again = await receive(net, 64);
    expect(again).to.have.length(64);
    for (const f of again) {
      expect([...f.subarray(0, 6)]).to.deep.equal([0x02, 0xde, 0xad, 0xbe, 0xef, 0x00]);
      expect(framePayloadIntact(f), 'the payload written the first time').to.equal(true);
    }
  });

  it('stops at a full ring: with the back-end not serving TX, 64 of 100 fit a 64-entry ring, then none', async () => {
    const stalled = tempSocketPath();
    const stopped = ReferenceBackend.listen(stalled.path, { device: 'net', faults: [{ name: 'stop-ring', ring: 1 }] });
    const n = await VirtioNet.open(stalled.path, { queueSize: 64 });
    try {
      const t = new UdpFrameTemplate(100);
      let calls = 0;
      expect(n.sendInPlace(100, (frame, i) => (calls++, t.write(i, frame).length))).to.equal(64);
      expect(n.sendInPlace(10, () => (calls++, 100))).to.equal(0);
      expect(calls, 'fill is called only for slots that are sent').to.equal(64);
    } finally {
      n.close();
      stopped.close();
      stalled.cleanup();
    }
  });

  it('rejects a bad length with VHOST_INVALID_ARGUMENT after sending what came before', async () => {
    net = await VirtioNet.open(tmp.path, { queueSize: 64 });
    const t = new UdpFrameTemplate(100);
    expect(() => net!.sendInPlace(10, (frame, i) => (i < 3 ? t.write(i, frame).length : net!.maxFrameSize + 1))).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_ARGUMENT');
    const got = await receive(net, 3);
    expect(got.map((f) => frameSequence(f))).to.deep.equal([0, 1, 2]);
    expect(net.counters(0).txPackets).to.equal(3);
  });
});
