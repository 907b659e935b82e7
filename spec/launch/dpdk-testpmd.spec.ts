import { existsSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { skipWithout } from '../helpers/backends.js';
import { isVhostUserError } from '../../lib/errors.js';
import {
  dpdkRuntimeDir,
  makeTempDir,
  parsePortStats,
  spawnBackend,
  startTestpmd,
  stopAll,
} from '../../lib/launch/index.js';
import { expectGone, expectRemoved, rejectionOf, tmpEntries } from './helpers.js';

const ZERO_STATS = {
  rxPackets: 0,
  rxBytes: 0,
  rxMissed: 0,
  rxErrors: 0,
  rxNombuf: 0,
  txPackets: 0,
  txBytes: 0,
  txErrors: 0,
};

describe('launch/dpdk-testpmd parsePortStats', () => {
  it('reads testpmd 22.11 `show port stats` output', () => {
    const text = [
      '  ######################## NIC statistics for port 0  ########################',
      '  RX-packets: 12         RX-missed: 1          RX-bytes:  768',
      '  RX-errors: 2',
      '  RX-nombuf:  3         ',
      '  TX-packets: 40         TX-errors: 4          TX-bytes:  2560',
      '  Throughput (since last show)',
      '  Rx-pps:            0          Rx-bps:            0',
    ].join('\n');
    expect(parsePortStats(text)).to.deep.equal({
      rxPackets: 12,
      rxMissed: 1,
      rxBytes: 768,
      rxErrors: 2,
      rxNombuf: 3,
      txPackets: 40,
      txErrors: 4,
      txBytes: 2560,
    });
  });

  it('returns undefined for other output', () => {
    expect(parsePortStats('Invalid port 7')).to.equal(undefined);
  });
});

describe('launch/dpdk-testpmd @integration', function () {
  this.timeout(30_000);
  const extraDirs: string[] = [];

  before(function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
  });

  afterEach(async () => {
    await stopAll();
    await Promise.all(extraDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('server mode: the socket appears; stop() kills by pid and removes temp and runtime dirs', async () => {
    const b = await startTestpmd();
    expect(statSync(b.socketPath).isSocket()).to.equal(true);
    expect(readlinkSync(`/proc/${b.pid}/exe`)).to.match(/dpdk-testpmd$/);
    expect(path.dirname(b.socketPath)).to.equal(b.tempDir);
    expect(b.args).to.include(`--file-prefix=${b.filePrefix}`);
    expect(existsSync(dpdkRuntimeDir(b.filePrefix))).to.equal(true);
    expect(b.output()).to.contain('EAL:');
    await rejectionOf(b.portStats()).then((e) => expect(isVhostUserError(e, 'VHOST_INVALID_STATE')).to.equal(true));

    await b.stop();
    expectGone(b.pid);
    expectRemoved(b.tempDir);
    expectRemoved(dpdkRuntimeDir(b.filePrefix));
  });

  it('interactive: portStats() is all zeros before traffic; forwarding starts and stops', async () => {
    const b = await startTestpmd({ interactive: true, forwardMode: 'io' });
    expect(statSync(b.socketPath).isSocket()).to.equal(true);
    expect(await b.portStats()).to.deep.equal(ZERO_STATS);
    await b.startForwarding();
    expect(await b.command('start')).to.contain('already started');
    expect(await b.stopForwarding()).to.contain('Forward statistics for port 0');
    await b.clearPortStats();
    const [s1, s2] = await Promise.all([b.portStats(), b.portStats()]);
    expect(s1).to.deep.equal(ZERO_STATS);
    expect(s2).to.deep.equal(ZERO_STATS);
    expect(await b.command('show config fwd')).to.contain('io packet forwarding');
    await b.stop();
    expectGone(b.pid);
    expectRemoved(b.tempDir);
  });

  it('interactive with queues=2 configures two queue pairs', async () => {
    const b = await startTestpmd({ interactive: true, queues: 2 });
    const info = await b.command('show port info 0');
    expect(info).to.match(/Current number of RX queues: 2/);
    expect(info).to.match(/Current number of TX queues: 2/);
  });

  it('client mode connects to a socket the caller listens on', async () => {
    const dir = await makeTempDir();
    extraDirs.push(dir);
    const socketPath = path.join(dir, 'frontend.sock');
    const server = net.createServer();
    const connected = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      const b = await startTestpmd({ client: true, socketPath });
      expect(b.tempDir).to.not.equal(dir);
      const sock = await Promise.race([
        connected,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`testpmd did not connect; output:\n${b.output()}`)), 10_000),
        ),
      ]);
      sock.destroy();
      await b.stop();
      expectGone(b.pid);
      expectRemoved(b.tempDir);
    } finally {
      server.close();
    }
  });

  it('interactive client mode: connects, then answers at the prompt', async () => {
    const dir = await makeTempDir();
    extraDirs.push(dir);
    const socketPath = path.join(dir, 'frontend.sock');
    const server = net.createServer();
    const connected = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    try {
      const b = await startTestpmd({ client: true, interactive: true, socketPath });
      const sock = await connected;
      expect(await b.portStats()).to.deep.equal(ZERO_STATS);
      sock.destroy();
    } finally {
      server.close();
    }
  });

  it("counts real traffic from DPDK's virtio-user frontend", async () => {
    const b = await startTestpmd({ interactive: true, autoStart: true });
    const tempDir = await makeTempDir('vhost-virtio-user-');
    const prefix = `${b.filePrefix}-fe`;
    await spawnBackend({
      command: 'dpdk-testpmd',
      args: [
        '--no-huge', '-m', '1024', '--no-pci', `--file-prefix=${prefix}`, '--main-lcore', '1', '-l', '0,1',
        '--vdev', `net_virtio_user0,path=${b.socketPath},queues=1`,
        '--', '--total-num-mbufs=8192', '--forward-mode=txonly', '--txpkts=64',
      ],
      socketPath: path.join(tempDir, 'unused.sock'),
      tempDir,
      stdin: 'pipe',
      lineBuffered: true,
      mergeStderr: true,
      cleanupPaths: [dpdkRuntimeDir(prefix)],
      ready: (p) => p.output().includes('Press enter to exit'),
      readyLabel: 'virtio-user forwarding',
    });
    // Until the back-end has counted a thousand frames: then it has been forwarding (rxonly) for a
    // while, which is what makes its tx-packets of 0 mean something.
    let s = await b.portStats();
    for (const deadline = Date.now() + 10_000; s.rxPackets <= 1000 && Date.now() < deadline; s = await b.portStats()) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(s.rxPackets).to.be.above(1000);
    expect(s.rxBytes).to.be.at.least(s.rxPackets * 60);
    expect(s.txPackets).to.equal(0);
  });

  it('two back-ends run side by side with distinct sockets and file prefixes', async () => {
    const [a, b] = await Promise.all([startTestpmd(), startTestpmd()]);
    expect(a.socketPath).to.not.equal(b.socketPath);
    expect(a.filePrefix).to.not.equal(b.filePrefix);
    expect(a.running && b.running).to.equal(true);
  });

  it('fails fast with VHOST_SPAWN_FAILED and the EAL error when memory is too small', async () => {
    const runtimeRoot = path.dirname(dpdkRuntimeDir('x'));
    const runtimeBefore = new Set(existsSync(runtimeRoot) ? readdirSync(runtimeRoot) : []);
    const before = await tmpEntries('vhost-testpmd-');
    const t0 = Date.now();
    const err = await rejectionOf(startTestpmd({ memoryMb: 16 }));
    expect(isVhostUserError(err, 'VHOST_SPAWN_FAILED'), String(err)).to.equal(true);
    expect((err as Error).message).to.contain('Cannot allocate memory');
    expect(Date.now() - t0).to.be.below(10_000);
    expect([...(await tmpEntries('vhost-testpmd-'))].filter((n) => !before.has(n))).to.deep.equal([]);
    const runtimeAfter = existsSync(runtimeRoot) ? readdirSync(runtimeRoot) : [];
    expect(runtimeAfter.filter((n) => !runtimeBefore.has(n))).to.deep.equal([]);
  });

  it('rejects a socket path with a comma', async () => {
    const err = await rejectionOf(startTestpmd({ socketPath: '/tmp/a,b.sock' }));
    expect(isVhostUserError(err, 'VHOST_INVALID_ARGUMENT')).to.equal(true);
  });
});
