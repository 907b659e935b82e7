/**
 * Inflight I/O tracking in the reference blk back-end (vhost-user.rst, "Inflight
 * I/O tracking", split layout): requests marked in the area while held, cleared
 * after the used-ring update, resubmitted in counter order by the next back-end
 * (a fresh session of the same process, or a new process after SIGKILL), each
 * completed exactly once with the right data; and the hostile-input guards.
 */
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { expect } from 'chai';
import { ReferenceBackend, type ViolationInfo } from '../../lib/backend/reference-backend.js';
import { INFLIGHT_DESC_STATE_SPLIT, INFLIGHT_SPLIT_HEADER, PackedInflightRegion, packedRegionSize, splitRegionSize } from '../../lib/backend/inflight-area.js';
import { VhostUserClient, SUPPORTED_PROTOCOL_FEATURES } from '../../lib/client/vhost-user-client.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import { bit, hasBit, FrontendRequest as R, ProtocolFeature, VirtioFeature } from '../../lib/protocol/constants.js';
import { Inflight } from '../../lib/protocol/payloads.js';
import { makeTempDir } from '../../lib/launch/backend-process.js';
import { startReferenceBackend, type ReferenceBackendProcess } from '../../lib/launch/reference-backend.js';
import { BLK_T, BlkRig, RIG_DATA, RIG_HDR, RIG_PAGE, RIG_STATUS } from '../helpers/blk-rig.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const WANT = SUPPORTED_PROTOCOL_FEATURES | bit(ProtocolFeature.INFLIGHT_SHMFD);

/** The back-end closed the connection: the request fails with one of the codes that say so. */
async function expectClosed(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e as { code?: string },
  );
  expect(err?.code).to.be.oneOf(['VHOST_DISCONNECTED', 'VHOST_CLIENT_BROKEN']);
}

/** A page whose every byte says which request wrote it. */
function pattern(token: number): Uint8Array {
  return Uint8Array.from({ length: RIG_PAGE }, (_, i) => (token * 31 + i * 7 + 1) & 0xff);
}

/** The front-end's view of the area: maps the fd the rig keeps. */
function areaView(rig: BlkRig): { dv: DataView; close(): void } {
  const m = Mapping.map(rig.area!.fd, Number(rig.area!.mmapSize));
  return { dv: m.dataView(0, splitRegionSize(rig.queueSize)), close: () => m.close() };
}

/** The front-end's view of a packed area, read with the back-end's own accessors over a mapping of its own. */
function packedView(rig: BlkRig): { r: PackedInflightRegion; inflight(): number[]; close(): void } {
  const m = Mapping.map(rig.area!.fd, Number(rig.area!.mmapSize));
  const r = new PackedInflightRegion(m, 0, rig.queueSize);
  const inflight = () => Array.from({ length: rig.queueSize }, (_, i) => i).filter((i) => r.isInflight(i));
  return { r, inflight, close: () => m.close() };
}

function inflightHeads(dv: DataView, queueSize: number): { head: number; counter: bigint }[] {
  const out: { head: number; counter: bigint }[] = [];
  for (let i = 0; i < queueSize; i++) {
    const e = INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * i;
    if (dv.getUint8(e) === 1) out.push({ head: i, counter: dv.getBigUint64(e + 8, true) });
  }
  return out;
}

describe('reference blk back-end: inflight I/O tracking', function () {
  this.timeout(30_000);
  let sock: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend | null = null;
  let rig: BlkRig | null = null;
  let violations: ViolationInfo[] = [];
  let snap: ReturnType<typeof resourceSnapshot>;

  beforeEach(() => {
    snap = resourceSnapshot();
    sock = tempSocketPath('blk.sock');
    violations = [];
  });
  afterEach(async () => {
    rig?.close();
    rig = null;
    backend?.close();
    backend = null;
    sock.cleanup();
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  function listen(options: { latencyMs?: number; size?: number; device?: 'net' | 'blk'; queueNum?: number } = {}): ReferenceBackend {
    backend = ReferenceBackend.listen(sock.path, {
      device: options.device ?? 'blk',
      ...(options.device === 'net' ? {} : { blkSize: options.size ?? 1 << 20, blkLatencyMs: options.latencyMs ?? 0 }),
      ...(options.queueNum !== undefined ? { queueNum: options.queueNum } : {}),
    });
    backend.on('violation', (v) => violations.push(v));
    return backend;
  }

  it('offers INFLIGHT_SHMFD for blk only', async () => {
    listen({ device: 'net' });
    const c = await VhostUserClient.connect(sock.path, { timeoutMs: 2000 });
    const n = await c.negotiate({ protocolFeatures: WANT });
    c.close();
    expect(hasBit(n.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD)).to.equal(false);
    backend!.close();
    backend = ReferenceBackend.listen(sock.path, { device: 'blk', blkSize: 1 << 20, blkInflight: false });
    const off = await VhostUserClient.connect(sock.path, { timeoutMs: 2000 });
    const n2 = await off.negotiate({ protocolFeatures: WANT });
    off.close();
    expect(hasBit(n2.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD), 'blkInflight: false').to.equal(false);
    backend.close();
    listen();
    rig = new BlkRig(64, 8);
    await rig.attach(sock.path, { inflight: true });
    expect(hasBit(rig.negotiated!.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD)).to.equal(true);
    // One 64-byte-aligned QueueRegionSplit: version 1, desc_num 64.
    expect(rig.area!.mmapSize).to.equal(BigInt(splitRegionSize(64)));
    const v = areaView(rig);
    try {
      expect(v.dv.getUint16(8, true)).to.equal(1);
      expect(v.dv.getUint16(10, true)).to.equal(64);
    } finally {
      v.close();
    }
  });

  it('marks a request in flight while the back-end holds it, and clears it after the used-ring update', async () => {
    listen({ latencyMs: 400 });
    rig = new BlkRig(64, 8);
    await rig.attach(sock.path, { inflight: true });
    for (let t = 0; t < 4; t++) {
      rig.data(t).set(pattern(t));
      rig.add(t, BLK_T.OUT, BigInt(t * 8));
    }
    rig.publish();
    const v = areaView(rig);
    try {
      await settle(100);
      expect(rig.reap()).to.equal(0, 'held: nothing completed yet');
      const held = inflightHeads(v.dv, 64);
      // Four heads with consecutive counters, in the order they were taken.
      expect(held).to.have.length(4);
      const counters = held.map((h) => h.counter).sort((a, b) => (a < b ? -1 : 1));
      expect(counters).to.deep.equal([0n, 1n, 2n, 3n].map((k) => counters[0]! + k));
      const lastTaken = held.find((h) => h.counter === counters[3])!.head;
      expect(v.dv.getUint16(14, true), 'used_idx').to.equal(0);
      expect(await rig.waitFor(4)).to.equal(true);
      expect(inflightHeads(v.dv, 64)).to.deep.equal([]);
      expect(v.dv.getUint16(14, true), 'used_idx after the completions').to.equal(4);
      expect(v.dv.getUint16(12, true), 'last_batch_head: the last completed').to.equal(lastTaken);
    } finally {
      v.close();
    }
    expect(rig.completions.map((c) => c.status)).to.deep.equal([0, 0, 0, 0]);
  });

  it('a fresh session of the same process resubmits, in counter order, what the dropped one held', async () => {
    listen({ latencyMs: 300 });
    rig = new BlkRig(128, 32);
    await rig.attach(sock.path, { inflight: true });
    for (let t = 0; t < 32; t++) {
      rig.data(t).set(pattern(t));
      rig.add(t, BLK_T.OUT, BigInt(t * 8));
    }
    rig.publish();
    await settle(50);
    rig.detach(); // the session ends with 32 requests held: dropped, not completed
    await settle(400);
    expect(backend!.blk.writes).to.equal(0);
    await rig.attach(sock.path, { inflight: true });
    expect(await rig.waitFor(32)).to.equal(true);
    await settle(50);
    rig.reap();
    const tokens = rig.completions.map((c) => c.token);
    expect(tokens).to.deep.equal(Array.from({ length: 32 }, (_, t) => t), 'each once, in the order they were taken');
    expect(rig.completions.every((c) => c.status === 0)).to.equal(true);
    expect(backend!.blk.writes).to.equal(32);
    // Read everything back through the device.
    for (let t = 0; t < 32; t++) {
      rig.data(t).fill(0);
      rig.add(t, BLK_T.IN, BigInt(t * 8));
    }
    rig.publish();
    expect(await rig.waitFor(64)).to.equal(true);
    for (let t = 0; t < 32; t++) expect(rig.data(t), `sector ${t * 8}`).to.deep.equal(pattern(t));
    expect(violations).to.deep.equal([]);
  });

  describe('packed rings (QueueRegionPacked)', () => {
    it('GET_INFLIGHT_FD on a packed device lays out one QueueRegionPacked per queue: version 1, desc_num, every entry free', async () => {
      listen();
      rig = new BlkRig(64, 8, 'packed');
      await rig.attach(sock.path, { inflight: true });
      expect(rig.area!.mmapSize).to.equal(BigInt(packedRegionSize(64)));
      const v = packedView(rig);
      try {
        expect([v.r.version, v.r.headerDescNum, v.r.freeHead, v.r.usedIdx, v.r.usedWrapCounter]).to.deep.equal([1, 64, 0, 0, 1]);
        expect(v.inflight()).to.deep.equal([]);
      } finally {
        v.close();
      }
    });

    it('marks each chain in flight with a copy of its descriptors while held, and frees it after the used descriptor', async () => {
      listen({ latencyMs: 400 });
      rig = new BlkRig(64, 8, 'packed');
      await rig.attach(sock.path, { inflight: true });
      for (let t = 0; t < 4; t++) {
        rig.data(t).set(pattern(t));
        rig.add(t, BLK_T.OUT, BigInt(t * 8));
      }
      rig.publish();
      const v = packedView(rig);
      try {
        await settle(100);
        expect(rig.reap()).to.equal(0, 'held: nothing completed yet');
        // Three descriptors each (header, data, status): head entries 0, 3, 6, 9, in counter order.
        expect(v.inflight()).to.deep.equal([0, 3, 6, 9]);
        const c0 = v.r.counterOf(0);
        expect([0, 3, 6, 9].map((e) => [v.r.counterOf(e), v.r.numOf(e), v.r.lastOf(e)])).to.deep.equal([0, 1, 2, 3].map((k) => [c0 + k, 3, 3 * k + 2]));
        const copy = v.r.chainOf(6).map((d) => [d.addr, d.len]);
        expect(copy, 'request 2 as the driver wrote it').to.deep.equal([[RIG_HDR + 2 * 16, 16], [RIG_DATA + 2 * RIG_PAGE, RIG_PAGE], [RIG_STATUS + 2, 1]]);
        expect([v.r.freeHead, v.r.oldFreeHead, v.r.usedIdx]).to.deep.equal([12, 12, 0]);
        expect(await rig.waitFor(4)).to.equal(true);
        expect(v.inflight()).to.deep.equal([]);
        expect([v.r.usedIdx, v.r.oldUsedIdx, v.r.usedWrapCounter], 'used_idx past the 12 slots').to.deep.equal([12, 12, 1]);
        expect(v.r.freeHead, 'the last chain completed heads the free list').to.equal(9);
      } finally {
        v.close();
      }
      expect(rig.completions.map((c) => c.status)).to.deep.equal([0, 0, 0, 0]);
      expect(violations).to.deep.equal([]);
    });

    it('a fresh session resubmits in counter order what the dropped one held, past a completed one, across the ring wrap', async () => {
      listen({ latencyMs: 300 });
      rig = new BlkRig(64, 32, 'packed');
      await rig.attach(sock.path, { inflight: true });
      // 8 reads (24 of 64 slots) completed first, so the 14 held writes (42 slots) wrap the ring.
      for (let t = 0; t < 8; t++) rig.add(t, BLK_T.IN, 0n);
      rig.publish();
      expect(await rig.waitFor(8)).to.equal(true);
      const done = rig.completions.length;
      for (let t = 0; t < 14; t++) {
        rig.data(t).set(pattern(t));
        rig.add(t, BLK_T.OUT, BigInt(t * 8));
      }
      rig.publish();
      await settle(50);
      rig.detach();
      await settle(400);
      expect(backend!.blk.writes).to.equal(0);
      await rig.attach(sock.path, { inflight: true });
      expect(await rig.waitFor(done + 14)).to.equal(true);
      await settle(50);
      rig.reap();
      expect(rig.completions.slice(done).map((c) => c.token)).to.deep.equal(Array.from({ length: 14 }, (_, t) => t), 'each once, in the order they were taken');
      expect(rig.completions.every((c) => c.status === 0)).to.equal(true);
      expect(backend!.blk.writes).to.equal(14);
      // The ring goes on past the resubmitted ones: read everything back through the device.
      for (let t = 0; t < 14; t++) {
        rig.data(t).fill(0);
        rig.add(t, BLK_T.IN, BigInt(t * 8));
      }
      rig.publish();
      expect(await rig.waitFor(done + 28)).to.equal(true);
      for (let t = 0; t < 14; t++) expect(rig.data(t), `sector ${t * 8}`).to.deep.equal(pattern(t));
      expect(violations).to.deep.equal([]);
    });
  });

  describe('hostile input', () => {
    it('a packed area whose free list loops is a violation when the ring starts: the connection closes, nothing hangs', async () => {
      listen();
      rig = new BlkRig(64, 8, 'packed');
      await rig.attach(sock.path, { inflight: true });
      rig.detach();
      await settle(20);
      const m = Mapping.map(rig.area!.fd, Number(rig.area!.mmapSize));
      m.dataView(0, packedRegionSize(64)).setUint16(32 + 2, 0, true); // desc[0].next = 0, free_head 0
      m.close();
      await rig.attach(sock.path, { inflight: true }).catch(() => undefined);
      await settle(50);
      expect(violations.map((v) => [v.code, v.message.includes('free list')])).to.deep.equal([['VHOST_INVALID_PAYLOAD', true]]);
    });

    async function negotiated(): Promise<VhostUserClient> {
      const c = await VhostUserClient.connect(sock.path, { timeoutMs: 1000 });
      await c.negotiate({ protocolFeatures: WANT });
      await c.setFeatures(bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
      return c;
    }

    for (const [what, numQueues, queueSize] of [
      ['num_queues 0', 0, 64],
      ['num_queues above the device queues (CVE-2021-3839)', 3, 64],
      ['num_queues 65535', 65535, 64],
      ['queue_size 0', 1, 0],
      ['queue_size above 32768', 1, 65535],
    ] as const) {
      it(`GET_INFLIGHT_FD with ${what} is a violation: the connection closes, nothing is allocated`, async () => {
        listen({ queueNum: 2 });
        const c = await negotiated();
        await expectClosed(c.getInflightFd(numQueues, queueSize));
        c.close();
        await settle(20);
        expect(violations.map((v) => [v.code, v.request])).to.deep.equal([['VHOST_INVALID_PAYLOAD', 'GET_INFLIGHT_FD']]);
      });
    }

    it('repeated GET_INFLIGHT_FD leaks no fd and no mapping in the back-end', async () => {
      listen();
      const c = await negotiated();
      const first = await c.getInflightFd(1, 256);
      closeFd(first.fd);
      const mid = resourceSnapshot();
      for (let i = 0; i < 64; i++) closeFd((await c.getInflightFd(1, 256)).fd);
      expect(mid.leaked()).to.deep.equal({ fds: 0, maps: 0 });
      c.close();
    });

    it('SET_INFLIGHT_FD whose fd is smaller than the regions, or whose mmap_size is too small, is a violation', async () => {
      listen();
      for (const bad of [{ fdSize: 1024, mmapSize: splitRegionSize(256) }, { fdSize: splitRegionSize(256), mmapSize: 100 }]) {
        const c = await negotiated();
        const fd = libc.memfd_create('bad-inflight', C.MFD_CLOEXEC);
        libc.ftruncate(fd, bad.fdSize);
        try {
          const sent = c.setInflightFd({ fd, mmapSize: BigInt(bad.mmapSize), mmapOffset: 0n, numQueues: 1, queueSize: 256 });
          await sent.catch(() => undefined);
          // The back-end closes the connection; the next request fails.
          await expectClosed(c.getQueueNum());
        } finally {
          closeFd(fd);
          c.close();
        }
      }
      await settle(20);
      expect(violations.map((v) => [v.code, v.request])).to.deep.equal([
        ['VHOST_INVALID_PAYLOAD', 'SET_INFLIGHT_FD'],
        ['VHOST_INVALID_PAYLOAD', 'SET_INFLIGHT_FD'],
      ]);
    });

    it('an area whose regions say another version or desc_num is refused at SET_INFLIGHT_FD', async () => {
      listen();
      const c = await negotiated();
      const size = splitRegionSize(64);
      const fd = libc.memfd_create('foreign-inflight', C.MFD_CLOEXEC);
      libc.ftruncate(fd, size);
      const m = Mapping.map(fd, size);
      m.dataView(0, 16).setUint16(8, 1, true);
      m.dataView(0, 16).setUint16(10, 128, true); // desc_num 128 for a queue_size of 64
      m.close();
      try {
        await c.setInflightFd({ fd, mmapSize: BigInt(size), mmapOffset: 0n, numQueues: 1, queueSize: 64 }).catch(() => undefined);
        await expectClosed(c.getQueueNum());
      } finally {
        closeFd(fd);
        c.close();
      }
      await settle(20);
      expect(violations.map((x) => x.code)).to.deep.equal(['VHOST_INVALID_PAYLOAD']);
      expect(violations[0]!.message).to.match(/version 1, desc_num 128 \(expected version 1, desc_num 64\)/);
      expect(Inflight.minSize).to.equal(24);
      expect(R.SET_INFLIGHT_FD).to.equal(32);
    });
  });
});

describe('reference blk back-end killed with SIGKILL with 128 requests in flight @integration', function () {
  this.timeout(60_000);
  let dir: string;
  let procs: ReferenceBackendProcess[] = [];
  let rig: BlkRig | null = null;

  beforeEach(async () => {
    dir = await makeTempDir('vhost-blk-kill-');
    procs = [];
  });
  afterEach(async () => {
    rig?.close();
    rig = null;
    for (const p of procs) await p.stop();
    await rm(dir, { recursive: true, force: true });
  });

  for (const ring of ['split', 'packed'] as const) {
    it(`${ring} ring: a restarted back-end on the same image completes every in-flight request exactly once, with the right data`, async () => {
      const image = path.join(dir, 'disk.img');
      const socketPath = path.join(dir, 'blk.sock');
      // Sectors 0..1023 (the reads' targets) hold a known pattern; the writes go to 1024.. .
      const initial = new Uint8Array(4 << 20);
      for (let t = 0; t < 64; t++) initial.set(pattern(1000 + t), t * RIG_PAGE);
      writeFileSync(image, initial);
      const first = await startReferenceBackend({ device: 'blk', image, socketPath, latencyMs: 60_000 });
      procs.push(first);
      rig = new BlkRig(512, 128, ring);
      await rig.attach(socketPath, { inflight: true });
      // 64 writes of distinct pages and 64 reads of the pattern, all in flight at once.
      for (let t = 0; t < 128; t++) {
        if (t < 64) {
          rig.data(t).set(pattern(t));
          rig.add(t, BLK_T.OUT, BigInt(1024 + t * 8));
        } else {
          rig.data(t).fill(0);
          rig.add(t, BLK_T.IN, BigInt((t - 64) * 8));
        }
      }
      rig.publish();
      // The back-end holds them (60 s latency): all 128 are marked in the area before the kill.
      const v = ring === 'split' ? areaView(rig) : packedView(rig);
      const marked = () => ('dv' in v ? inflightHeads(v.dv, 512).length : v.inflight().length);
      try {
        const deadline = Date.now() + 5000;
        while (marked() < 128 && Date.now() < deadline) await settle(10);
        expect(marked()).to.equal(128);
      } finally {
        v.close();
      }
      await first.kill9();
      rig.detach();
      expect(rig.reap()).to.equal(0, 'nothing completed by the killed back-end');
      const second = await startReferenceBackend({ device: 'blk', image, socketPath });
      procs.push(second);
      await rig.attach(socketPath, { inflight: true });
      expect(await rig.waitFor(128, 10_000)).to.equal(true);
      await settle(100);
      rig.reap();
      const tokens = rig.completions.map((c) => c.token).sort((a, b) => a - b);
      expect(tokens).to.deep.equal(Array.from({ length: 128 }, (_, t) => t), 'every request exactly once');
      expect(rig.completions.every((c) => c.status === 0)).to.equal(true);
      for (let t = 64; t < 128; t++) expect(rig.data(t), `read ${t}`).to.deep.equal(pattern(1000 + t - 64));
      // The writes are in the image file, read outside the library.
      const fd = openSync(image, 'r');
      try {
        const page = new Uint8Array(RIG_PAGE);
        for (let t = 0; t < 64; t++) {
          readSync(fd, page, 0, RIG_PAGE, (1024 + t * 8) * 512);
          expect(page, `write ${t}`).to.deep.equal(pattern(t));
        }
      } finally {
        closeSync(fd);
      }
      expect(readFileSync(image).length).to.equal(4 << 20);
    });
  }
});
