/**
 * QEMU 7.2 (TCG) as the front-end of the reference back-end (`vhost-user serve`):
 * the init conversation with no guest, a Linux guest doing net and blk I/O, and a
 * live migration between two reference back-ends. One boot per scenario: these
 * tests cost about 35 s together on two idle cores.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { isVhostUserError } from '../../lib/errors.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import {
  findExecutable,
  findKernel,
  makeTempDir,
  processGroupMembers,
  qemuAvailable,
  startQemu,
  startReferenceBackend,
  stopAll,
  type QemuProcess,
  type ReferenceBackendProcess,
} from '../../lib/launch/index.js';

/** The `serve --json` events of one kind. */
function eventsOf(b: ReferenceBackendProcess, name: string) {
  return b.events().filter((e) => e.event === name);
}

/** Waits until the back-end reports `count` events named `name`. */
async function waitEvents(b: ReferenceBackendProcess, name: string, count: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (eventsOf(b, name).length < count) {
    if (Date.now() > deadline) expect.fail(`no ${name} event from ${b.socketPath} in ${ms} ms; output:\n${b.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the guest's /init writes: the line `word\n` repeated, cut at `bytes`. */
function guestPattern(word: string, bytes: number): Buffer {
  const line = Buffer.from(`${word}\n`);
  const out = Buffer.alloc(bytes);
  for (let o = 0; o < bytes; o += line.length) line.copy(out, o);
  return out;
}

describe('launch/qemu: QEMU 7.2 against the reference back-end @integration', function () {
  this.timeout(60_000);
  const qemus: QemuProcess[] = [];
  const proxies: TraceProxy[] = [];
  const dirs: string[] = [];

  before(function () {
    if (!qemuAvailable()) {
      process.stdout.write('      skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)\n');
      this.skip();
    }
  });

  afterEach(async () => {
    // QEMU first (it is the client), then the back-ends.
    await Promise.all(qemus.splice(0).map((q) => q.stop()));
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    await stopAll();
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('no guest (-S): the init conversation with a net and a blk back-end succeeds; QMP errors are typed', async () => {
    const net = await startReferenceBackend({ device: 'net', queues: 2 });
    const blk = await startReferenceBackend({ device: 'blk', size: 16 << 20 });
    // Through the tracing proxy, to see QEMU's requests and the back-ends' answers.
    const dir = await makeTempDir('vhost-qemu-init-');
    dirs.push(dir);
    const pn = await TraceProxy.start({ listen: path.join(dir, 'net.sock'), connect: net.socketPath });
    const pb = await TraceProxy.start({ listen: path.join(dir, 'blk.sock'), connect: blk.socketPath });
    proxies.push(pn, pb);
    const q = await startQemu({ guest: 'none', net: [{ socket: pn.listenPath }], blk: [{ socket: pb.listenPath }] });
    qemus.push(q);
    expect(await q.status()).to.equal('prelaunch');
    // notes §9: QEMU 7.2's init, before any guest runs; every request that asks was answered.
    for (const [proxy, last] of [[pn, 'SET_VRING_ENABLE'], [pb, 'GET_CONFIG']] as const) {
      const deadline = Date.now() + 5000;
      while (!proxy.messages.some((m) => m.from === 'frontend' && m.request === last) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const sent = proxy.messages.filter((m) => m.from === 'frontend').map((m) => m.request);
      expect(sent.slice(0, 6), proxy.connectPath).to.deep.equal(['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'GET_MAX_MEM_SLOTS', 'SET_OWNER']);
      expect(sent).to.include.members(['SET_VRING_CALL', 'SET_VRING_ERR', last]);
      const asked = proxy.messages.filter((m) => m.from === 'frontend' && (m.request.startsWith('GET_') || m.needReply)).length;
      expect(proxy.messages.filter((m) => m.from === 'backend' && m.reply).length, `${proxy.connectPath}: one answer per question`).to.equal(asked);
    }
    const config = pb.messages.find((m) => m.from === 'backend' && m.request === 'GET_CONFIG')!;
    expect(config.size, 'GET_CONFIG answered with 57 bytes of config (12-byte header first)').to.equal(12 + 57);
    // vhost-user-blk realises the device with GET_CONFIG: QEMU would have exited on a bad answer.
    const devices = await q.virtioDevices();
    expect(devices.map((d) => d.name).sort()).to.deep.equal(['virtio-blk', 'virtio-net']);
    await waitEvents(net, 'connection', 1, 5000);
    await waitEvents(blk, 'connection', 1, 5000);
    const err = await q.qmp.execute('no-such-command').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.have.property('code', 'VHOST_QMP_ERROR');
    expect(err).to.have.property('errorClass', 'CommandNotFound');
    await q.stop();
    expect(q.running).to.equal(false);
    for (const b of [net, blk]) {
      await waitEvents(b, 'disconnect', 1, 5000);
      expect(eventsOf(b, 'violation'), b.output()).to.deep.equal([]);
      expect(eventsOf(b, 'refused'), b.output()).to.deep.equal([]);
      expect(eventsOf(b, 'disconnect')[0]!['reason']).to.equal(null);
    }
  });

  it('stop() stops a QEMU that no longer answers QMP (SIGSTOP): its process group is gone, its temp dir removed; a back-end nobody serves is VHOST_SPAWN_FAILED', async () => {
    const net = await startReferenceBackend({ device: 'net' });
    const q = await startQemu({ guest: 'none', net: [{ socket: net.socketPath }] });
    qemus.push(q);
    process.kill(q.pid, 'SIGSTOP');
    const t0 = Date.now();
    await q.stop(500);
    expect(Date.now() - t0).to.be.below(10_000);
    expect(processGroupMembers(q.process.pgid)).to.deep.equal([]);
    expect(existsSync(q.tempDir)).to.equal(false);
    const dir = await makeTempDir('vhost-qemu-none-');
    dirs.push(dir);
    const err = await startQemu({ guest: 'none', net: [{ socket: path.join(dir, 'nobody.sock') }] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_FAILED'), String(err)).to.equal(true);
    expect(String((err as Error).message)).to.match(/nobody\.sock/);
  });

  it('a Linux guest: frames sent on eth0 come back; data written to /dev/vda is read back and is in the image file', async function () {
    if (!findKernel() || !findExecutable('busybox')) {
      process.stdout.write('      skipped: needs /boot/vmlinuz-* and busybox (apt-get install linux-image-amd64 busybox-static)\n');
      this.skip();
    }
    const dir = await makeTempDir('vhost-qemu-img-');
    dirs.push(dir);
    const image = path.join(dir, 'disk.img');
    await writeFile(image, '');
    await truncate(image, 32 << 20);
    const net = await startReferenceBackend({ device: 'net', queues: 2 });
    const blk = await startReferenceBackend({ device: 'blk', image });
    const bytes = 1 << 20;
    const word = `vhu-${process.pid}-${Date.now()}`;
    const pings = 5;
    const q = await startQemu({
      guest: 'linux',
      net: [{ socket: net.socketPath }],
      blk: [{ socket: blk.socketPath }],
      guestArgs: { job: 'net,blk', count: pings, bytes, pattern: word },
    });
    qemus.push(q);
    const n = await q.guestResult('net', 45_000);
    // The reference back-end is a loopback: each frame the guest sends comes back to it.
    expect(n['tx_packets'], q.console()).to.be.at.least(pings);
    expect(n['rx_packets']).to.equal(n['tx_packets']);
    expect(n['rx_bytes']).to.equal(n['tx_bytes']);
    const b = await q.guestResult('blk', 20_000);
    const expected = guestPattern(word, bytes);
    const sha = createHash('sha256').update(expected).digest('hex');
    expect(b['written']).to.equal(sha);
    expect(b['read']).to.equal(sha);
    expect(b['sectors']).to.equal((32 << 20) / 512);
    await q.stop();
    await waitEvents(net, 'disconnect', 1, 5000);
    await waitEvents(blk, 'disconnect', 1, 5000);
    // The back-ends' own counters: the frames it looped, the writes it made.
    const netStats = eventsOf(net, 'disconnect')[0]!['stats'] as Record<string, number>;
    expect(netStats['frames']).to.be.at.least(Number(n['tx_packets']));
    const blkStats = eventsOf(blk, 'disconnect')[0]!['stats'] as Record<string, number>;
    expect(blkStats['writes']).to.be.above(0);
    expect(blkStats['errors']).to.equal(0);
    const onDisk = (await readFile(image)).subarray(0, bytes);
    expect(onDisk.equals(expected), 'the image file holds what the guest wrote').to.equal(true);
    for (const be of [net, blk]) expect(eventsOf(be, 'violation'), be.output()).to.deep.equal([]);
  });

  it('live-migrates an iPXE guest between two reference back-ends: the destination runs from the positions the source reported', async () => {
    const a = await startReferenceBackend({ device: 'net', queues: 2 });
    const b = await startReferenceBackend({ device: 'net', queues: 2 });
    const src = await startQemu({ guest: 'ipxe', net: [{ socket: a.socketPath }] });
    qemus.push(src);
    const dst = await startQemu({ guest: 'ipxe', incoming: true, net: [{ socket: b.socketPath }] });
    qemus.push(dst);
    const dev = (await src.virtioDevices())[0]!.path;
    await src.waitVhostStarted(dev, 20_000);
    // iPXE sends its first DHCPDISCOVER at once and retries after 1 s: give the rings some use.
    await new Promise((r) => setTimeout(r, 2000));
    const result = await src.migrate(dst, 30_000);
    expect(result.status).to.equal('completed');
    expect(await dst.status()).to.equal('running');
    expect(await src.status()).to.equal('postmigrate');
    // The source stopped its device (QEMU 7.2: SET_STATUS 0, then GET_VRING_BASE): QEMU now
    // holds what the back-end answered. It must be the guest's used index, not 0.
    const srcRx = await src.queueStatus(dev, 0);
    const srcTx = await src.queueStatus(dev, 1);
    expect(srcTx.usedIdx, 'iPXE sent frames before the migration').to.be.above(0);
    expect(srcTx.lastAvailIdx).to.equal(srcTx.usedIdx);
    expect(srcRx.lastAvailIdx).to.equal(srcRx.usedIdx);
    // The destination started its back-end from those positions (it refuses a ring whose position
    // is behind the guest's used index); stopping it now asks the destination back-end where it is.
    await dst.qmp.execute('stop');
    const dstTx = await dst.queueStatus(dev, 1);
    const dstRx = await dst.queueStatus(dev, 0);
    expect(dstTx.lastAvailIdx).to.be.at.least(srcTx.lastAvailIdx);
    expect(dstRx.lastAvailIdx).to.be.at.least(srcRx.lastAvailIdx);
    expect(dstTx.lastAvailIdx).to.equal(dstTx.usedIdx);
    for (const be of [a, b]) expect(eventsOf(be, 'violation'), be.output()).to.deep.equal([]);
    process.stdout.write(`      migration: total ${result.totalTimeMs} ms, downtime ${result.downtimeMs} ms; TX position ${srcTx.lastAvailIdx} -> ${dstTx.lastAvailIdx}\n`);
  });
});
