import { expect } from 'chai';
import {
  buildUdpFrame,
  buildUdpFrameOfSize,
  frameSequence,
  framePayloadIntact,
  internetChecksum,
  UdpFrameTemplate,
} from '../../lib/net/frame-builder.js';
import { VhostUserError } from '../../lib/errors.js';

/** Ones'-complement sum of the 20-byte IPv4 header, checksum included: 0xffff when the checksum is right (RFC 1071). */
function ipHeaderSum(frame: Uint8Array): number {
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += (frame[i]! << 8) | frame[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const u16 = (f: Uint8Array, off: number): number => (f[off]! << 8) | f[off + 1]!;

function expectInvalid(fn: () => unknown): void {
  expect(fn).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
}

describe('frame builder', () => {
  it('reproduces a known IPv4 header and checksum (192.168.0.1 → 192.168.0.199, total length 0x73: checksum 0xb861)', () => {
    const f = buildUdpFrame({ srcIp: '192.168.0.1', dstIp: '192.168.0.199', payloadLength: 0x73 - 28 });
    expect(hex(f.subarray(14, 34))).to.equal('45000073000040004011b861c0a80001c0a800c7');
  });

  it('lays out Ethernet, IPv4 and UDP headers with the given addresses, ports and payload', () => {
    const payload = Uint8Array.from({ length: 33 }, (_, i) => i * 7);
    const f = buildUdpFrame({
      srcMac: '52:54:00:12:34:56',
      dstMac: Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
      srcIp: Uint8Array.of(172, 16, 1, 2),
      dstIp: '255.255.255.255',
      srcPort: 68,
      dstPort: 67,
      ipId: 0xbeef,
      payload,
    });
    expect(f.length).to.equal(14 + 20 + 8 + 33);
    expect(hex(f.subarray(0, 14))).to.equal('ffffffffffff' + '525400123456' + '0800');
    expect(f[14]).to.equal(0x45);
    expect(u16(f, 16)).to.equal(20 + 8 + 33);
    expect(u16(f, 18)).to.equal(0xbeef);
    expect(f[23]).to.equal(17);
    expect(hex(f.subarray(26, 34))).to.equal('ac100102' + 'ffffffff');
    expect(ipHeaderSum(f)).to.equal(0xffff);
    expect([u16(f, 34), u16(f, 36), u16(f, 38), u16(f, 40)]).to.deep.equal([68, 67, 8 + 33, 0]);
    expect(f.subarray(42)).to.deep.equal(payload);
  });

  it('fills a payloadLength payload, and defaults to an empty one', () => {
    const f = buildUdpFrame({ payloadLength: 5, fill: 0xab });
    expect(hex(f.subarray(42))).to.equal('ababababab');
    expect(buildUdpFrame().length).to.equal(42);
    expect(ipHeaderSum(buildUdpFrame())).to.equal(0xffff);
  });

  it('internetChecksum handles odd lengths and carries (RFC 1071 example)', () => {
    // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2, checksum 0x220d.
    expect(internetChecksum(Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7))).to.equal(0x220d);
    expect(internetChecksum(Uint8Array.of(0xff))).to.equal(0x00ff);
    expect(internetChecksum(new Uint8Array(0))).to.equal(0xffff);
  });

  it('buildUdpFrameOfSize builds exact sizes 60..9000 with consistent lengths, checksum and sequence', () => {
    for (const [size, seq] of [
      [60, 0],
      [61, 1],
      [64, 0xffffffff],
      [1514, 12345],
      [1515, 0x01020304],
      [9000, 77],
    ] as const) {
      const f = buildUdpFrameOfSize(size, seq);
      expect(f.length).to.equal(size);
      expect(u16(f, 16), 'IPv4 total length').to.equal(size - 14);
      expect(u16(f, 38), 'UDP length').to.equal(size - 34);
      expect(u16(f, 18), 'IPv4 id').to.equal(seq & 0xffff);
      expect(ipHeaderSum(f)).to.equal(0xffff);
      expect(frameSequence(f)).to.equal(seq);
      expect(new DataView(f.buffer).getUint32(42, false)).to.equal(seq);
      for (let i = 46; i < size; i++) {
        if (f[i] !== ((seq + i - 46) & 0xff)) expect.fail(`payload byte ${i} is ${f[i]}, not (seq + ${i - 46}) & 0xff`);
      }
      expect(framePayloadIntact(f)).to.equal(true);
    }
  });

  it('keeps endpoints given to buildUdpFrameOfSize', () => {
    const f = buildUdpFrameOfSize(100, 5, { dstPort: 4789, srcIp: '1.2.3.4', ipId: 9 });
    expect(u16(f, 36)).to.equal(4789);
    expect(hex(f.subarray(26, 30))).to.equal('01020304');
    expect(u16(f, 18)).to.equal(9);
    expect(ipHeaderSum(f)).to.equal(0xffff);
  });

  it('frameSequence reads views at an offset, and framePayloadIntact sees a flipped byte', () => {
    const f = buildUdpFrameOfSize(300, 0xcafe);
    const shifted = new Uint8Array(f.length + 3);
    shifted.set(f, 3);
    expect(frameSequence(shifted.subarray(3))).to.equal(0xcafe);
    expect(framePayloadIntact(shifted.subarray(3))).to.equal(true);
    f[299]! ^= 1;
    expect(framePayloadIntact(f)).to.equal(false);
  });

  it('frameSequence is undefined for frames it did not build', () => {
    const arp = buildUdpFrameOfSize(60, 1);
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(frameSequence(arp)).to.equal(undefined);
    expect(framePayloadIntact(arp)).to.equal(false);
    const tcp = buildUdpFrameOfSize(60, 1);
    tcp[23] = 6;
    expect(frameSequence(tcp)).to.equal(undefined);
    expect(frameSequence(buildUdpFrame({ payloadLength: 3 }))).to.equal(undefined);
    expect(frameSequence(new Uint8Array(10))).to.equal(undefined);
  });

  it('rejects arguments it cannot honour with VHOST_INVALID_ARGUMENT', () => {
    for (const size of [59, 9001, 100.5, NaN]) expectInvalid(() => buildUdpFrameOfSize(size, 0));
    for (const seq of [-1, 2 ** 32, 0.5]) expectInvalid(() => buildUdpFrameOfSize(60, seq));
    expectInvalid(() => buildUdpFrame({ srcMac: '52:54:00:12:34' }));
    expectInvalid(() => buildUdpFrame({ dstMac: new Uint8Array(5) }));
    expectInvalid(() => buildUdpFrame({ srcIp: '10.0.0.256' }));
    expectInvalid(() => buildUdpFrame({ dstIp: '1.2.3' }));
    expectInvalid(() => buildUdpFrame({ dstIp: new Uint8Array(16) }));
    expectInvalid(() => buildUdpFrame({ srcPort: 65536 }));
    expectInvalid(() => buildUdpFrame({ dstPort: -1 }));
    expectInvalid(() => buildUdpFrame({ payload: new Uint8Array(1), payloadLength: 1 }));
    expectInvalid(() => buildUdpFrame({ payloadLength: 65_536 - 28 }));
    expectInvalid(() => buildUdpFrame({ payloadLength: 1, fill: 256 }));
    expect(buildUdpFrame({ payloadLength: 65_535 - 28 }).length).to.equal(14 + 65_535);
  });

  describe('UdpFrameTemplate', () => {
    it('writes exactly the bytes buildUdpFrameOfSize builds, for any size, sequence number and endpoints', () => {
      const endpoints = { srcMac: '02:aa:bb:cc:dd:ee', dstIp: '192.168.7.9', srcPort: 4242 };
      for (const size of [60, 64, 333, 1514, 9000]) {
        const t = new UdpFrameTemplate(size, endpoints);
        const buf = new Uint8Array(9000);
        for (const seq of [0, 1, 255, 0xffff, 0x10000, 0x12345678, 0xffffffff]) {
          const expected = buildUdpFrameOfSize(size, seq, endpoints);
          expect(t.write(seq, buf)).to.deep.equal(expected);
          expect(t.frame(seq)).to.deep.equal(expected);
        }
      }
    });

    it('refuses a buffer smaller than the frame with VHOST_INVALID_ARGUMENT', () => {
      expect(() => new UdpFrameTemplate(100).write(1, new Uint8Array(99))).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_ARGUMENT');
    });
  });
});
