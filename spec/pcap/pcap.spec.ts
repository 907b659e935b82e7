import { expect } from 'chai';
import { memfs } from 'memfs';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isVhostUserError, type VhostUserError } from '../../lib/errors.js';
import type { FileSystem } from '../../lib/file-system.js';
import { buildUdpFrameOfSize, frameSequence, framePayloadIntact } from '../../lib/net/frame-builder.js';
import { PcapWriter, parsePcap, readPcap, readPcapFrames, type PcapRecord } from '../../lib/pcap/index.js';
import { expectRejectCode, fdCount } from '../helpers/resources.js';

interface FixtureRecord {
  sec: number;
  frac: number;
  data: Uint8Array;
  /** Defaults to data.length. */
  caplen?: number;
  len?: number;
}

/** A pcap file written field by field, independently of PcapWriter. */
function fixture(opts: {
  littleEndian?: boolean;
  magic?: number;
  versionMajor?: number;
  snaplen?: number;
  linkType?: number;
  records?: FixtureRecord[];
}): Uint8Array {
  const le = opts.littleEndian ?? true;
  const records = opts.records ?? [];
  const out = new Uint8Array(24 + records.reduce((n, r) => n + 16 + r.data.length, 0));
  const v = new DataView(out.buffer);
  v.setUint32(0, opts.magic ?? 0xa1b2c3d4, le);
  v.setUint16(4, opts.versionMajor ?? 2, le);
  v.setUint16(6, 4, le);
  v.setUint32(16, opts.snaplen ?? 65535, le);
  v.setUint32(20, opts.linkType ?? 1, le);
  let p = 24;
  for (const r of records) {
    v.setUint32(p, r.sec, le);
    v.setUint32(p + 4, r.frac, le);
    v.setUint32(p + 8, r.caplen ?? r.data.length, le);
    v.setUint32(p + 12, r.len ?? r.data.length, le);
    out.set(r.data, p + 16);
    p += 16 + r.data.length;
  }
  return out;
}

async function collect(it: AsyncIterable<PcapRecord>): Promise<PcapRecord[]> {
  const out: PcapRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

function expectBadPcap(fn: () => unknown, offset: number): VhostUserError {
  try {
    fn();
  } catch (e) {
    expect(isVhostUserError(e, 'VHOST_BAD_PCAP'), String(e)).to.equal(true);
    expect((e as Error).message).to.contain(`at byte offset ${offset}`);
    return e as VhostUserError;
  }
  return expect.fail('expected VHOST_BAD_PCAP');
}

describe('pcap', () => {
  let dir: string;
  let n = 0;
  const file = (): string => join(dir, `f${n++}.pcap`);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vhost-pcap-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('PcapWriter → reader round trip', () => {
    it('writes a microsecond little-endian file that all three readers return frame for frame', async () => {
      const path = file();
      const sizes = [60, 61, 64, 128, 1514, 9000, 77];
      const frames = sizes.map((s, i) => buildUdpFrameOfSize(s, i));
      const base = 1_700_000_000_123_456_789n;
      const w = await PcapWriter.open(path);
      frames.forEach((f, i) => w.write(f, base + BigInt(i) * 1_000_001n));
      expect(w.packets).to.equal(frames.length);
      expect(w.bytes).to.equal(sizes.reduce((a, b) => a + b, 0));
      await w.close();

      const bytes = readFileSync(path);
      expect(bytes.length).to.equal(24 + sizes.reduce((a, s) => a + 16 + s, 0));
      const dv = new DataView(bytes.buffer, bytes.byteOffset);
      expect(dv.getUint32(0, true)).to.equal(0xa1b2c3d4);
      expect([dv.getUint16(4, true), dv.getUint16(6, true)]).to.deep.equal([2, 4]);
      expect(dv.getUint32(16, true)).to.equal(65535);
      expect(dv.getUint32(20, true)).to.equal(1);

      const streamed = await collect(readPcap(path));
      const parsed = [...parsePcap(bytes)];
      const sync = readPcapFrames(path);
      for (const records of [streamed, parsed]) {
        expect(records).to.have.length(frames.length);
        records.forEach((r, i) => {
          expect(r.data).to.deep.equal(frames[i]);
          expect(r.originalLength).to.equal(sizes[i]);
          // microseconds: the nanoseconds below a microsecond are dropped
          const ts = base + BigInt(i) * 1_000_001n;
          expect(r.timestampNs).to.equal(ts - (ts % 1000n));
        });
      }
      expect(sync.map((f) => Array.from(f))).to.deep.equal(frames.map((f) => Array.from(f)));
    });

    it('writes nanosecond files (magic 0xa1b23c4d) with exact timestamps', async () => {
      const path = file();
      const w = await PcapWriter.open(path, { nanoseconds: true });
      const stamps = [0n, 1n, 999_999_999n, 1_000_000_000n, 4_294_967_295_999_999_999n];
      stamps.forEach((ts, i) => w.write(buildUdpFrameOfSize(60, i), ts));
      await w.close();
      expect(readFileSync(path).readUInt32LE(0)).to.equal(0xa1b23c4d);
      const records = await collect(readPcap(path));
      expect(records.map((r) => r.timestampNs)).to.deep.equal(stamps);
      expect(records.map((r) => frameSequence(r.data))).to.deep.equal([0, 1, 2, 3, 4]);
    });

    it('truncates frames longer than snaplen, keeping the original length', async () => {
      const path = file();
      const w = await PcapWriter.open(path, { snaplen: 100 });
      const long = buildUdpFrameOfSize(1514, 7);
      const exact = buildUdpFrameOfSize(100, 8);
      w.write(long, 1n);
      w.write(exact, 2n);
      expect(w.bytes).to.equal(1614);
      await w.close();
      const records = await collect(readPcap(path));
      expect(records).to.have.length(2);
      const [a, b] = records;
      expect(readPcapFrames(path).map((f) => f.length)).to.deep.equal([100, 100]);
      expect(a!.data).to.deep.equal(long.subarray(0, 100));
      expect(a!.originalLength).to.equal(1514);
      expect(b!.data).to.deep.equal(exact);
      expect(b!.originalLength).to.equal(100);
      expect(statSync(path).size).to.equal(24 + 16 + 100 + 16 + 100);
    });

    it('flushes across the 1 MiB buffer and streams records that straddle read chunks', async () => {
      const path = file();
      const w = await PcapWriter.open(path);
      const count = 3000; // ≈ 13 MB with sizes up to 9000: many buffer flushes and read chunks
      let total = 0;
      for (let i = 0; i < count; i++) {
        const size = 60 + ((i * 2719) % 8941);
        total += size;
        w.write(buildUdpFrameOfSize(size, i), BigInt(i) * 1000n);
      }
      await w.close();
      expect(statSync(path).size).to.equal(24 + 16 * count + total);
      let i = 0;
      for await (const r of readPcap(path)) {
        expect(r.data.length).to.equal(60 + ((i * 2719) % 8941));
        expect(frameSequence(r.data)).to.equal(i);
        expect(framePayloadIntact(r.data), `frame ${i}`).to.equal(true);
        expect(r.timestampNs).to.equal(BigInt(i) * 1000n);
        i++;
      }
      expect(i).to.equal(count);
    });

    it('stamps frames with the current time by default, never going backwards', async () => {
      const path = file();
      const before = BigInt(Date.now()) * 1_000_000n;
      const w = await PcapWriter.open(path, { nanoseconds: true });
      for (let i = 0; i < 100; i++) w.write(buildUdpFrameOfSize(60, i));
      await w.close();
      const after = BigInt(Date.now() + 1) * 1_000_000n;
      const stamps = (await collect(readPcap(path))).map((r) => r.timestampNs);
      for (let i = 1; i < stamps.length; i++) expect(stamps[i]! >= stamps[i - 1]!).to.equal(true);
      expect(stamps[0]! >= before - 1_000_000n && stamps[99]! <= after, `${before} ≤ ${stamps[0]}…${stamps[99]} ≤ ${after}`).to.equal(true);
    });

    it('an empty capture is a bare global header', async () => {
      const path = file();
      await (await PcapWriter.open(path)).close();
      expect(statSync(path).size).to.equal(24);
      expect(readPcapFrames(path)).to.deep.equal([]);
    });
  });

  describe('PcapWriter misuse', () => {
    it('rejects a snaplen outside 1..262144', async () => {
      for (const snaplen of [0, -1, 1.5, 262_145]) {
        await expectRejectCode(PcapWriter.open(file(), { snaplen }), 'VHOST_INVALID_ARGUMENT');
      }
      await (await PcapWriter.open(file(), { snaplen: 262_144 })).close();
    });

    it('reports an uncreatable file as VHOST_SYSCALL with its errno', async () => {
      const e = await expectRejectCode(PcapWriter.open(join(dir, 'no/such/dir.pcap')), 'VHOST_SYSCALL');
      expect((e as unknown as VhostUserError).errno).to.equal('ENOENT');
    });

    it('rejects timestamps a pcap cannot hold, writes after close; close is idempotent and releases the fd', async () => {
      const fds = fdCount();
      const w = await PcapWriter.open(file());
      expect(fdCount()).to.equal(fds + 1);
      const frame = buildUdpFrameOfSize(60, 0);
      for (const ts of [-1n, 4_294_967_296n * 1_000_000_000n]) {
        expect(() => w.write(frame, ts)).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
      }
      expect(w.packets).to.equal(0);
      await w.close();
      await w.close();
      expect(w.closed).to.equal(true);
      expect(fdCount()).to.equal(fds);
      expect(() => w.write(frame)).to.throw().with.property('code', 'VHOST_INVALID_STATE');
    });

    it('a failed flush (ENOSPC on /dev/full) is VHOST_SYSCALL, and close still releases the fd', async () => {
      const fds = fdCount();
      const w = await PcapWriter.open('/dev/full');
      w.write(buildUdpFrameOfSize(60, 0), 0n);
      expect(() => w.flush()).to.throw().with.property('errno', 'ENOSPC');
      const e = await expectRejectCode(w.close(), 'VHOST_SYSCALL');
      expect((e as unknown as VhostUserError).errno).to.equal('ENOSPC');
      expect(w.closed).to.equal(true);
      expect(fdCount()).to.equal(fds);
    });
  });

  describe('reading files from other writers', () => {
    const frameA = buildUdpFrameOfSize(60, 0xdeadbeef);
    const frameB = buildUdpFrameOfSize(200, 1);
    const cases: Array<{ name: string; littleEndian: boolean; magic: number; frac: number; expectNs: bigint }> = [
      { name: 'big-endian microsecond', littleEndian: false, magic: 0xa1b2c3d4, frac: 654_321, expectNs: 654_321_000n },
      { name: 'big-endian nanosecond', littleEndian: false, magic: 0xa1b23c4d, frac: 987_654_321, expectNs: 987_654_321n },
      { name: 'little-endian nanosecond', littleEndian: true, magic: 0xa1b23c4d, frac: 5, expectNs: 5n },
    ];
    for (const c of cases) {
      it(`reads a ${c.name} file`, async () => {
        const bytes = fixture({
          littleEndian: c.littleEndian,
          magic: c.magic,
          snaplen: 128,
          records: [
            { sec: 1_600_000_000, frac: c.frac, data: frameA },
            { sec: 0xffffffff, frac: 0, data: frameB.subarray(0, 128), len: 200 },
          ],
        });
        const path = file();
        writeFileSync(path, bytes);
        for (const records of [[...parsePcap(bytes)], await collect(readPcap(path))]) {
          expect(records).to.have.length(2);
          expect(records[0]!.timestampNs).to.equal(1_600_000_000n * 1_000_000_000n + c.expectNs);
          expect(records[0]!.data).to.deep.equal(frameA);
          expect(frameSequence(records[0]!.data)).to.equal(0xdeadbeef);
          expect(records[1]!.timestampNs).to.equal(0xffffffffn * 1_000_000_000n);
          expect(records[1]!.data).to.deep.equal(frameB.subarray(0, 128));
          expect(records[1]!.originalLength).to.equal(200);
        }
        // The generator's return value is the decoded global header.
        const gen = parsePcap(bytes);
        let step = gen.next();
        while (!step.done) step = gen.next();
        expect(step.value).to.deep.include({ littleEndian: c.littleEndian, nanoseconds: c.magic === 0xa1b23c4d, snaplen: 128 });
      });
    }
  });

  describe('malformed files → VHOST_BAD_PCAP with the byte offset', () => {
    const frame = buildUdpFrameOfSize(60, 0);
    const good = fixture({ records: [{ sec: 1, frac: 0, data: frame }] });
    const malformed: Array<{ name: string; bytes: Uint8Array; offset: number; says: string }> = [
      { name: 'empty file', bytes: new Uint8Array(0), offset: 0, says: 'truncated global header' },
      { name: 'truncated global header', bytes: good.subarray(0, 23), offset: 0, says: 'truncated global header' },
      { name: 'unknown magic', bytes: fixture({ magic: 0x12345678 }), offset: 0, says: 'not a pcap file' },
      { name: 'pcapng file', bytes: fixture({ magic: 0x0a0d0d0a }), offset: 0, says: 'pcapng' },
      { name: 'version 1.4', bytes: fixture({ versionMajor: 1 }), offset: 4, says: 'version' },
      { name: 'raw-IP link type (101)', bytes: fixture({ linkType: 101 }), offset: 20, says: 'not Ethernet' },
      { name: 'Ethernet with FCS bits in the link type', bytes: fixture({ linkType: 0x14000001 }), offset: 20, says: 'not Ethernet' },
      { name: 'truncated record header', bytes: good.subarray(0, 24 + 10), offset: 24, says: 'truncated record header' },
      { name: 'truncated record data', bytes: good.subarray(0, good.length - 1), offset: 24, says: 'truncated record' },
      {
        name: 'caplen above the file snaplen',
        bytes: fixture({ snaplen: 59, records: [{ sec: 1, frac: 0, data: frame }] }),
        offset: 24,
        says: "file's snaplen 59",
      },
      {
        name: 'caplen above 256 KiB (snaplen claims more)',
        bytes: fixture({ snaplen: 0xffffffff, records: [{ sec: 1, frac: 0, data: frame }, { sec: 2, frac: 0, data: new Uint8Array(0), caplen: 262_145 }] }),
        offset: 24 + 16 + 60,
        says: 'exceeds 262144',
      },
      {
        name: 'caplen above the original length',
        bytes: fixture({ records: [{ sec: 1, frac: 0, data: frame, len: 59 }] }),
        offset: 24,
        says: 'original length 59',
      },
    ];
    for (const m of malformed) {
      it(m.name, async () => {
        const path = file();
        writeFileSync(path, m.bytes);
        const e = expectBadPcap(() => [...parsePcap(m.bytes)], m.offset);
        expect(e.message).to.contain(m.says);
        expectBadPcap(() => readPcapFrames(path), m.offset);
        const fds = fdCount();
        const err = await expectRejectCode(collect(readPcap(path)), 'VHOST_BAD_PCAP');
        expect(err.message).to.contain(`at byte offset ${m.offset}`).and.contain(path);
        expect(fdCount(), 'readPcap closes the file when it throws').to.equal(fds);
      });
    }

    it('yields the good records before the bad one', async () => {
      const path = file();
      // one whole record, then the first 6 bytes of a second record header
      writeFileSync(path, new Uint8Array([...good, ...good.subarray(24, 30)]));
      const seen: PcapRecord[] = [];
      await expectRejectCode(
        (async () => {
          for await (const r of readPcap(path)) seen.push(r);
        })(),
        'VHOST_BAD_PCAP',
      );
      expect(seen).to.have.length(1);
      expect(seen[0]!.data).to.deep.equal(frame);
    });
  });

  describe('reader resources', () => {
    it('readPcap closes the file when the consumer stops early', async () => {
      const path = file();
      const w = await PcapWriter.open(path);
      for (let i = 0; i < 10; i++) w.write(buildUdpFrameOfSize(60, i), 0n);
      await w.close();
      const fds = fdCount();
      for await (const r of readPcap(path)) {
        expect(fdCount()).to.equal(fds + 1);
        if (frameSequence(r.data) === 3) break;
      }
      expect(fdCount()).to.equal(fds);
    });

    it('a missing file is VHOST_SYSCALL/ENOENT for both readers', async () => {
      const path = join(dir, 'missing.pcap');
      expect(() => readPcapFrames(path)).to.throw().with.property('errno', 'ENOENT');
      const e = await expectRejectCode(collect(readPcap(path)), 'VHOST_SYSCALL');
      expect((e as unknown as VhostUserError).errno).to.equal('ENOENT');
    });
  });

  describe('on an in-memory file system (memfs): no disk', () => {
    const frames = [60, 61, 1514, 9000, 300].map((size, i) => buildUdpFrameOfSize(size, i));
    const stamps = frames.map((_, i) => 1_700_000_000_123_456_789n + BigInt(i) * 1_000n);

    async function writeCapture(fs: FileSystem | undefined, path: string, nanoseconds: boolean): Promise<void> {
      const w = await PcapWriter.open(path, { nanoseconds, snaplen: 2000, ...(fs ? { fs } : {}) });
      frames.forEach((f, i) => w.write(f, stamps[i]));
      await w.close();
    }

    for (const nanoseconds of [false, true]) {
      it(`the writer's file is byte for byte the one it writes to disk, and both readers read it back (${nanoseconds ? 'ns' : 'us'})`, async () => {
        const { fs } = memfs({ '/captures': null });
        const path = '/captures/cap.pcap';
        await writeCapture(fs, path, nanoseconds);
        expect(existsSync(path), 'nothing on disk').to.equal(false);
        const disk = join(dir, 'cap.pcap');
        await writeCapture(undefined, disk, nanoseconds);
        const inMemory = fs.readFileSync(path) as Buffer;
        expect(Buffer.compare(inMemory, readFileSync(disk))).to.equal(0);

        const records = await collect(readPcap(path, { fs }));
        expect(records.map((r) => r.originalLength)).to.deep.equal(frames.map((f) => f.length));
        // snaplen 2000 truncated the 9000-byte frame; the others are whole and intact.
        expect(records.map((r) => r.data.length)).to.deep.equal([60, 61, 1514, 2000, 300]);
        expect(records.map((r) => r.timestampNs)).to.deep.equal(stamps.map((t) => (nanoseconds ? t : (t / 1000n) * 1000n)));
        const whole = readPcapFrames(path, { fs });
        expect(whole.map((f) => Buffer.from(f).toString('hex'))).to.deep.equal(records.map((r) => Buffer.from(r.data).toString('hex')));
        expect([0, 1, 2, 4].every((i) => framePayloadIntact(whole[i]!) && frameSequence(whole[i]!) === i)).to.equal(true);
      });
    }

    it('errors name the path and errno: a missing directory, a missing file, a malformed file', async () => {
      const { fs } = memfs({ '/captures/bad.pcap': 'not a capture, long enough to hold a header' });
      const create = await expectRejectCode(PcapWriter.open('/no/such/dir.pcap', { fs }), 'VHOST_SYSCALL');
      expect((create as unknown as VhostUserError).errno).to.equal('ENOENT');
      expect(() => readPcapFrames('/captures/none.pcap', { fs })).to.throw().with.property('errno', 'ENOENT');
      const open = await expectRejectCode(collect(readPcap('/captures/none.pcap', { fs })), 'VHOST_SYSCALL');
      expect((open as unknown as VhostUserError).errno).to.equal('ENOENT');
      await expectRejectCode(collect(readPcap('/captures/bad.pcap', { fs })), 'VHOST_BAD_PCAP');
      expect(() => readPcapFrames('/captures/bad.pcap', { fs })).to.throw().with.property('code', 'VHOST_BAD_PCAP');
    });

    it('a write that fails part-way (ENOSPC after some bytes) loses no record and duplicates none on a retried flush', async () => {
      const { fs: mem } = memfs({ '/captures': null });
      // The file system takes 100 bytes of the first write, then refuses once with ENOSPC.
      let failures = 1;
      const fs: FileSystem = {
        ...mem,
        open: (p, f, cb) => mem.open(p, f, cb),
        read: (fd, b, o, l, pos, cb) => mem.read(fd, b, o, l, pos, cb),
        close: (fd, cb) => mem.close(fd, cb),
        readFileSync: (p) => mem.readFileSync(p),
        writeFileSync: (p, d) => mem.writeFileSync(p, d),
        writeSync(fd, buf, off, len) {
          if (len > 100 && failures > 0) return mem.writeSync(fd, buf, off, 100);
          if (failures-- > 0) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
          return mem.writeSync(fd, buf, off, len);
        },
      };
      const w = await PcapWriter.open('/captures/full.pcap', { fs });
      frames.forEach((f, i) => w.write(f, stamps[i]));
      expect(() => w.flush()).to.throw().with.property('errno', 'ENOSPC');
      await w.close();
      const back = readPcapFrames('/captures/full.pcap', { fs: mem });
      expect(back.map((f) => f.length)).to.deep.equal(frames.map((f) => f.length));
    });
  });
});
