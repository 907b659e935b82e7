/**
 * VirtioNet with checksum and segmentation offloads against the reference
 * back-end, which implements them strictly (both ring layouts): NEEDS_CSUM
 * frames come back with their checksum completed by the device or, with
 * GUEST_CSUM, still partial and flagged, for RxBurst.completeChecksum(); a 64 KiB
 * TSO frame comes back as segments, or whole across mergeable RX buffers with
 * GUEST_TSO. Every frame that comes back is checked against the frame built with
 * a full checksum, byte for byte.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { TxOffloads } from '../../lib/devices/net/tx-offloads.js';
import { RxBurst, VirtioNet, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../../lib/devices/net/virtio-net-hdr.js';
import { VhostUserError } from '../../lib/errors.js';
import { checksumsValid, FrameLayout } from '../../lib/net/checksum.js';
import { buildL4Frame, maxL4Payload } from '../../lib/net/l4-frame.js';
import { bit, VirtioNetFeature as F } from '../../lib/protocol/constants.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

interface Got {
  frame: Uint8Array;
  flags: number;
  gsoType: number;
  gsoSize: number;
}

async function receive(net: VirtioNet, want: number, complete = false): Promise<Got[]> {
  const burst = new RxBurst(64);
  const got: Got[] = [];
  for (const deadline = Date.now() + 5000; got.length < want && Date.now() < deadline; await settle(1)) {
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) {
      const flags = burst.flags[i]!;
      if (complete) expect(burst.completeChecksum(i)).to.equal(true);
      got.push({ frame: burst.frame(i), flags, gsoType: burst.gsoTypes[i]!, gsoSize: burst.gsoSizes[i]! });
    }
  }
  return got;
}

const layout = new FrameLayout();
const valid = (f: Uint8Array) => layout.parse(f) && checksumsValid(f, layout);
const KINDS = [
  { ipVersion: 4, protocol: 'udp' },
  { ipVersion: 6, protocol: 'udp' },
  { ipVersion: 4, protocol: 'tcp' },
  { ipVersion: 6, protocol: 'tcp' },
] as const;

describe('VirtioNet offloads against the reference back-end', function () {
  this.timeout(20_000);
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

  it('negotiates no offload unless asked, and refuses an offload entry it did not negotiate', async () => {
    net = await VirtioNet.open(tmp.path);
    const offloadBits = [F.VIRTIO_NET_F_CSUM, F.VIRTIO_NET_F_GUEST_CSUM, F.VIRTIO_NET_F_HOST_TSO4, F.VIRTIO_NET_F_HOST_TSO6, F.VIRTIO_NET_F_HOST_USO, F.VIRTIO_NET_F_GUEST_TSO4, F.VIRTIO_NET_F_GUEST_TSO6];
    for (const b of offloadBits) expect(net.features & bit(b), `bit ${b}`).to.equal(0n);
    const off = new TxOffloads(1);
    const frame = buildL4Frame({ payloadLength: 100, checksum: 'partial' });
    expect(off.prepare(0, frame)).to.equal(true);
    expect(() => net!.sendBurst([frame], 1, 0, off)).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_ARGUMENT');
    expect(net.counters().txPackets).to.equal(0);
  });

  for (const ring of ['split', 'packed'] as RingKind[]) {
    it(`${ring}: csum (CSUM + GUEST_CSUM): partial checksums come back flagged NEEDS_CSUM and complete to the full frame`, async () => {
      net = await VirtioNet.open(tmp.path, { ring, csum: true });
      expect(net.features & (bit(F.VIRTIO_NET_F_CSUM) | bit(F.VIRTIO_NET_F_GUEST_CSUM))).to.equal(bit(F.VIRTIO_NET_F_CSUM) | bit(F.VIRTIO_NET_F_GUEST_CSUM));
      expect(net.features & bit(F.VIRTIO_NET_F_HOST_TSO4)).to.equal(0n);
      const off = new TxOffloads(KINDS.length);
      const full = KINDS.map((k, i) => buildL4Frame({ ...k, payloadLength: 200 + i, seq: i }));
      const partial = KINDS.map((k, i) => buildL4Frame({ ...k, payloadLength: 200 + i, seq: i, checksum: 'partial' }));
      const sent = partial.map((f) => f.slice());
      sent.forEach((f, i) => expect(off.prepare(i, f)).to.equal(true));
      expect(Buffer.compare(sent[0]!, partial[0]!)).to.equal(0, 'prepare() stores the pseudo-header sum');
      expect(net.sendBurst(sent, sent.length, 0, off)).to.equal(sent.length);
      const got = await receive(net, sent.length, true);
      expect(got.map((g) => g.flags)).to.deep.equal(KINDS.map(() => VIRTIO_NET_HDR_F_NEEDS_CSUM));
      got.forEach((g, i) => expect(Buffer.compare(g.frame, full[i]!), `frame ${i}`).to.equal(0));
      expect(backend.net.checksummed).to.equal(0);
    });

    it(`${ring}: tso without GUEST_CSUM: the device completes checksums and cuts a 64 KiB TCP frame (IPv4 and IPv6) into valid segments`, async () => {
      net = await VirtioNet.open(tmp.path, { ring, tso: true });
      expect(net.features & bit(F.VIRTIO_NET_F_GUEST_CSUM)).to.equal(0n);
      expect(net.features & bit(F.VIRTIO_NET_F_HOST_TSO4)).to.not.equal(0n);
      expect(net.maxFrameSize).to.be.at.least(65535 + 14 + 40);
      const off = new TxOffloads(4);
      const mss = 1448;
      const frames = [
        buildL4Frame({ protocol: 'tcp', payloadLength: 64, seq: 1, checksum: 'partial' }),
        buildL4Frame({ protocol: 'tcp', payloadLength: maxL4Payload(4, 'tcp'), seq: 2, tcpSeq: 1000 }),
        buildL4Frame({ ipVersion: 6, protocol: 'tcp', payloadLength: 65000, seq: 3, tcpSeq: 5 }),
      ];
      expect(off.prepare(0, frames[0]!)).to.equal(true);
      expect(off.prepare(1, frames[1]!, frames[1]!.length, mss)).to.equal(true);
      expect(off.prepare(2, frames[2]!, frames[2]!.length, mss)).to.equal(true);
      expect(off.gsoTypes[1]).to.equal(VIRTIO_NET_HDR_GSO_TCPV4);
      expect(off.gsoTypes[2]).to.equal(VIRTIO_NET_HDR_GSO_TCPV6);
      const want = 1 + Math.ceil(maxL4Payload(4, 'tcp') / mss) + Math.ceil(65000 / mss);
      // 92 segments: more than a burst; receive while the loopback waits for RX buffers.
      expect(net.sendBurst(frames, 3, 0, off)).to.equal(3);
      const got = await receive(net, want);
      expect(got).to.have.length(want);
      for (const g of got) {
        expect(g.flags).to.equal(0);
        expect(valid(g.frame), 'every segment has valid checksums').to.equal(true);
      }
      // The segments' payloads, in order, are the GSO frames' payloads.
      const v4 = got.slice(1, 1 + Math.ceil(maxL4Payload(4, 'tcp') / mss));
      const payload = Buffer.concat(v4.map((g) => g.frame.subarray(54)));
      expect(Buffer.compare(payload, frames[1]!.subarray(54))).to.equal(0);
      expect(v4.every((g) => g.frame.length <= 54 + mss)).to.equal(true);
      expect(backend.net).to.deep.include({ segmented: 2, checksummed: 1, offloadDrops: 0 });
    });

    it(`${ring}: tso + guestTso with MRG_RXBUF: a 64 KiB frame arrives whole across RX buffers with its GSO fields`, async () => {
      net = await VirtioNet.open(tmp.path, { ring, tso: true, guestTso: true });
      expect(net.features & bit(F.VIRTIO_NET_F_GUEST_TSO4)).to.not.equal(0n);
      const off = new TxOffloads(3);
      const full = [1, 2, 3].map((s) => buildL4Frame({ protocol: 'tcp', payloadLength: maxL4Payload(4, 'tcp'), seq: s, tcpSeq: s * 100000 }));
      const sent = full.map((f) => f.slice());
      sent.forEach((f, i) => off.prepare(i, f, f.length, 1448));
      expect(net.sendBurst(sent, 3, 0, off)).to.equal(3);
      const got = await receive(net, 3, true);
      expect(got).to.have.length(3);
      got.forEach((g, i) => {
        expect(g.flags).to.equal(VIRTIO_NET_HDR_F_NEEDS_CSUM);
        expect(g.gsoType).to.equal(VIRTIO_NET_HDR_GSO_TCPV4);
        expect(g.gsoSize).to.equal(1448);
        expect(Buffer.compare(g.frame, full[i]!), `frame ${i}`).to.equal(0);
      });
      expect(backend.net.segmented).to.equal(0);
      expect(net.counters()).to.deep.include({ rxErrors: 0, rxDrops: 0 });
    });
  }

  it('uso (HOST_USO): a UDP GSO frame over IPv6 comes back as valid datagrams of gso_size', async () => {
    net = await VirtioNet.open(tmp.path, { uso: true });
    expect(net.offloads).to.include({ csum: true, uso: true, tso4: false, guestCsum: false });
    const off = new TxOffloads(1);
    const f = buildL4Frame({ ipVersion: 6, protocol: 'udp', payloadLength: 20000, seq: 77, checksum: 'partial' });
    expect(off.prepare(0, f, f.length, 1200)).to.equal(true);
    expect(net.sendBurst([f], 1, 0, off)).to.equal(1);
    const got = await receive(net, Math.ceil(20000 / 1200));
    expect(got).to.have.length(Math.ceil(20000 / 1200));
    expect(got.every((g) => valid(g.frame) && g.frame.length <= 62 + 1200)).to.equal(true);
    expect(Buffer.compare(Buffer.concat(got.map((g) => g.frame.subarray(62))), f.subarray(62))).to.equal(0);
  });

  it('completeChecksum: DATA_VALID after completion; a frame without NEEDS_CSUM is left alone', async () => {
    net = await VirtioNet.open(tmp.path, { csum: true });
    const off = new TxOffloads(2);
    const a = buildL4Frame({ payloadLength: 80, checksum: 'partial' });
    const b = buildL4Frame({ payloadLength: 80, seq: 9 });
    off.prepare(0, a);
    off.clear(1);
    net.sendBurst([a, b], 2, 0, off);
    const burst = new RxBurst(4);
    for (const deadline = Date.now() + 3000; burst.count < 2 && Date.now() < deadline; await settle(1)) net.receiveBurst(0, burst);
    expect(burst.count).to.equal(2);
    expect([burst.flags[0], burst.flags[1]]).to.deep.equal([VIRTIO_NET_HDR_F_NEEDS_CSUM, 0]);
    expect(burst.completeChecksum(0)).to.equal(true);
    expect(burst.completeChecksum(1)).to.equal(true);
    expect([burst.flags[0], burst.flags[1]]).to.deep.equal([VIRTIO_NET_HDR_F_DATA_VALID, 0]);
    expect(valid(burst.frame(0)) && valid(burst.frame(1))).to.equal(true);
  });
});
