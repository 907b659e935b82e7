import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { memfs } from 'memfs';
import type { CliIo } from '../../lib/cli/command.js';
import { main } from '../../lib/cli/main.js';
import { VirtioNet, RxBurst } from '../../lib/devices/net/virtio-net.js';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import { readPcapFrames } from '../../lib/pcap/pcap-reader.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

function captureIo(): CliIo & { out: string; err: string } {
  const io = { out: '', err: '', stdout: (t: string) => void (io.out += t), stderr: (t: string) => void (io.err += t) };
  return io;
}

describe('cli demo and serve', function () {
  this.timeout(30000);

  for (const ring of ['split', 'packed']) {
    it(`demo --frames 3000 --json (${ring}) exits 0 with every frame back, in-process, without leaks`, async () => {
      const snap = resourceSnapshot();
      const io = captureIo();
      const status = await main(['demo', '--frames', '3000', '--size', '128', '--queues', '2', '--ring', ring, '--json'], io);
      expect(io.err).to.equal('');
      expect(status).to.equal(0);
      const r = JSON.parse(io.out) as Record<string, unknown>;
      expect(r.ok).to.equal(true);
      expect(r.ring).to.equal(ring);
      expect(r.queuePairs).to.equal(2);
      expect(r.tx).to.deep.equal({ frames: 3000, bytes: 3000 * 128 });
      expect(r.rx).to.deep.equal({ frames: 3000, bytes: 3000 * 128 });
      expect(r.backend).to.deep.include({ frames: 3000, bytes: 3000 * 128, txErrors: 0 });
      expect([r.lost, r.corrupt, r.duplicates]).to.deep.equal([0, 0, 0]);
      expect(r.violations).to.deep.equal([]);
      expect(r.features).to.include.members(['VIRTIO_F_VERSION_1', 'VHOST_USER_F_PROTOCOL_FEATURES', 'VIRTIO_NET_F_MQ']);
      if (ring === 'packed') expect(r.features).to.include('VIRTIO_F_RING_PACKED');
      expect(r.protocolFeatures).to.include.members(['MQ', 'REPLY_ACK', 'CONFIG', 'STATUS']);
      expect(r.mpps).to.be.greaterThan(0);
      await settle(10);
      expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
    });
  }

  it('demo as a child process: default 10000 frames, text output, exit 0', async () => {
    const r = await cli(['demo']);
    expect(r.stderr).to.equal('');
    expect(r.status).to.equal(0);
    expect(r.stdout).to.match(/sent 10000 frames, 640000 bytes; received 10000 frames, 640000 bytes/);
    expect(r.stdout).to.match(/lost 0, corrupt 0, duplicated 0/);
    expect(r.stdout).to.match(/^features: .*VIRTIO_F_VERSION_1/m);
    expect(r.stdout).to.match(/OK: every frame came back intact/);
  });

  it('demo --pcap OUT: every frame that came back is in the capture, intact', async () => {
    const tmp = tempSocketPath('frames.pcap');
    try {
      const r = await cli(['demo', '--frames', '500', '--size', '300', '--pcap', tmp.path, '--json']);
      expect(r.status, r.stderr).to.equal(0);
      expect(JSON.parse(r.stdout)).to.include({ ok: true, pcap: tmp.path });
      const frames = readPcapFrames(tmp.path);
      expect(frames).to.have.length(500);
      expect(frames.every((f) => f.length === 300 && framePayloadIntact(f))).to.equal(true);
      expect(new Set(frames.map((f) => frameSequence(f))).size).to.equal(500);
    } finally {
      tmp.cleanup();
    }
  });

  it('demo --pcap OUT, in-process on memfs: the capture is written to the file system given, not to disk', async () => {
    const { fs } = memfs({ '/captures': null });
    const io = Object.assign(captureIo(), { fs });
    const status = await main(['demo', '--frames', '200', '--size', '100', '--pcap', '/captures/demo.pcap', '--json'], io);
    expect(status, io.err).to.equal(0);
    expect(existsSync('/captures/demo.pcap')).to.equal(false);
    const frames = readPcapFrames('/captures/demo.pcap', { fs });
    expect(frames).to.have.length(200);
    expect(frames.every((f) => f.length === 100 && framePayloadIntact(f))).to.equal(true);
    expect(new Set(frames.map((f) => frameSequence(f))).size).to.equal(200);
    // A directory that does not exist there: one error line, exit 1, no back-end or fd left open.
    const snap = resourceSnapshot();
    const bad = Object.assign(captureIo(), { fs });
    expect(await main(['demo', '--frames', '10', '--pcap', '/nowhere/demo.pcap'], bad)).to.equal(1);
    expect(bad.err).to.match(/^vhost-user: VHOST_SYSCALL.*cannot create pcap file \/nowhere\/demo\.pcap.*ENOENT/);
    await settle(10);
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('serve --json: reports connections and stops cleanly on SIGTERM with exit 0', async () => {
    const tmp = tempSocketPath();
    const MAIN = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
    const child = spawn(process.execPath, [MAIN, 'serve', '--socket', tmp.path, '--device', 'net', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      for (let i = 0; i < 200 && !out.includes('"listening"'); i++) await settle(25);
      expect(existsSync(tmp.path)).to.equal(true);
      for (let round = 0; round < 2; round++) {
        const net = await VirtioNet.open(tmp.path);
        const frames = Array.from({ length: 20 }, (_, i) => buildUdpFrameOfSize(100, i));
        net.sendBurst(frames);
        const burst = new RxBurst(64);
        let got = 0;
        for (let i = 0; i < 200 && got < 20; i++) {
          await settle(5);
          const n = net.receiveBurst(0, burst);
          for (let k = 0; k < n; k++) expect(framePayloadIntact(burst.frame(k))).to.equal(true);
          got += n;
        }
        expect(got).to.equal(20);
        net.close();
      }
      for (let i = 0; i < 100 && (out.match(/"disconnect"/g) ?? []).length < 2; i++) await settle(20);
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
      expect(err).to.equal('');
      const events = out.trim().split('\n').map((l) => JSON.parse(l) as { event: string; [k: string]: unknown });
      expect(events.map((e) => e.event)).to.deep.equal(['listening', 'connection', 'disconnect', 'connection', 'disconnect', 'stopped']);
      expect(events[2]).to.deep.include({ connection: 1, reason: null });
      expect(events[5]).to.deep.include({ signal: 'SIGTERM', connections: 2 });
      expect(existsSync(tmp.path)).to.equal(false);
    } finally {
      child.kill('SIGKILL');
      tmp.cleanup();
    }
  });

  it('serve --device blk rejects a missing image with one VHOST_INVALID_ARGUMENT line, exit 1', async () => {
    const r = await cli(['serve', '--socket', '/tmp/nonexistent-dir-xyz/s.sock', '--device', 'blk', '--image', '/nonexistent/image']);
    expect(r.status).to.equal(1);
    expectOneErrorLine(r, 'VHOST_INVALID_ARGUMENT');
  });
});
