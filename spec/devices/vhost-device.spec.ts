/**
 * The device layer (VhostDevice) through a minimal device of this file's own:
 * one ring carrying virtio-blk requests (§5.2.6) to the in-process reference
 * back-end, so every start is checked by bytes that come back. The inflight
 * area is observed on a scripted peer, since no back-end here offers
 * INFLIGHT_SHMFD yet.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import type { TraceEvent } from '../../lib/client/trace.js';
import { VhostDevice, type DeviceReconnectReport, type FeatureWishes, type VhostDeviceHooks, type VhostDeviceOptions } from '../../lib/devices/vhost-device.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import { bit, DeviceStatus, FrontendRequest as R, ProtocolFeature, VirtioBlkFeature, VirtioFeature } from '../../lib/protocol/constants.js';
import { Inflight, U64, VringState } from '../../lib/protocol/payloads.js';
import type { VhostUserMessage } from '../../lib/transport/connection.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { expectRejectCode, leakedAfter, resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const BLK_T_IN = 0;
const BLK_T_OUT = 1;
const SIZE = 64;
const DATA = 64 * 1024;

/**
 * The smallest device: one ring, one request at a time, header at dataGpa, data
 * one page later, status byte after the data. What a third device adds to the
 * layer: its wishes, its plan, its requests.
 */
class OneRing {
  private readonly tokens = new Uint32Array(SIZE);
  private readonly lengths = new Uint32Array(SIZE);
  private next = 0;

  private constructor(readonly dev: VhostDevice) {}

  static async open(
    target: string,
    options: VhostDeviceOptions = {},
    wishes: FeatureWishes = { wanted: bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) },
    hooks?: VhostDeviceHooks,
  ): Promise<OneRing> {
    const dev = await VhostDevice.open(target, options);
    try {
      dev.selectFeatures(wishes);
      dev.allocate({ count: 1, size: SIZE, dataBytes: DATA });
      await dev.start(hooks);
      return new OneRing(dev);
    } catch (e) {
      dev.close();
      throw e;
    }
  }

  /** One read or write of `data.length` bytes at `sector`; returns the status byte and, for a read, the bytes. */
  async request(type: number, sector: number, data: Uint8Array): Promise<{ status: number; bytes: Uint8Array; used: number }> {
    const { vq, kick } = this.dev.queues[0]!;
    const mem = this.dev.memory;
    const hdr = this.dev.dataGpa;
    const buf = hdr + 4096;
    const status = buf + data.length;
    const h = new DataView(mem.bytes(hdr, 16).buffer, mem.bytes(hdr, 16).byteOffset, 16);
    h.setUint32(0, type, true);
    h.setUint32(4, 0, true);
    h.setBigUint64(8, BigInt(sector), true);
    mem.bytes(status, 1)[0] = 0xff;
    if (type === BLK_T_OUT) mem.bytes(buf, data.length).set(data);
    else mem.bytes(buf, data.length).fill(0);
    const token = this.next++;
    const ok = vq.addChain([hdr, buf, status], [16, data.length, 1], 3, type === BLK_T_OUT ? 2 : 1, token);
    expect(ok, 'room in the ring').to.equal(true);
    if (vq.publish()) kick.signal();
    const deadline = Date.now() + 3000;
    for (;;) {
      const n = vq.reap(this.tokens, this.lengths, SIZE);
      if (n > 0) {
        expect(n).to.equal(1);
        expect(this.tokens[0]).to.equal(token);
        return { status: mem.bytes(status, 1)[0]!, bytes: mem.read(buf, data.length), used: this.lengths[0]! };
      }
      if (Date.now() > deadline) throw new Error('the request was not completed within 3 s');
      await settle(2);
    }
  }

  /** Writes a pattern at `sector` and reads it back: the rings, memory and table work end to end. */
  async roundTrip(sector: number, seed: number): Promise<void> {
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + seed) & 0xff);
    expect((await this.request(BLK_T_OUT, sector, data)).status, 'write status').to.equal(0);
    const r = await this.request(BLK_T_IN, sector, new Uint8Array(4096));
    expect(r.status, 'read status').to.equal(0);
    expect(r.used, 'used length: data and status').to.equal(4097);
    expect(Buffer.from(r.bytes).equals(Buffer.from(data)), 'the bytes read are the bytes written').to.equal(true);
  }

  close(): void {
    this.dev.close();
  }
}

function names(trace: TraceEvent[]): string[] {
  return trace.filter((e) => e.direction === 'send' && e.channel === 'frontend').map((e) => e.request);
}

/** A scripted back-end that allocates an inflight area like libvhost-user and marks it, so a later peer can recognise it. */
const MARK = 0x5a17n;
function inflightPeer(path?: string, onMessage?: (m: VhostUserMessage) => void): RawPeer {
  const peer = RawPeer.start((m, p) => {
    onMessage?.(m);
    if (m.request !== R.GET_INFLIGHT_FD) return 'default';
    const req = Inflight.decode(m.payload);
    const perQueue = Math.ceil((16 + 16 * req.queueSize) / 64) * 64;
    const size = perQueue * req.numQueues;
    const fd = libc.memfd_create('inflight', C.MFD_CLOEXEC);
    libc.ftruncate(fd, size);
    const map = Mapping.map(fd, size);
    const w = map.window(0, 16);
    new DataView(w.buffer, w.byteOffset, 16).setBigUint64(0, MARK, true);
    map.close();
    p.reply(m, Inflight.encode({ mmapSize: BigInt(size), mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize }), undefined, [fd]);
    closeFd(fd);
  }, path);
  peer.protocolFeatures |= bit(ProtocolFeature.INFLIGHT_SHMFD);
  return peer;
}

/** The first u64 of the area a SET_INFLIGHT_FD hands over, read as the back-end would (by mapping its fd). */
function markOf(m: VhostUserMessage): bigint {
  const area = Mapping.map(m.fds[0]!, Number(Inflight.decode(m.payload).mmapSize));
  try {
    const w = area.window(0, 8);
    return new DataView(w.buffer, w.byteOffset, 8).getBigUint64(0, true);
  } finally {
    area.close();
  }
}

describe('VhostDevice: the device layer under the drivers', function () {
  this.timeout(20_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  const cleanups: (() => unknown)[] = [];
  beforeEach(async () => {
    await settle(0);
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  function reference(options: { inflight?: boolean } = {}): ReferenceBackend {
    const tmp = tempSocketPath();
    const backend = ReferenceBackend.listen(tmp.path, { device: 'blk', queueNum: 1, blkSize: 1024 * 1024, blkInflight: options.inflight ?? true });
    cleanups.push(() => tmp.cleanup(), () => backend.close());
    return backend;
  }

  describe('negotiation from a device\'s wishes', () => {
    it('acknowledges what is wished and offered, plus the transport bits; nothing else', async () => {
      const backend = reference();
      const trace: TraceEvent[] = [];
      const wanted = bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) | bit(VirtioBlkFeature.VIRTIO_BLK_F_RO) | bit(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD);
      const d = await OneRing.open(backend.path, { trace: (e) => trace.push(e) }, { wanted: wanted | bit(VirtioFeature.VHOST_F_LOG_ALL) });
      cleanups.push(() => d.close());
      const expected =
        bit(VirtioFeature.VIRTIO_F_VERSION_1) |
        bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
        bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
        bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) |
        // The reference blk device offers DISCARD; RO only for a read-only disk.
        bit(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD);
      expect(d.dev.features.toString(16)).to.equal(expected.toString(16));
      const sent = trace.filter((e) => e.direction === 'send' && e.request === 'SET_FEATURES').map((e) => e.decoded as bigint);
      expect(sent).to.deep.equal([expected]);
      expect(d.dev.client.features).to.equal(expected);
      await d.roundTrip(8, 1);
    });

    it('packed rings and no event index when asked: RING_PACKED acked, EVENT_IDX not; requests still round-trip', async () => {
      const backend = reference();
      const d = await OneRing.open(backend.path, { ring: 'packed', eventIdx: false });
      cleanups.push(() => d.close());
      expect(d.dev.queues[0]!.vq.packed).to.equal(true);
      expect(d.dev.features & bit(VirtioFeature.VIRTIO_F_RING_PACKED)).to.not.equal(0n);
      expect(d.dev.features & bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX)).to.equal(0n);
      await d.roundTrip(0, 2);
      await d.roundTrip(16, 3);
    });

    it('a requirement the back-end does not offer is VHOST_FEATURE_NOT_NEGOTIATED with the device\'s message, before SET_FEATURES', async () => {
      const backend = reference();
      const trace: TraceEvent[] = [];
      const err = await expectRejectCode(
        OneRing.open(backend.path, { trace: (e) => trace.push(e) }, { wanted: 0n, required: [{ bit: VirtioBlkFeature.VIRTIO_BLK_F_TOPOLOGY, message: 'this device needs TOPOLOGY' }] }),
        'VHOST_FEATURE_NOT_NEGOTIATED',
      );
      expect(err.message).to.equal('this device needs TOPOLOGY');
      expect(names(trace)).to.not.include('SET_FEATURES');
    });

    it('more rings than GET_QUEUE_NUM is VHOST_INVALID_ARGUMENT; features and rings are fixed once allocated', async () => {
      const backend = reference();
      const dev = await VhostDevice.open(backend.path);
      cleanups.push(() => dev.close());
      dev.selectFeatures({ wanted: 0n });
      expect(() => dev.allocate({ count: 2, size: SIZE, dataBytes: 0 })).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
      dev.allocate({ count: 1, size: SIZE, dataBytes: 0 });
      // The rings were built for these features.
      expect(() => dev.selectFeatures({ wanted: 0n })).to.throw().with.property('code', 'VHOST_INVALID_STATE');
      expect(() => dev.allocate({ count: 1, size: SIZE, dataBytes: 0 })).to.throw().with.property('code', 'VHOST_INVALID_STATE');
    });
  });

  describe('memory', () => {
    it("'auto' with CONFIGURE_MEM_SLOTS negotiated: ADD_MEM_REG per region, no SET_MEM_TABLE", async () => {
      const backend = reference();
      const trace: TraceEvent[] = [];
      const d = await OneRing.open(backend.path, { trace: (e) => trace.push(e) });
      cleanups.push(() => d.close());
      expect(d.dev.client.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS)).to.equal(true);
      const sent = names(trace);
      expect(sent.filter((n) => n === 'ADD_MEM_REG')).to.have.length(d.dev.memory.regions.length);
      expect(sent).to.not.include('SET_MEM_TABLE');
      await d.roundTrip(4, 4);
      expect(backend.blk).to.deep.include({ reads: 1, writes: 1, errors: 0 });
    });

    it("'table': SET_MEM_TABLE even when slots are offered", async () => {
      const backend = reference();
      const trace: TraceEvent[] = [];
      const d = await OneRing.open(backend.path, { trace: (e) => trace.push(e), memoryTable: 'table' });
      cleanups.push(() => d.close());
      const sent = names(trace);
      expect(sent.filter((n) => n === 'SET_MEM_TABLE')).to.have.length(1);
      expect(sent).to.not.include('ADD_MEM_REG');
      await d.roundTrip(4, 5);
    });

    it("'auto' without CONFIGURE_MEM_SLOTS: SET_MEM_TABLE; 'slots' there is VHOST_FEATURE_NOT_NEGOTIATED", async () => {
      const peer = RawPeer.start();
      cleanups.push(() => peer.close());
      const d = await OneRing.open(peer.path, { timeoutMs: 1000 });
      cleanups.push(() => d.close());
      expect(peer.log.map((m) => m.request)).to.include(R.SET_MEM_TABLE).and.not.include(R.ADD_MEM_REG);
      const peer2 = RawPeer.start();
      cleanups.push(() => peer2.close());
      await expectRejectCode(OneRing.open(peer2.path, { timeoutMs: 1000, memoryTable: 'slots' }), 'VHOST_FEATURE_NOT_NEGOTIATED');
    });
  });

  describe('start, STATUS and stop', () => {
    it('sets FEATURES_OK after SET_FEATURES and reads it back; a back-end that clears it fails the start with VHOST_FEATURE_NOT_NEGOTIATED', async () => {
      const FEATURES_OK = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
      let status = 0n;
      const peer = RawPeer.start((m, p) => {
        if (m.request === R.SET_STATUS) {
          // A device that cannot run with the features clears FEATURES_OK (virtio 1.2 §3.1.1, as DPDK does).
          status = U64.decode(m.payload) & ~BigInt(DeviceStatus.FEATURES_OK);
          p.ack(m);
        } else if (m.request === R.GET_STATUS) p.reply(m, U64.encode(status));
        else return 'default';
      });
      peer.protocolFeatures |= bit(ProtocolFeature.STATUS);
      cleanups.push(() => peer.close());
      await expectRejectCode(OneRing.open(peer.path, { timeoutMs: 1000 }), 'VHOST_FEATURE_NOT_NEGOTIATED');
      const sent = peer.log.map((m) => m.request);
      const setFeatures = sent.indexOf(R.SET_FEATURES);
      expect(sent.slice(setFeatures + 1, setFeatures + 3)).to.deep.equal([R.SET_STATUS, R.GET_STATUS]);
      expect(U64.decode(peer.log[setFeatures + 1]!.payload)).to.equal(BigInt(FEATURES_OK));
      // Nothing of the device was set up with features the back-end refused.
      expect(sent).to.not.include(R.SET_VRING_KICK);
    });

    for (const ring of ['split', 'packed'] as const) {
      it(`${ring}: DRIVER_OK after start; stop returns the bases the back-end reached and resets STATUS; start resumes from them`, async () => {
        const backend = reference();
        const trace: TraceEvent[] = [];
        const d = await OneRing.open(backend.path, { ring, trace: (e) => trace.push(e) });
        cleanups.push(() => d.close());
        const dev = d.dev;
        const ok = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK;
        expect(await dev.client.getStatus()).to.equal(ok);
        expect(dev.isRunning).to.equal(true);
        await d.roundTrip(0, 6);
        await d.request(BLK_T_IN, 8, new Uint8Array(512));
        const vq = dev.queues[0]!.vq;
        const bases = await dev.stop();
        expect(dev.isRunning).to.equal(false);
        // Three chains made available and completed: the back-end stopped exactly there.
        expect(bases).to.deep.equal([vq.vringBase]);
        if (ring === 'split') expect(bases).to.deep.equal([3]);
        expect(await dev.client.getStatus()).to.equal(0);
        const before = trace.length;
        await dev.start();
        const baseSent = trace.slice(before).filter((e) => e.direction === 'send' && e.request === 'SET_VRING_BASE').map((e) => (e.decoded as { num: number }).num);
        expect(baseSent).to.deep.equal(bases);
        expect(await dev.client.getStatus()).to.equal(ok);
        await d.roundTrip(24, 7);
        expect(await dev.stop()).to.deep.equal(ring === 'split' ? [5] : [vq.vringBase]);
        expect(backend.blk).to.deep.include({ reads: 3, writes: 2, errors: 0 });
      });
    }

    it('stop() when not running and start() when running are VHOST_INVALID_STATE; after close, VHOST_CLIENT_CLOSED', async () => {
      const backend = reference();
      const d = await OneRing.open(backend.path);
      cleanups.push(() => d.close());
      await expectRejectCode(d.dev.start(), 'VHOST_INVALID_STATE');
      await d.dev.stop();
      await expectRejectCode(d.dev.stop(), 'VHOST_INVALID_STATE');
      d.close();
      await expectRejectCode(d.dev.start(), 'VHOST_CLIENT_CLOSED');
    });
  });

  describe('dirty log, reconnect, hand-over', () => {
    it('logs the pages the back-end writes (data, status, used ring) and not those it only reads; a restart with logging on keeps logging, the log shared before the rings are enabled', async () => {
      const backend = reference();
      const trace: TraceEvent[] = [];
      const d = await OneRing.open(backend.path, { trace: (e) => trace.push(e) });
      cleanups.push(() => d.close());
      const dev = d.dev;
      const page = (gpa: number) => Math.floor(gpa / 4096);
      const hdrPage = page(dev.dataGpa);
      const dataPage = page(dev.dataGpa + 4096);
      const usedPage = page(dev.queues[0]!.vq.addresses.device);
      expect(dev.canLogDirty).to.equal(true);
      await dev.startDirtyLog();
      expect(dev.syncDirtyLog()).to.deep.equal([]);
      await d.request(BLK_T_IN, 0, new Uint8Array(4096));
      let pages = dev.syncDirtyLog();
      expect(pages).to.include.members([dataPage, dataPage + 1, usedPage]);
      expect(pages, 'the request header is only read by the back-end').to.not.include(hdrPage);
      await dev.stop();
      const before = trace.length;
      await dev.start();
      const sent = names(trace.slice(before));
      expect(sent.indexOf('SET_LOG_BASE')).to.be.above(sent.lastIndexOf('SET_VRING_KICK'));
      expect(sent.indexOf('SET_LOG_BASE')).to.be.below(sent.indexOf('SET_VRING_ENABLE'));
      const features = trace.slice(before).find((e) => e.direction === 'send' && e.request === 'SET_FEATURES')!.decoded as bigint;
      expect(features & bit(VirtioFeature.VHOST_F_LOG_ALL)).to.not.equal(0n);
      dev.syncDirtyLog();
      await d.request(BLK_T_IN, 8, new Uint8Array(4096));
      pages = await dev.stopDirtyLog();
      expect(pages).to.include.members([dataPage, usedPage]);
      expect(dev.isLoggingDirty).to.equal(false);
      await d.roundTrip(16, 9);
    });

    it('reconnect: the back-end goes away and a new one listens on the path; the device replays and requests work again', async () => {
      const tmp = tempSocketPath();
      cleanups.push(() => tmp.cleanup());
      let backend = ReferenceBackend.listen(tmp.path, { device: 'blk', queueNum: 1, blkSize: 1024 * 1024 });
      cleanups.push(() => backend.close());
      const d = await OneRing.open(tmp.path, { reconnect: { timeoutMs: 5000, initialDelayMs: 10 } });
      cleanups.push(() => d.close());
      await d.roundTrip(0, 10);
      const reconnected = new Promise<DeviceReconnectReport>((resolve) => d.dev.once('reconnect', resolve));
      backend.close();
      backend = ReferenceBackend.listen(tmp.path, { device: 'blk', queueNum: 1, blkSize: 1024 * 1024 });
      const report = await reconnected;
      // Both requests were completed before the loss: the ring resumes after them, nothing is redone.
      expect(report.rings).to.deep.equal([{ index: 0, base: 2, resumed: 0 }]);
      expect(report.inflightShared).to.equal(false);
      expect(d.dev.reconnects).to.equal(1);
      await d.roundTrip(8, 11);
      expect(backend.blk).to.deep.include({ reads: 1, writes: 1, errors: 0 });
    });
  });

  describe('inflight area (INFLIGHT_SHMFD), opt-in', () => {
    it('GET_INFLIGHT_FD once, after SET_FEATURES; SET_INFLIGHT_FD at the first start and again, with the same area, at a reconnect; closed with the device', async () => {
      const tmp = tempSocketPath();
      cleanups.push(() => tmp.cleanup());
      const first = inflightPeer(tmp.path);
      cleanups.push(() => first.close());
      const sharedAtResume: boolean[] = [];
      const hooks: VhostDeviceHooks = {
        resumeBase: (vq) => (sharedAtResume.push(d.dev.inflightShared), vq.resumeBase()),
      };
      const d: OneRing = await OneRing.open(tmp.path, { timeoutMs: 1000, inflight: true, reconnect: { timeoutMs: 5000, initialDelayMs: 10 } }, undefined, hooks);
      cleanups.push(() => d.close());
      const order = first.log.map((m) => m.request);
      const at = (r: number) => order.indexOf(r);
      expect(order.filter((r) => r === R.GET_INFLIGHT_FD)).to.have.length(1);
      expect(order.filter((r) => r === R.SET_INFLIGHT_FD)).to.have.length(1);
      expect(at(R.SET_FEATURES)).to.be.below(at(R.GET_INFLIGHT_FD));
      expect(at(R.GET_INFLIGHT_FD)).to.be.below(at(R.SET_INFLIGHT_FD));
      expect(at(R.SET_INFLIGHT_FD)).to.be.below(at(R.SET_MEM_TABLE));
      const get = first.log.find((m) => m.request === R.GET_INFLIGHT_FD)!;
      expect(Inflight.decode(get.payload)).to.deep.include({ numQueues: 1, queueSize: SIZE });
      expect(d.dev.inflightShared).to.equal(true);
      expect(d.dev.inflightRequests).to.equal(1);
      const area = d.dev.inflight!;
      expect(area.mmapSize).to.equal(BigInt(Math.ceil((16 + 16 * SIZE) / 64) * 64));

      // The back-end goes away; the next one on the same path gets the same area, marked by the first.
      let seen = -1n;
      const reconnected = new Promise<DeviceReconnectReport>((resolve) => d.dev.once('reconnect', resolve));
      first.close();
      const second = inflightPeer(tmp.path, (m) => {
        if (m.request === R.SET_INFLIGHT_FD && m.fds.length === 1) seen = markOf(m);
      });
      cleanups.push(() => second.close());
      const report = await reconnected;
      expect(report.inflightShared).to.equal(true);
      expect(report.rings).to.deep.equal([{ index: 0, base: 0, resumed: 0 }]);
      expect(sharedAtResume, 'the resume hook runs once the new back-end has the area').to.deep.equal([true]);
      expect(second.log.map((m) => m.request)).to.not.include(R.GET_INFLIGHT_FD);
      expect(second.log.filter((m) => m.request === R.SET_INFLIGHT_FD)).to.have.length(1);
      expect(seen, 'the area the first back-end marked').to.equal(MARK);
      expect(d.dev.inflight).to.equal(area);
      expect(d.dev.inflightRequests).to.equal(1);
    });

    it('hand-over: the new back-end gets the same area with SET_INFLIGHT_FD, no GET_INFLIGHT_FD, and the bases the old one reported', async () => {
      const first = inflightPeer();
      cleanups.push(() => first.close());
      const d = await OneRing.open(first.path, { timeoutMs: 1000, inflight: true });
      cleanups.push(() => d.close());
      let seen = -1n;
      const second = inflightPeer(undefined, (m) => {
        if (m.request === R.SET_INFLIGHT_FD && m.fds.length === 1) seen = markOf(m);
      });
      cleanups.push(() => second.close());
      let after = '';
      const report = await d.dev.handOver(second.path, async (client) => {
        after = client === d.dev.client ? 'old' : 'new';
      });
      expect(after, 'afterStart runs on the new client before the switch').to.equal('new');
      expect(report.bases).to.deep.equal([42]); // what the scripted peer answers to GET_VRING_BASE
      const requests = second.log.map((m) => m.request);
      expect(requests).to.not.include(R.GET_INFLIGHT_FD);
      expect(seen).to.equal(MARK);
      expect(second.log.filter((m) => m.request === R.SET_VRING_BASE).map((m) => VringState.decode(m.payload).num)).to.deep.equal([42]);
      expect(d.dev.inflightRequests).to.equal(1);
      expect(first.log.map((m) => m.request)).to.include(R.GET_VRING_BASE);
    });

    it('a device that does not opt in (net) neither asks for INFLIGHT_SHMFD nor sends GET/SET_INFLIGHT_FD', async () => {
      const peer = inflightPeer();
      cleanups.push(() => peer.close());
      const d = await OneRing.open(peer.path, { timeoutMs: 1000 });
      cleanups.push(() => d.close());
      const set = peer.log.find((m) => m.request === R.SET_PROTOCOL_FEATURES)!;
      expect(U64.decode(set.payload) & bit(ProtocolFeature.INFLIGHT_SHMFD)).to.equal(0n);
      expect(peer.log.map((m) => m.request)).to.not.include.members([R.GET_INFLIGHT_FD, R.SET_INFLIGHT_FD]);
      expect(d.dev.inflight).to.equal(null);
      expect(d.dev.inflightShared).to.equal(false);
    });

    it('opted in, but the back-end does not offer INFLIGHT_SHMFD: the device runs without an area', async () => {
      const backend = reference({ inflight: false });
      const d = await OneRing.open(backend.path, { inflight: true });
      cleanups.push(() => d.close());
      expect(d.dev.inflight).to.equal(null);
      expect(d.dev.inflightRequests).to.equal(0);
      await d.roundTrip(2, 8);
    });
  });
});
