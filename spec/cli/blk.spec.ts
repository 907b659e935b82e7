/**
 * `vhost-user blk info|read|write|verify` end to end: the built CLI as a child
 * process against qemu-storage-daemon (file image, null-co, read-only) and the
 * reference back-end (`vhost-user serve --device blk`, packed rings). Data is
 * checked in the image file, outside this library.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startQemuStorageDaemon, startReferenceBackend, stopAll } from '../../lib/launch/index.js';
import { skipWithout } from '../helpers/backends.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 11 + seed + (i >> 9)) & 0xff;
  return b;
}

function readImage(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe('cli blk', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vhost-cli-blk-'));
  });
  afterEach(async () => {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--help of each command documents its options', async () => {
    for (const [cmd, opts] of [
      ['info', []],
      ['read', ['--offset BYTES', '--length BYTES', '--out FILE']],
      ['write', ['--offset BYTES', '--in FILE']],
      ['verify', ['--offset BYTES', '--length BYTES', '--seed N']],
    ] as const) {
      const r = await cli(['blk', cmd, '--help']);
      expect(r.status, cmd).to.equal(0);
      for (const o of ['--socket PATH', '--queues Q', '--ring split|packed', '--json', ...opts]) expect(r.stdout, `${cmd} ${o}`).to.contain(o);
    }
  });

  describe('against qemu-storage-daemon @integration', () => {
    before(function () {
      skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
    });

    it('info --json: features, config decoded, id', async () => {
      const qsd = await startQemuStorageDaemon({ numQueues: 2, imageSize: 32 * 1024 * 1024 });
      const r = await cli(['blk', 'info', '--socket', qsd.socketPath, '--queues', '2', '--json']);
      expect(r.status, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout) as { featureNames: string[]; config: { capacity: number; numQueues: number; segMax: number }; queues: number; id: string };
      expect(j.config.capacity).to.equal(65536);
      expect(j.config.numQueues).to.equal(2);
      expect(j.config.segMax).to.equal(126);
      expect(j.queues).to.equal(2);
      expect(j.id).to.equal('vhost_user_blk');
      expect(j.featureNames).to.include.members(['VIRTIO_BLK_F_DISCARD', 'VIRTIO_BLK_F_WRITE_ZEROES', 'VIRTIO_BLK_F_FLUSH', 'VIRTIO_F_VERSION_1']);
      const text = await cli(['blk', 'info', '--socket', qsd.socketPath]);
      expect(text.status).to.equal(0);
      expect(text.stdout).to.match(/capacity:\s+65536 sectors \(33554432 bytes\)/);
    });

    it('write --in lands in the image file; read --out gives the same bytes back', async () => {
      const qsd = await startQemuStorageDaemon({ numQueues: 2, imageSize: 32 * 1024 * 1024 });
      const data = pattern(3 * 1024 * 1024 + 4096, 7);
      const inFile = path.join(dir, 'in.bin');
      const outFile = path.join(dir, 'out.bin');
      writeFileSync(inFile, data);
      const w = await cli(['blk', 'write', '--socket', qsd.socketPath, '--queues', '2', '--offset', '1048576', '--in', inFile, '--json']);
      expect(w.status, w.stderr).to.equal(0);
      expect(JSON.parse(w.stdout)).to.deep.include({ offset: 1048576, length: data.length, flushed: true });
      expect(readImage(qsd.imagePath!, 1048576, data.length).equals(Buffer.from(data))).to.equal(true);
      const r = await cli(['blk', 'read', '--socket', qsd.socketPath, '--offset', '1048576', '--length', String(data.length), '--out', outFile]);
      expect(r.status, r.stderr).to.equal(0);
      expect(readFileSync(outFile).equals(Buffer.from(data))).to.equal(true);
      const hex = await cli(['blk', 'read', '--socket', qsd.socketPath, '--offset', '1048576', '--length', '512']);
      expect(hex.stdout.split('\n')[0]).to.equal(`0000100000  ${Array.from(data.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join(' ')}  ${Array.from(data.subarray(0, 16), (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('')}`);
    });

    it('verify: exit 0 when everything reads back, the pattern is in the file', async () => {
      const qsd = await startQemuStorageDaemon({ imageSize: 16 * 1024 * 1024 });
      const r = await cli(['blk', 'verify', '--socket', qsd.socketPath, '--offset', '4096', '--length', '2097152', '--seed', '42', '--json']);
      expect(r.status, r.stderr).to.equal(0);
      expect(JSON.parse(r.stdout)).to.deep.include({ mismatches: 0, firstMismatch: null, seed: 42 });
      // Word 512 (byte 4096) holds 512 ^ 42 in its low half.
      expect(readImage(qsd.imagePath!, 4096, 4).readUInt32LE(0)).to.equal(512 ^ 42);
    });

    it('verify on null-co (reads return nothing written): exit 1, one VHOST_BLK_MISMATCH line', async () => {
      const qsd = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 16 * 1024 * 1024 });
      const r = await cli(['blk', 'verify', '--socket', qsd.socketPath, '--length', '65536', '--seed', '1']);
      expect(r.status).to.equal(1);
      expectOneErrorLine(r, 'VHOST_BLK_MISMATCH');
      expect(r.stdout).to.match(/bytes differ, first at 0/);
    });

    it('errors are one stderr line with the code: read-only, unaligned, beyond capacity, packed not offered', async () => {
      const ro = await startQemuStorageDaemon({ imageSize: 4 * 1024 * 1024, writable: false });
      const inFile = path.join(dir, 'in.bin');
      writeFileSync(inFile, pattern(4096, 1));
      const cases: [string[], string][] = [
        [['blk', 'write', '--socket', ro.socketPath, '--in', inFile], 'VHOST_BLK_READ_ONLY'],
        [['blk', 'read', '--socket', ro.socketPath, '--offset', '100', '--length', '512'], 'VHOST_BLK_UNALIGNED'],
        [['blk', 'read', '--socket', ro.socketPath, '--offset', String(4 * 1024 * 1024), '--length', '512'], 'VHOST_BLK_BEYOND_CAPACITY'],
        [['blk', 'info', '--socket', ro.socketPath, '--ring', 'packed'], 'VHOST_FEATURE_NOT_NEGOTIATED'],
        [['blk', 'info', '--socket', ro.socketPath, '--queues', '2'], 'VHOST_INVALID_ARGUMENT'],
      ];
      for (const [args, code] of cases) {
        const r = await cli(args);
        expect(r.status, args.join(' ')).to.equal(1);
        expectOneErrorLine(r, code);
      }
      expect(readImage(ro.imagePath!, 0, 4096).every((b) => b === 0)).to.equal(true);
    });
  });

  it('against the reference back-end with packed rings: verify, info', async () => {
    const ref = await startReferenceBackend({ device: 'blk', queues: 2 });
    const v = await cli(['blk', 'verify', '--socket', ref.socketPath, '--ring', 'packed', '--queues', '2', '--length', '1048576', '--json']);
    expect(v.status, v.stderr).to.equal(0);
    expect(JSON.parse(v.stdout)).to.deep.include({ mismatches: 0 });
    const i = await cli(['blk', 'info', '--socket', ref.socketPath, '--ring', 'packed', '--json']);
    expect(i.status, i.stderr).to.equal(0);
    expect(JSON.parse(i.stdout)).to.deep.include({ ring: 'packed', id: 'vhost-user-ref' });
  });

  it('a socket nobody listens on: one VHOST_CONNECT_TIMEOUT or VHOST_CONNECT_FAILED line within --timeout', async () => {
    const r = await cli(['blk', 'info', '--socket', path.join(dir, 'nobody.sock'), '--timeout', '300']);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/^vhost-user: VHOST_CONNECT_(TIMEOUT|FAILED)/);
    expect(r.stderr.split('\n').filter(Boolean)).to.have.length(1);
  });
});
