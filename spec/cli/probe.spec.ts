/**
 * `vhost-user probe` end to end: the built CLI runs as a child process against
 * real back-ends (started with lib/launch) and against scripted peers in this
 * process that answer wrongly or not at all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startQemuStorageDaemon, startTestpmd, type BackendHandle } from '../../lib/launch/index.js';
import { bit, FrontendRequest, VirtioFeature } from '../../lib/protocol/constants.js';
import { U64 } from '../../lib/protocol/payloads.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { skipWithout } from '../helpers/backends.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';

/** What `probe --json` prints (the fields these tests read). */
interface ProbeJson {
  socket: string;
  device: string;
  features: string;
  featureNames: string[];
  protocolFeatures: string;
  protocolFeatureNames: string[];
  negotiatedProtocolFeatures: string;
  negotiatedProtocolFeatureNames: string[];
  maxMemSlots: number | null;
  queueNum: number;
  config: { capacity: number; capacityBytes: number } | null;
}

describe('cli probe (child process)', function () {
  this.timeout(30_000);
  let peer: RawPeer | undefined;
  afterEach(() => {
    peer?.close();
    peer = undefined;
  });

  it('--help exits 0 and lists the options; an unknown option exits 2', async () => {
    const help = await cli(['probe', '--help']);
    expect(help.status).to.equal(0);
    for (const opt of ['--socket PATH', '--device net|blk', '--json', '--timeout MS']) expect(help.stdout).to.contain(opt);
    const bad = await cli(['probe', '--socket', '/nonexistent.sock', '--frobnicate']);
    expect(bad.status).to.equal(2);
    expect(bad.stdout).to.equal('');
    expectOneErrorLine(bad, 'VHOST_INVALID_ARGUMENT');
    expect(bad.stderr).to.contain('--frobnicate');
  });

  it('gives up on a socket nobody listens on within the --timeout, with one line', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-cli-test-'));
    try {
      const r = await cli(['probe', '--socket', path.join(dir, 'nobody.sock'), '--timeout', '300']);
      expect(r.status).to.equal(1);
      expect(r.ms).to.be.below(2000);
      expect(r.stdout).to.equal('');
      expectOneErrorLine(r, 'VHOST_CONNECT_TIMEOUT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails fast on a GET_FEATURES reply without the REPLY flag (VHOST_BAD_REPLY_FLAGS)', async () => {
    const features = bit(VirtioFeature.VIRTIO_F_VERSION_1);
    peer = RawPeer.start((m, p) => {
      if (m.request === FrontendRequest.GET_FEATURES) p.reply(m, U64.encode(features), 0x1);
    });
    const r = await cli(['probe', '--socket', peer.path, '--json']);
    expect(r.status).to.equal(1);
    expect(r.ms).to.be.below(2000);
    expect(r.stdout).to.equal('');
    expectOneErrorLine(r, 'VHOST_BAD_REPLY_FLAGS');
    expect(r.stderr).to.contain('[GET_FEATURES]');
  });

  it('applies --timeout to each reply: a back-end that never answers', async () => {
    peer = RawPeer.start(() => undefined);
    const r = await cli(['probe', '--socket', peer.path, '--timeout', '300']);
    expect(r.status).to.equal(1);
    expect(r.ms).to.be.below(2000);
    expectOneErrorLine(r, 'VHOST_TIMEOUT');
    expect(peer.log.map((m) => m.request)).to.deep.equal([FrontendRequest.GET_FEATURES]);
  });
});

describe('cli probe against qemu-storage-daemon @integration', function () {
  this.timeout(30_000);
  let backend: BackendHandle | undefined;
  before(function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
  });
  afterEach(async () => {
    await backend?.stop();
    backend = undefined;
  });

  it('--json --device blk: capacity in sectors, CONFIG and REPLY_ACK offered, memory slots', async () => {
    backend = await startQemuStorageDaemon({ imageSize: 64 * 1024 * 1024 });
    const r = await cli(['probe', '--socket', backend.socketPath, '--json', '--device', 'blk']);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.equal('');
    const report = JSON.parse(r.stdout) as ProbeJson;
    expect(report.socket).to.equal(backend.socketPath);
    expect(report.device).to.equal('blk');
    expect(report.features).to.match(/^0x[0-9a-f]{16}$/);
    expect(report.featureNames).to.include.members(['VIRTIO_F_VERSION_1', 'VHOST_USER_F_PROTOCOL_FEATURES', 'VIRTIO_BLK_F_FLUSH']);
    expect(report.protocolFeatures).to.match(/^0x[0-9a-f]{16}$/);
    expect(report.protocolFeatureNames).to.include.members(['CONFIG', 'REPLY_ACK', 'CONFIGURE_MEM_SLOTS']);
    expect(report.negotiatedProtocolFeatureNames).to.include.members(['CONFIG', 'REPLY_ACK']);
    expect(BigInt(report.negotiatedProtocolFeatures) & ~BigInt(report.protocolFeatures)).to.equal(0n);
    expect(report.maxMemSlots).to.be.a('number');
    expect(report.queueNum).to.be.a('number');
    expect(report.config?.capacity).to.equal(131072);
    expect(report.config?.capacityBytes).to.equal(64 * 1024 * 1024);
  });

  it('text output names blk features and shows the decoded config', async () => {
    backend = await startQemuStorageDaemon({ imageSize: 1024 * 1024 });
    const r = await cli(['probe', '--socket', backend.socketPath, '--device', 'blk']);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^features: +0x[0-9a-f]{16} .*VIRTIO_BLK_F_FLUSH.*VIRTIO_F_VERSION_1/m);
    expect(r.stdout).to.match(/^protocol offered: +0x[0-9a-f]{16} .*REPLY_ACK/m);
    expect(r.stdout).to.match(/^config \(blk\):\n {2}capacity: +2048$/m);
  });
});

describe('cli probe against dpdk-testpmd @integration', function () {
  this.timeout(40_000);
  let backend: BackendHandle | undefined;
  before(function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk');
  });
  afterEach(async () => {
    await backend?.stop();
    backend = undefined;
  });

  it('--json --device net: VERSION_1, REPLY_ACK and MQ, no config (DPDK does not offer CONFIG)', async () => {
    backend = await startTestpmd();
    const r = await cli(['probe', '--socket', backend.socketPath, '--json', '--device', 'net']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as ProbeJson;
    expect(report.featureNames).to.include.members(['VIRTIO_F_VERSION_1', 'VIRTIO_NET_F_MRG_RXBUF']);
    expect(report.protocolFeatureNames).to.include.members(['REPLY_ACK', 'MQ']);
    expect(report.protocolFeatureNames).not.to.include('CONFIG');
    expect(report.config).to.equal(null);
    expect(report.queueNum).to.be.a('number');
    expect(report.maxMemSlots).to.equal(null);
  });
});
