/**
 * `vhost-user net send` / `net recv` end to end, as child processes against a
 * real dpdk-testpmd; the back-end's own port counters say what really moved.
 */
import { expect } from 'chai';
import { memfs } from 'memfs';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { buildUdpFrameOfSize } from '../../lib/net/frame-builder.js';
import { PcapWriter } from '../../lib/pcap/pcap-writer.js';
import { readPcapFrames } from '../../lib/pcap/pcap-reader.js';
import { skipWithout } from '../helpers/backends.js';
import { main } from '../../lib/cli/main.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';

describe('cli net send / net recv against dpdk-testpmd @integration', function () {
  this.timeout(60_000);
  let backend: TestpmdBackend | null = null;
  let dir: string;

  before(function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
  });
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vhost-net-cli-'));
  });
  afterEach(async () => {
    await backend?.stop();
    backend = null;
    rmSync(dir, { recursive: true, force: true });
  });

  it('net send: exits 0 once the back-end consumed every frame, and the back-end counted them all', async () => {
    backend = await startTestpmd({ queues: 1, forwardMode: 'rxonly', interactive: true });
    await backend.startForwarding();
    const r = await cli(['net', 'send', '--socket', backend.socketPath, '--count', '20000', '--size', '128', '--json']);
    expect(r.status, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { frames: number; bytes: number; mpps: number };
    expect(out.frames).to.equal(20000);
    expect(out.bytes).to.equal(20000 * 128);
    expect(out.mpps).to.be.greaterThan(0);
    const stats = await backend.portStats();
    expect(stats.rxPackets).to.equal(20000);
    expect(stats.rxBytes).to.equal(20000 * 128);
  });

  it('net send --pcap: the frames of a capture go out as they are', async () => {
    backend = await startTestpmd({ queues: 1, forwardMode: 'rxonly', interactive: true });
    await backend.startForwarding();
    const file = path.join(dir, 'in.pcap');
    const w = await PcapWriter.open(file);
    const sizes = [60, 61, 200, 1000, 1514];
    for (let i = 0; i < sizes.length; i++) w.write(buildUdpFrameOfSize(sizes[i]!, i));
    await w.close();
    const r = await cli(['net', 'send', '--socket', backend.socketPath, '--pcap', file]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^sent 5 frames, 2835 bytes in [\d.]+ s: [\d.]+ Mpps, [\d.]+ Gbit\/s\n$/);
    const stats = await backend.portStats();
    expect(stats.rxPackets).to.equal(5);
    expect(stats.rxBytes).to.equal(2835);
  });

  it('net recv: writes what the back-end transmitted to a pcap file that tshark reads', async () => {
    backend = await startTestpmd({ queues: 1, forwardMode: 'txonly', extraArgs: ['--txpkts=96'] });
    const file = path.join(dir, 'out.pcap');
    const r = await cli(['net', 'recv', '--socket', backend.socketPath, '--count', '3000', '--pcap', file, '--json']);
    expect(r.status, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ frames: 3000, bytes: 3000 * 96 });
    const frames = readPcapFrames(file);
    expect(frames).to.have.length(3000);
    expect(new Set(frames.map((f) => f.length))).to.deep.equal(new Set([96]));
    if (findExecutable('tshark')) {
      const lens = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.len'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .trim()
        .split('\n');
      expect(lens).to.have.length(3000);
      expect(new Set(lens)).to.deep.equal(new Set(['96']));
    }
  });

  it('in-process on memfs: net send --pcap reads the capture from it, net recv --pcap writes there, nothing on disk', async () => {
    const { fs } = memfs({ '/captures': null });
    let err = '';
    const io = { stdout: () => {}, stderr: (t: string) => void (err += t), fs };
    const w = await PcapWriter.open('/captures/in.pcap', { fs });
    const sizes = [60, 61, 200, 1000, 1514];
    for (let i = 0; i < sizes.length; i++) w.write(buildUdpFrameOfSize(sizes[i]!, i));
    await w.close();
    backend = await startTestpmd({ queues: 1, forwardMode: 'rxonly', interactive: true });
    await backend.startForwarding();
    expect(await main(['net', 'send', '--socket', backend.socketPath, '--pcap', '/captures/in.pcap'], io), err).to.equal(0);
    expect(await backend.portStats()).to.include({ rxPackets: 5, rxBytes: 2835 });
    await backend.stop();

    backend = await startTestpmd({ queues: 1, forwardMode: 'txonly', extraArgs: ['--txpkts=96'] });
    expect(await main(['net', 'recv', '--socket', backend.socketPath, '--count', '500', '--pcap', '/captures/out.pcap'], io), err).to.equal(0);
    const frames = readPcapFrames('/captures/out.pcap', { fs });
    expect(frames).to.have.length(500);
    expect(new Set(frames.map((f) => f.length))).to.deep.equal(new Set([96]));
    expect(existsSync('/captures')).to.equal(false);
  });

  it('net recv: a back-end that sends nothing ends in VHOST_TIMEOUT within --timeout, one stderr line', async () => {
    backend = await startTestpmd({ queues: 1, forwardMode: 'rxonly' });
    const r = await cli(['net', 'recv', '--socket', backend.socketPath, '--count', '10', '--timeout', '1500']);
    expect(r.status).to.equal(1);
    expectOneErrorLine(r, 'VHOST_TIMEOUT');
    expect(r.ms).to.be.below(8000);
  });

  it('--help documents every option', async () => {
    for (const cmd of ['send', 'recv']) {
      const r = await cli(['net', cmd, '--help']);
      expect(r.status).to.equal(0);
      for (const opt of ['--socket PATH', '--count N', '--pcap', '--queues Q', '--json', '--ring']) expect(r.stdout).to.contain(opt);
    }
  });
});
