/**
 * Checksum, pseudo-header and segmentation helpers (lib/net/checksum.ts,
 * l4-frame.ts, segment.ts) and TxOffloads.prepare, against known-good bytes:
 * the four frames pinned below were built by buildL4Frame and validated by
 * tshark (`-o ip.check_checksum:TRUE -o udp... -o tcp...`: status Good for the
 * IPv4 header, UDP and TCP checksums).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { TxOffloads } from '../../lib/devices/net/tx-offloads.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4 } from '../../lib/devices/net/virtio-net-hdr.js';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { checksumsValid, completePartialChecksum, FrameLayout, onesSum, pseudoHeaderSum } from '../../lib/net/checksum.js';
import { buildL4Frame, maxL4Payload } from '../../lib/net/l4-frame.js';
import { Segmenter } from '../../lib/net/segment.js';
import { PcapWriter } from '../../lib/pcap/pcap-writer.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const PAYLOAD = '010203040405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324';
/** tshark: Good. UDP/IPv4 0x8e41, TCP/IPv4 0x3e54, UDP/IPv6 0xa83f, TCP/IPv6 0x5852. */
const KNOWN = [
  { v: 4, p: 'udp', csum: 0x8e41, bytes: hex('02000000000202000000000108004500004103044000401123a60a0000010a00000204000009002d8e41' + PAYLOAD) },
  { v: 4, p: 'tcp', csum: 0x3e54, bytes: hex('02000000000202000000000108004500004d03044000400623a50a0000010a0000020400000900000001000000005018ffff3e540000' + PAYLOAD) },
  { v: 6, p: 'udp', csum: 0xa83f, bytes: hex('02000000000202000000000186dd60000000002d1140fd000000000000000000000000000001fd00000000000000000000000000000204000009002da83f' + PAYLOAD) },
  { v: 6, p: 'tcp', csum: 0x5852, bytes: hex('02000000000202000000000186dd6000000000390640fd000000000000000000000000000001fd0000000000000000000000000000020400000900000001000000005018ffff58520000' + PAYLOAD) },
] as const;

async function tsharkStatuses(frames: Uint8Array[]): Promise<string[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vhu-csum-'));
  try {
    const file = path.join(dir, 'f.pcap');
    const w = await PcapWriter.open(file);
    for (const f of frames) w.write(f);
    await w.close();
    return execFileSync('tshark', ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-e', 'udp.checksum.status', '-e', 'tcp.checksum.status'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .trimEnd()
      .split('\n')
      .map((l) => l.replace(/\t/g, ''));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('offload checksum helpers', () => {
  const layout = new FrameLayout();
  /** Segments the tshark test validates too (one tshark run for all). */
  const segmentSamples: Uint8Array[] = [];

  it('buildL4Frame gives the tshark-validated bytes; FrameLayout finds the headers; checksumsValid agrees', () => {
    for (const k of KNOWN) {
      const f = buildL4Frame({ ipVersion: k.v, protocol: k.p, payloadLength: 37, seq: 0x01020304 });
      expect(Buffer.from(f).toString('hex')).to.equal(Buffer.from(k.bytes).toString('hex'));
      expect(layout.parse(f)).to.equal(true);
      expect({ l3: layout.l3, l4: layout.l4, ip: layout.ipVersion }).to.deep.equal({ l3: 14, l4: k.v === 4 ? 34 : 54, ip: k.v });
      expect(layout.csumField - layout.l4).to.equal(k.p === 'tcp' ? 16 : 6);
      expect((f[layout.csumField]! << 8) | f[layout.csumField + 1]!).to.equal(k.csum);
      expect(checksumsValid(f, layout)).to.equal(true);
      const bad = f.slice();
      bad[bad.length - 1]! ^= 1;
      expect(checksumsValid(bad, layout)).to.equal(false);
    }
  });

  it('a partial frame holds the pseudo-header sum; completing it over [csum_start, end) gives the known checksum', () => {
    for (const k of KNOWN) {
      const f = buildL4Frame({ ipVersion: k.v, protocol: k.p, payloadLength: 37, seq: 0x01020304, checksum: 'partial' });
      layout.parse(f);
      const field = (f[layout.csumField]! << 8) | f[layout.csumField + 1]!;
      expect(field).to.equal(pseudoHeaderSum(f, layout.l3, layout.ipVersion, layout.protocol, layout.l4Length));
      // The pseudo-header sum folded with the L4 bytes (field zeroed) complements to the checksum.
      const zeroed = f.slice();
      zeroed[layout.csumField] = 0;
      zeroed[layout.csumField + 1] = 0;
      expect(~onesSum(zeroed, layout.l4, zeroed.length, field) & 0xffff).to.equal(k.csum);
      expect(completePartialChecksum(f, 0, f.length, layout.l4, layout.csumField - layout.l4)).to.equal(true);
      expect(Buffer.compare(f, k.bytes)).to.equal(0);
    }
  });

  it('completePartialChecksum writes nothing when csum_start or the field lies outside the frame', () => {
    const f = buildL4Frame({ payloadLength: 37, checksum: 'partial' });
    const copy = f.slice();
    expect(completePartialChecksum(f, 0, f.length, f.length, 0)).to.equal(false);
    expect(completePartialChecksum(f, 0, f.length, 34, f.length - 35)).to.equal(false);
    expect(Buffer.compare(f, copy)).to.equal(0);
  });

  it('a checksum that sums to 0 is stored as 0xffff (RFC 768)', () => {
    // A 2-byte "packet" [0xff, 0xff] sums to 0xffff: its complement 0 becomes 0xffff.
    const b = Uint8Array.of(0xff, 0xff, 0, 0);
    expect(completePartialChecksum(b, 0, 4, 0, 2)).to.equal(true);
    expect([b[2], b[3]]).to.deep.equal([0xff, 0xff]);
  });

  it('FrameLayout refuses what is not whole TCP/UDP over IP: a cut TCP header, a fragment, ARP', () => {
    const t = buildL4Frame({ protocol: 'tcp', payloadLength: 40 });
    expect(layout.parse(t, 14 + 20 + 10)).to.equal(false);
    const frag = t.slice();
    frag[14 + 6] = 0x20; // MF
    expect(layout.parse(frag)).to.equal(false);
    const arp = t.slice();
    arp[12] = 0x08;
    arp[13] = 0x06;
    expect(layout.parse(arp)).to.equal(false);
  });

  it('TxOffloads.prepare: pseudo-header sum in place, NEEDS_CSUM at the L4 header, GSO type by the headers', () => {
    const off = new TxOffloads(4);
    const frames = [
      buildL4Frame({ payloadLength: 100 }),
      buildL4Frame({ ipVersion: 6, protocol: 'tcp', payloadLength: 3000 }),
      buildL4Frame({ protocol: 'tcp', payloadLength: 3000 }),
      buildL4Frame({ ipVersion: 6, payloadLength: 3000 }),
    ];
    frames.forEach((f, i) => expect(off.prepare(i, f, f.length, i === 0 ? 0 : 1000)).to.equal(true));
    expect([...off.flags]).to.deep.equal([1, 1, 1, 1].map(() => VIRTIO_NET_HDR_F_NEEDS_CSUM));
    expect([...off.csumStarts]).to.deep.equal([34, 54, 34, 54]);
    expect([...off.csumOffsets]).to.deep.equal([6, 16, 16, 6]);
    expect([...off.gsoTypes]).to.deep.equal([0, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_UDP_L4]);
    expect([...off.hdrLens]).to.deep.equal([0, 74, 54, 62]);
    expect([...off.gsoSizes]).to.deep.equal([0, 1000, 1000, 1000]);
    layout.parse(frames[0]!);
    expect((frames[0]![40]! << 8) | frames[0]![41]!).to.equal(pseudoHeaderSum(frames[0]!, 14, 4, 17, layout.l4Length));
    expect(off.prepare(0, Uint8Array.of(1, 2, 3))).to.equal(false);
  });

  describe('Segmenter', () => {
    const seg = new Segmenter();
    for (const k of [
      { v: 4, p: 'tcp' },
      { v: 6, p: 'tcp' },
      { v: 4, p: 'udp' },
      { v: 6, p: 'udp' },
    ] as const) {
      it(`${k.p} over IPv${k.v}: 64 KiB cut into valid segments whose payloads join up, sequence numbers and flags per RFC 9293`, () => {
        const payload = maxL4Payload(k.v, k.p);
        const f = buildL4Frame({ ipVersion: k.v, protocol: k.p, payloadLength: payload, tcpSeq: 0xfffff000, tcpFlags: 0x19 | 0x80, checksum: 'partial' });
        expect(layout.parse(f)).to.equal(true);
        const out: Uint8Array[] = [];
        const n = seg.segment(f, f.length, layout, 1400, (s) => (out.push(s.slice()), true));
        expect(n).to.equal(Math.ceil(payload / 1400)).and.to.equal(out.length);
        const l = new FrameLayout();
        const hl = layout.headersLength;
        out.forEach((s, i) => {
          expect(l.parse(s) && checksumsValid(s, l), `segment ${i}`).to.equal(true);
          expect(s.length).to.equal(hl + Math.min(1400, payload - i * 1400));
          if (k.p === 'tcp') {
            const seq = ((s[l.l4 + 4]! << 24) | (s[l.l4 + 5]! << 16) | (s[l.l4 + 6]! << 8) | s[l.l4 + 7]!) >>> 0;
            expect(seq).to.equal((0xfffff000 + i * 1400) >>> 0);
            const flags = s[l.l4 + 13]!;
            expect(flags & 0x09, 'FIN|PSH only on the last').to.equal(i === out.length - 1 ? 0x09 : 0);
            expect(flags & 0x80, 'CWR only on the first').to.equal(i === 0 ? 0x80 : 0);
          }
          if (k.v === 4) expect((s[18]! << 8) | s[19]!).to.equal((f[18]! << 8 | f[19]!) + i);
        });
        expect(Buffer.compare(Buffer.concat(out.map((s) => s.subarray(hl))), f.subarray(hl))).to.equal(0);
        segmentSamples.push(out[0]!, out[1]!, out.at(-1)!);
      });
    }

    it('stops where emit refuses and resumes from that segment', () => {
      const f = buildL4Frame({ protocol: 'tcp', payloadLength: 5000 });
      layout.parse(f);
      const got: number[] = [];
      let budget = 2;
      expect(seg.segment(f, f.length, layout, 1000, (s) => budget-- > 0 && (got.push(s.length), true))).to.equal(2);
      expect(seg.segment(f, f.length, layout, 1000, (s) => (got.push(s.length), true), 2)).to.equal(5);
      expect(got).to.deep.equal([1054, 1054, 1054, 1054, 1054]);
      expect(seg.segment(f, f.length, layout, 0, () => true)).to.equal(-1);
    });
  });



  describe('tshark', () => {
    it('tshark agrees: the known frames, completed partial frames and segments are Good', async function () {
      if (!findExecutable('tshark')) {
        process.stdout.write('      skipped: tshark is not installed (apt-get install tshark)\n');
        this.skip();
      }
      const partial = KNOWN.map((k) => buildL4Frame({ ipVersion: k.v, protocol: k.p, payloadLength: 37, seq: 0x01020304, checksum: 'partial' }));
      for (const f of partial) {
        layout.parse(f);
        completePartialChecksum(f, 0, f.length, layout.l4, layout.csumField - layout.l4);
      }
      expect(await tsharkStatuses([...KNOWN.map((k) => k.bytes), ...partial, ...segmentSamples])).to.deep.equal(Array(8 + segmentSamples.length).fill('1'));
      expect(segmentSamples).to.have.length(12);
    });
  });
});
