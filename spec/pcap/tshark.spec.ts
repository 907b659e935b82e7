import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import { PcapWriter, readPcap, readPcapFrames, type PcapRecord } from '../../lib/pcap/index.js';
import { expectRejectCode } from '../helpers/resources.js';
import { skipWithout } from '../helpers/backends.js';

/**
 * Runs tshark and returns its tab-separated field rows. As root tshark prints a
 * "could be dangerous" warning on stderr but works; stderr is only shown on failure.
 */
function tsharkFields(file: string, fields: string[], extra: string[] = []): string[][] {
  const out = execFileSync(
    'tshark',
    ['-n', '-r', file, '-o', 'ip.check_checksum:TRUE', ...extra, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return out.trimEnd().split('\n').map((l) => l.split('\t'));
}

/** Sizes covering the minimum, odd sizes, a standard MTU frame and a jumbo frame. */
const size = (i: number): number => (i === 0 ? 60 : i === 1 ? 1514 : i === 2 ? 9000 : 60 + ((i * 1237) % 8941));

describe('pcap interoperability with tshark', function () {
  this.timeout(60_000);
  let dir: string;

  before(function () {
    skipWithout(this, 'tshark', 'tshark');
    dir = mkdtempSync(join(tmpdir(), 'vhost-tshark-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('tshark reads 100 frames we wrote: lengths, ports, payload sequence, good IPv4 checksums, µs timestamps', async () => {
    const path = join(dir, 'udp100.pcap');
    const w = await PcapWriter.open(path);
    for (let i = 0; i < 100; i++) {
      w.write(buildUdpFrameOfSize(size(i), i, { dstPort: 10_000 + i }), 1_700_000_000_000_000_000n + BigInt(i) * 1_234_567n);
    }
    await w.close();

    const rows = tsharkFields(path, ['frame.len', 'frame.cap_len', 'udp.dstport', 'ip.checksum.status', 'data.data', 'frame.time_epoch']);
    expect(rows).to.have.length(100);
    rows.forEach(([len, caplen, port, cksum, data, epoch], i) => {
      expect(Number(len), `frame ${i} length`).to.equal(size(i));
      expect(Number(caplen)).to.equal(size(i));
      expect(Number(port)).to.equal(10_000 + i);
      expect(cksum, `frame ${i}: ip.checksum.status 1 = good`).to.equal('1');
      expect(data!.slice(0, 8), 'sequence number at the start of the UDP payload').to.equal(i.toString(16).padStart(8, '0'));
      expect(data!.length / 2).to.equal(size(i) - 42);
      const ns = BigInt(i) * 1_234_567n;
      expect(epoch).to.equal(`1700000000.${((ns - (ns % 1000n)) / 1000n).toString().padStart(6, '0')}000`);
    });
  });

  it('tshark reads a nanosecond file with snaplen truncation, and flags a corrupted checksum', async () => {
    const path = join(dir, 'ns.pcap');
    const w = await PcapWriter.open(path, { nanoseconds: true, snaplen: 128 });
    for (let i = 0; i < 10; i++) {
      const f = buildUdpFrameOfSize(100 + i * 50, i);
      if (i === 5) f[24]! ^= 0xff; // IPv4 header checksum byte: tshark must report it bad
      w.write(f, 1_234_567_890_000_000_000n + BigInt(i) * 7n);
    }
    await w.close();
    const rows = tsharkFields(path, ['frame.len', 'frame.cap_len', 'ip.checksum.status', 'frame.time_epoch']);
    expect(rows).to.have.length(10);
    rows.forEach(([len, caplen, cksum, epoch], i) => {
      expect(Number(len)).to.equal(100 + i * 50);
      expect(Number(caplen)).to.equal(Math.min(128, 100 + i * 50));
      expect(cksum).to.equal(i === 5 ? '0' : '1');
      expect(epoch).to.equal(`1234567890.${String(i * 7).padStart(9, '0')}`);
    });
  });

  it('we read what tshark writes: µs and ns pcap, and name pcapng as unsupported', async () => {
    const src = join(dir, 'src.pcap');
    const w = await PcapWriter.open(src, { nanoseconds: true });
    const frames = Array.from({ length: 20 }, (_, i) => buildUdpFrameOfSize(size(i), 1000 + i));
    frames.forEach((f, i) => w.write(f, 1_500_000_000_123_456_789n + BigInt(i)));
    await w.close();

    for (const format of ['pcap', 'nsecpcap'] as const) {
      const out = join(dir, `tshark-${format}.pcap`);
      execFileSync('tshark', ['-r', src, '-F', format, '-w', out], { stdio: ['ignore', 'ignore', 'pipe'] });
      const records: PcapRecord[] = [];
      for await (const r of readPcap(out)) records.push(r);
      expect(records.map((r) => frameSequence(r.data))).to.deep.equal(frames.map((_, i) => 1000 + i));
      expect(records.every((r) => framePayloadIntact(r.data))).to.equal(true);
      expect(records.map((r) => r.originalLength)).to.deep.equal(frames.map((f) => f.length));
      const expectNs = format === 'nsecpcap' ? 1_500_000_000_123_456_789n : 1_500_000_000_123_456_000n;
      expect(records[0]!.timestampNs).to.equal(expectNs);
      expect(readPcapFrames(out)).to.have.length(20);
    }

    const ng = join(dir, 'tshark.pcapng');
    execFileSync('tshark', ['-r', src, '-F', 'pcapng', '-w', ng], { stdio: ['ignore', 'ignore', 'pipe'] });
    const e = await expectRejectCode(readPcap(ng).next(), 'VHOST_BAD_PCAP');
    expect(e.message).to.contain('pcapng');
  });
});
