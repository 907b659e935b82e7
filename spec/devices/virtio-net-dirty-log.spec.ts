/**
 * Dirty logging from the driver's side (VirtioNet.startDirtyLog): the log the
 * back-end fills while traffic runs holds exactly the kind of pages a migration
 * must copy again: RX buffers and used rings, never the TX buffers the back-end
 * only reads. Against the reference back-end, and DPDK's vhost PMD when installed.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { RxBurst, VirtioNet, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { VhostUserError } from '../../lib/errors.js';
import { DirtyLog } from '../../lib/memory/dirty-log.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { buildUdpFrameOfSize } from '../../lib/net/frame-builder.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const PAGE = 4096;

/** Sends `count` frames and waits until they came back. */
async function loop(net: VirtioNet, count: number): Promise<number> {
  const burst = new RxBurst(64);
  let got = 0;
  let sent = 0;
  for (const deadline = Date.now() + 5000; got < count && Date.now() < deadline; await settle(1)) {
    if (sent < count) sent += net.sendBurst(Array.from({ length: Math.min(32, count - sent) }, (_, i) => buildUdpFrameOfSize(200, sent + i)));
    got += net.receiveBurst(0, burst);
  }
  return got;
}

function pagesOf(area: { gpa: number; length: number }): Set<number> {
  const s = new Set<number>();
  for (let p = Math.floor(area.gpa / PAGE); p <= Math.floor((area.gpa + area.length - 1) / PAGE); p++) s.add(p);
  return s;
}

function checkLog(net: VirtioNet, pages: number[]): void {
  const { tx, rx } = net.bufferAreas(0);
  const { rx: rxq, tx: txq } = net.queues(0);
  const rxPages = pagesOf(rx);
  const txPages = pagesOf(tx);
  expect(pages.length).to.be.above(0);
  expect(pages.some((p) => rxPages.has(p)), 'an RX buffer page').to.equal(true);
  expect(pages.filter((p) => txPages.has(p)), 'TX buffer pages (the back-end only reads them)').to.deep.equal([]);
  // Completions land in the used ring (split: its first page holds used.idx) or back in
  // the descriptor ring (packed: a page of it).
  const completionPages = (q: typeof rxq) => (q.packed ? pagesOf({ gpa: q.addresses.desc, length: 16 * q.size }) : new Set([Math.floor(q.addresses.device / PAGE)]));
  expect(pages.some((p) => completionPages(rxq).has(p)), 'an RX used ring page').to.equal(true);
  expect(pages.some((p) => completionPages(txq).has(p)), 'a TX used ring page').to.equal(true);
}

/**
 * A second view of the log the driver shares with SET_LOG_BASE, mapped from the same
 * memfd when it is handed over. The driver unmaps and closes its copy at
 * stopDirtyLog(), but the back-end keeps the log mapped (nothing revokes a log base),
 * so this view sees any bit a back-end still sets after logging was turned off.
 */
function shadowLog(net: VirtioNet, cleanups: (() => unknown)[]): { view: DirtyLog | null } {
  const shadow: { view: DirtyLog | null } = { view: null };
  const client = net.client;
  const setLogBase = client.setLogBase.bind(client);
  client.setLogBase = (fd, size, offset) => {
    shadow.view = DirtyLog.map(fd, size, offset ?? 0n, 'SET_LOG_BASE');
    const view = shadow.view;
    cleanups.push(() => view.close());
    return setLogBase(fd, size, offset);
  };
  return shadow;
}

/**
 * What "nothing logged after stop" takes: bits already set are gone (the final sync
 * returned them), then frames go round through the back-end, which writes RX buffers
 * and both used rings for each (the very pages it logged before), and still no bit
 * appears in the log it keeps mapped.
 */
async function expectNothingLoggedAfterStop(net: VirtioNet, view: DirtyLog): Promise<void> {
  expect(view.sync(), 'bits left after the final sync of stopDirtyLog').to.deep.equal([]);
  expect(await loop(net, 200), 'traffic goes on without logging').to.equal(200);
  expect(view.sync(), 'pages the back-end logged after stopDirtyLog').to.deep.equal([]);
}

describe('VirtioNet dirty logging (migration)', function () {
  this.timeout(60_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  let net: VirtioNet | null = null;
  const cleanups: (() => unknown)[] = [];
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    net?.close();
    net = null;
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  for (const ring of ['split', 'packed'] as RingKind[]) {
    it(`reference back-end, ${ring}: pages written while logging are in the log, none before or after`, async () => {
      const tmp = tempSocketPath();
      const backend = ReferenceBackend.listen(tmp.path, { device: 'net' });
      cleanups.push(() => tmp.cleanup(), () => backend.close());
      net = await VirtioNet.open(tmp.path, { ring });
      expect(net.canLogDirty).to.equal(true);
      const shadow = shadowLog(net, cleanups);
      expect(await loop(net, 100)).to.equal(100); // before logging: nothing recorded anywhere
      await net.startDirtyLog();
      expect(net.isLoggingDirty).to.equal(true);
      expect(net.syncDirtyLog(), 'nothing written since the log started').to.deep.equal([]);
      expect(await loop(net, 300)).to.equal(300);
      checkLog(net, net.syncDirtyLog());
      expect(net.syncDirtyLog(), 'bits are cleared by a sync').to.deep.equal([]);
      // The view sees what the driver sees (so its silence after the stop means something).
      expect(await loop(net, 50)).to.equal(50);
      checkLog(net, shadow.view!.sync());
      expect(await loop(net, 50)).to.equal(50);
      const last = await net.stopDirtyLog();
      checkLog(net, last);
      expect(net.isLoggingDirty).to.equal(false);
      await expectNothingLoggedAfterStop(net, shadow.view!);
      expect(() => net!.syncDirtyLog()).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_STATE');
    });
  }

  it('refuses to start without VHOST_F_LOG_ALL and LOG_SHMFD, saying so', async () => {
    const tmp = tempSocketPath();
    const backend = ReferenceBackend.listen(tmp.path, { device: 'net' });
    cleanups.push(() => tmp.cleanup(), () => backend.close());
    const { SUPPORTED_PROTOCOL_FEATURES } = await import('../../lib/client/vhost-user-client.js');
    const { VhostUserClient } = await import('../../lib/client/vhost-user-client.js');
    const { bit, ProtocolFeature } = await import('../../lib/protocol/constants.js');
    const client = await VhostUserClient.connect(tmp.path);
    const negotiate = client.negotiate.bind(client);
    client.negotiate = (o) => negotiate({ ...o, protocolFeatures: SUPPORTED_PROTOCOL_FEATURES & ~bit(ProtocolFeature.LOG_SHMFD) });
    const n = await VirtioNet.open(client);
    cleanups.push(() => n.close());
    expect(n.canLogDirty).to.equal(false);
    const err = await n.startDirtyLog().then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(VhostUserError).with.property('code', 'VHOST_FEATURE_NOT_NEGOTIATED');
  });

  describe('@integration dpdk-testpmd', () => {
    let pmd: TestpmdBackend | null = null;
    before(function () {
      skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    });
    afterEach(async () => {
      net?.close();
      net = null;
      await pmd?.stop();
      pmd = null;
    });
    it('io forwarding: the log holds RX buffer and used-ring pages, no TX buffer page; nothing is logged after stop', async () => {
      pmd = await startTestpmd({ forwardMode: 'io' });
      net = await VirtioNet.open(pmd.socketPath, { timeoutMs: 5000 });
      const shadow = shadowLog(net, cleanups);
      expect(net.canLogDirty).to.equal(true);
      expect(await loop(net, 100)).to.equal(100);
      await net.startDirtyLog();
      expect(await loop(net, 300)).to.equal(300);
      checkLog(net, net.syncDirtyLog());
      expect(await loop(net, 50)).to.equal(50);
      checkLog(net, shadow.view!.sync());
      expect(await loop(net, 50)).to.equal(50);
      checkLog(net, await net.stopDirtyLog());
      await expectNothingLoggedAfterStop(net, shadow.view!);
    });
  });
});
