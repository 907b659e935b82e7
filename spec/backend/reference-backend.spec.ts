import { writeFileSync } from 'node:fs';
import { expect } from 'chai';
import { ReferenceBackend, type ViolationInfo } from '../../lib/backend/reference-backend.js';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { VirtioNet, RxBurst } from '../../lib/devices/net/virtio-net.js';
import { decodeNetConfig, NET_CONFIG_SIZE } from '../../lib/devices/net/net-config.js';
import { decodeBlkConfig, BLK_CONFIG_SIZE } from '../../lib/devices/blk/blk-config.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import {
  FrontendRequest as R,
  ProtocolFeature,
  VirtioFeature,
  VirtioNetFeature,
  bit,
  hasBit,
  encodePackedVringBase,
} from '../../lib/protocol/index.js';
import { MemoryTable, U64, VringAddr, VringState } from '../../lib/protocol/payloads.js';
import { Connection, type VhostUserMessage } from '../../lib/transport/connection.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import { closeAll } from '../../lib/transport/msg-scratch.js';
import { UnixStream } from '../../lib/transport/unix-stream.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { expectRejectCode, rawHeader, resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const V1 = 0x1;
const NEED_REPLY = 0x8;


/** A raw peer on the front-end side: sends anything, collects replies. */
class RawFrontend {
  readonly replies: VhostUserMessage[] = [];
  closed = false;
  private waiters: (() => void)[] = [];
  private constructor(readonly conn: Connection, readonly stream: UnixStream) {
    conn.on('message', (m) => {
      closeAll(m.fds);
      this.replies.push(m);
      this.wake();
    });
    conn.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }
  static async connect(path: string): Promise<RawFrontend> {
    const stream = await UnixStream.connect(path, { timeoutMs: 2000 });
    return new RawFrontend(new Connection(stream), stream);
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  /** Waits until `pred` holds or 2 s pass. */
  async until(pred: () => boolean, ms = 2000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }
  send(request: number, flags = V1, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
    this.conn.send(request, flags, payload, fds);
  }
  async call(request: number, flags = V1, payload?: Uint8Array): Promise<VhostUserMessage> {
    const n = this.replies.length;
    this.send(request, flags, payload);
    expect(await this.until(() => this.replies.length > n || this.closed), 'no reply').to.equal(true);
    expect(this.closed, 'connection closed instead of replying').to.equal(false);
    return this.replies[n]!;
  }
  /** GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES(all offered), SET_OWNER. */
  async handshake(protocol?: bigint): Promise<bigint> {
    await this.call(R.GET_FEATURES);
    const pf = U64.decode((await this.call(R.GET_PROTOCOL_FEATURES)).payload);
    this.send(R.SET_PROTOCOL_FEATURES, V1, U64.encode(protocol ?? pf));
    this.send(R.SET_OWNER);
    return pf;
  }
  close(): void {
    this.conn.close();
  }
}

describe('ReferenceBackend', function () {
  this.timeout(30000);
  let tmp: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend;
  let violations: ViolationInfo[];
  const toClose: { close(): void }[] = [];

  function start(options: Parameters<typeof ReferenceBackend.listen>[1] = { device: 'net' }): ReferenceBackend {
    tmp = tempSocketPath();
    backend = ReferenceBackend.listen(tmp.path, options);
    violations = [];
    backend.on('violation', (v) => violations.push(v));
    return backend;
  }

  afterEach(async () => {
    for (const c of toClose.splice(0).reverse()) c.close();
    backend?.close();
    tmp?.cleanup();
    await settle(5);
  });

  async function client(): Promise<VhostUserClient> {
    const c = await VhostUserClient.connect(tmp.path, { timeoutMs: 2000, connect: { timeoutMs: 2000 } });
    toClose.push(c);
    return c;
  }

  describe('handshake with VhostUserClient', () => {
    it('offers the documented features, protocol features, queue count and memory slots', async () => {
      start();
      const c = await client();
      const n = await c.negotiate();
      for (const b of [
        VirtioFeature.VIRTIO_F_VERSION_1,
        VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES,
        VirtioFeature.VIRTIO_RING_F_EVENT_IDX,
        VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC,
        VirtioFeature.VIRTIO_F_RING_PACKED,
        VirtioNetFeature.VIRTIO_NET_F_MRG_RXBUF,
        VirtioNetFeature.VIRTIO_NET_F_MAC,
        VirtioNetFeature.VIRTIO_NET_F_STATUS,
        VirtioNetFeature.VIRTIO_NET_F_MQ,
        VirtioNetFeature.VIRTIO_NET_F_MTU,
      ]) {
        expect(hasBit(n.features, b), `feature bit ${b}`).to.equal(true);
      }
      for (const b of [ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIG, ProtocolFeature.STATUS, ProtocolFeature.RESET_DEVICE, ProtocolFeature.CONFIGURE_MEM_SLOTS]) {
        expect(hasBit(n.protocolFeatures, b), `protocol bit ${b}`).to.equal(true);
      }
      expect(n.queueNum).to.equal(8);
      expect(n.maxMemSlots).to.equal(32);
      const config = decodeNetConfig(await c.getConfig(0, NET_CONFIG_SIZE), n.features);
      expect(config.mac).to.equal('52:54:00:12:34:56');
      expect(config.status!.linkUp).to.equal(true);
      expect(config.maxVirtqueuePairs).to.equal(4);
      expect(config.mtu).to.equal(1500);
      await c.setStatus(0xf);
      expect(await c.getStatus()).to.equal(0xf);
    });

    for (const ring of ['split', 'packed'] as const) {
      it(`sets up a ${ring} ring, processes nothing, and reports its base with GET_VRING_BASE`, async () => {
        start();
        const c = await client();
        const n = await c.negotiate();
        const features = bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES) | (ring === 'packed' ? bit(VirtioFeature.VIRTIO_F_RING_PACKED) : 0n);
        expect(n.features & features).to.equal(features);
        await c.setFeatures(features);
        const memory = GuestMemory.create({ size: 1 << 20 });
        toClose.push(memory);
        await c.setMemTable(memory);
        const vq = ring === 'split' ? new SplitVirtqueue({ memory, index: 0, size: 64, ringGpa: 0, eventIdx: false }) : new PackedVirtqueue({ memory, index: 0, size: 64, ringGpa: 0, eventIdx: false });
        await c.setVringNum(0, 64);
        await c.setVringAddr({ index: 0, descUserAddr: memory.userAddr(vq.addresses.desc), availUserAddr: memory.userAddr(vq.addresses.driver), usedUserAddr: memory.userAddr(vq.addresses.device) });
        const base = ring === 'split' ? 7 : encodePackedVringBase({ lastAvailIdx: 5, availWrapCounter: true, lastUsedIdx: 5, usedWrapCounter: true });
        await c.setVringBase(0, base);
        const kick = new EventFd();
        const call = new EventFd();
        toClose.push(kick, call);
        await c.setVringCall(0, call.fd);
        await c.setVringKick(0, kick.fd);
        await c.setVringEnable(0, true);
        const got = await c.getVringBase(0);
        expect(got.num).to.equal(base);
        if (ring === 'packed') expect(got.packed).to.deep.equal({ lastAvailIdx: 5, availWrapCounter: true, lastUsedIdx: 5, usedWrapCounter: true });
        expect(violations).to.deep.equal([]);
      });
    }

    it('answers GET_CONFIG beyond the config space with an empty reply (failure) and nacks SET_CONFIG', async () => {
      start();
      const c = await client();
      await c.negotiate();
      await expectRejectCode(c.getConfig(200, 56), 'VHOST_BACKEND_FAILED');
      let refused = 0;
      backend.on('refused', () => refused++);
      await expectRejectCode(c.setConfig(0, new Uint8Array(6)), 'VHOST_NACK');
      expect(refused).to.equal(1);
      expect(await c.getFeatures()).to.equal(backend.features); // still connected
    });

    it('supports ADD_MEM_REG / REM_MEM_REG', async () => {
      start();
      const c = await client();
      await c.negotiate();
      const memory = GuestMemory.create({ regions: [{ guestPhysAddr: 0, size: 1 << 20 }, { guestPhysAddr: 1 << 24, size: 1 << 20 }] });
      toClose.push(memory);
      await c.addMemReg(memory.regions[0]!);
      await c.addMemReg(memory.regions[1]!);
      await c.remMemReg(memory.regions[0]!);
      expect(await c.getFeatures()).to.equal(backend.features);
      expect(violations).to.deep.equal([]);
    });
  });

  describe('net loopback through VirtioNet', () => {
    for (const ring of ['split', 'packed'] as const) {
      for (const eventIdx of [true, false]) {
        it(`loops 2000 frames of random sizes over 2 queue pairs, ${ring}, event index ${eventIdx ? 'on' : 'off'}`, async () => {
          start();
          const net = await VirtioNet.open(tmp.path, { queuePairs: 2, ring, eventIdx });
          toClose.push(net);
          expect(hasBit(net.features, VirtioFeature.VIRTIO_RING_F_EVENT_IDX)).to.equal(eventIdx);
          expect(hasBit(net.features, VirtioFeature.VIRTIO_F_RING_PACKED)).to.equal(ring === 'packed');
          const total = 2000;
          const sizes = Array.from({ length: total }, () => 60 + Math.floor(Math.random() * (net.maxFrameSize - 60)));
          const frames = sizes.map((s, i) => buildUdpFrameOfSize(s, i));
          const expectedBytes = sizes.reduce((a, b) => a + b, 0);
          const seen = new Uint8Array(total);
          const next = [0, 0];
          const order = [[], []] as number[][];
          let received = 0;
          let bytes = 0;
          let sent = 0;
          const bursts = [new RxBurst(256), new RxBurst(256)];
          const deadline = Date.now() + 10000;
          while (received < total && Date.now() < deadline) {
            if (sent < total) {
              const q = Math.floor(sent / 50) % 2;
              const batch = frames.slice(sent, Math.min(total, sent + 50));
              const took = net.sendBurst(batch, batch.length, q);
              for (let i = 0; i < took; i++) order[q]!.push(sent + i);
              sent += took;
            }
            await new Promise((r) => setImmediate(r));
            for (let q = 0; q < 2; q++) {
              const b = bursts[q]!;
              for (let n = net.receiveBurst(q, b); n > 0; n = net.receiveBurst(q, b)) {
                for (let i = 0; i < n; i++) {
                  const f = b.frame(i);
                  const seq = frameSequence(f)!;
                  expect(framePayloadIntact(f), `frame ${seq} intact`).to.equal(true);
                  expect(f.length).to.equal(sizes[seq]);
                  expect(seen[seq]).to.equal(0);
                  // Within a queue pair the loopback keeps order.
                  expect(seq).to.equal(order[q]![next[q]!]);
                  next[q]!++;
                  seen[seq] = 1;
                  received++;
                  bytes += f.length;
                }
              }
            }
          }
          expect(received).to.equal(total);
          expect(bytes).to.equal(expectedBytes);
          expect(backend.net.frames).to.equal(total);
          expect(backend.net.bytes).to.equal(expectedBytes);
          expect(net.totals().rxErrors).to.equal(0);
          expect(violations).to.deep.equal([]);
        });
      }
    }

    for (const stopWhilePending of [false, true]) it(stopWhilePending ? 'GET_VRING_BASE with a TX frame pending reports the completed position' : 'keeps a TX frame pending while no RX buffer is available, and delivers it later', async () => {
      start();
      const net = await VirtioNet.open(tmp.path, { queueSize: 64 });
      toClose.push(net);
      const frame = (i: number) => buildUdpFrameOfSize(100, i);
      // 64 RX buffers: fill all of them without receiving, then send 40 more.
      let sent = 0;
      while (sent < 64) {
        sent += net.sendBurst([frame(sent)], 1);
        await new Promise((r) => setImmediate(r));
      }
      for (const deadline = Date.now() + 2000; backend.net.frames < 64 && Date.now() < deadline; ) await settle(1);
      expect(backend.net.frames).to.equal(64);
      const kicks = net.counters(0).kicks;
      for (let i = 0; i < 40; i++) {
        while (net.sendBurst([frame(sent)], 1) === 0) await new Promise((r) => setImmediate(r));
        sent++;
      }
      // The quiet period ends with a round trip, not a timer: the last kick was signalled before
      // GET_FEATURES was written, and this back-end runs on this event loop, so it has taken
      // that kick (both fds were readable in the same poll) before its reply can be read here.
      expect(net.counters(0).kicks, 'the back-end was kicked for the 40 frames').to.be.above(kicks);
      await net.client.getFeatures();
      expect(backend.net.frames).to.equal(64, 'nothing moves without RX buffers');
      expect(net.txInFlight(), 'the 40 frames wait in the TX ring, none dropped').to.equal(40);
      if (stopWhilePending) {
        // GET_VRING_BASE stops TX and gives the pending chain back: the base counts completed frames only.
        expect((await net.client.getVringBase(1)).num).to.equal(64);
        expect((await net.client.getVringBase(0)).num).to.equal(64);
        return;
      }
      const burst = new RxBurst(256);
      const got: number[] = [];
      const deadline = Date.now() + 5000;
      while (got.length < 104 && Date.now() < deadline) {
        const n = net.receiveBurst(0, burst);
        for (let i = 0; i < n; i++) got.push(frameSequence(burst.frame(i))!);
        await new Promise((r) => setImmediate(r));
      }
      expect(got).to.deep.equal(Array.from({ length: 104 }, (_, i) => i));
      expect(backend.net.frames).to.equal(104);
      expect(net.txInFlight()).to.equal(0);
    });

    it('enables every ring at SET_FEATURES when PROTOCOL_FEATURES is not acknowledged', async () => {
      start();
      const c = await client();
      await c.negotiate();
      const features = bit(VirtioFeature.VIRTIO_F_VERSION_1);
      await c.setFeatures(features);
      // VirtioNet would send SET_VRING_ENABLE: that is now a violation, so drive one ring by hand.
      const memory = GuestMemory.create({ size: 1 << 20 });
      toClose.push(memory);
      await c.setMemTable(memory);
      const tx = new SplitVirtqueue({ memory, index: 1, size: 16, ringGpa: 0, eventIdx: false });
      const rx = new SplitVirtqueue({ memory, index: 0, size: 16, ringGpa: 0x4000, eventIdx: false });
      const kicks = [new EventFd(), new EventFd()];
      toClose.push(...kicks);
      for (const vq of [rx, tx]) {
        await c.setVringNum(vq.index, 16);
        await c.setVringAddr({ index: vq.index, descUserAddr: memory.userAddr(vq.addresses.desc), availUserAddr: memory.userAddr(vq.addresses.driver), usedUserAddr: memory.userAddr(vq.addresses.device) });
        await c.setVringKick(vq.index, kicks[vq.index]!.fd);
      }
      const f = buildUdpFrameOfSize(80, 3);
      memory.write(0x10000 + 12, f);
      rx.addBuffer(0x20000, 2048, true, 0);
      rx.publish();
      kicks[0]!.signal();
      tx.addBuffer(0x10000, 12 + f.length, false, 0);
      tx.publish();
      kicks[1]!.signal();
      const tokens = new Uint32Array(4);
      const lens = new Uint32Array(4);
      let reaped = 0;
      for (const deadline = Date.now() + 2000; reaped === 0 && Date.now() < deadline; await settle(1)) reaped = rx.reap(tokens, lens, 4);
      expect(reaped).to.equal(1);
      expect(lens[0]).to.equal(12 + f.length);
      expect(Buffer.from(memory.read(0x20000 + 12, f.length)).equals(Buffer.from(f))).to.equal(true);
      expect(memory.read(0x20000, 12)).to.deep.equal(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0));
      // SET_VRING_ENABLE is only for PROTOCOL_FEATURES devices: a violation now.
      await c.setVringEnable(0, true).catch(() => undefined);
      expect(violations.map((v) => [v.code, v.request])).to.deep.equal([['VHOST_FEATURE_NOT_NEGOTIATED', 'SET_VRING_ENABLE']]);
    });
  });

  describe('violations close the connection and the next one is served', () => {
    const memtable = MemoryTable.encode({ regions: [{ guestPhysAddr: 0n, memorySize: 1n << 20n, userAddr: 0x7f0000000000n, mmapOffset: 0n }] });
    const cases: [string, (p: RawFrontend, fd: number) => Promise<void> | void, string][] = [
      ['request code 0', (p) => p.send(0), 'VHOST_UNKNOWN_REQUEST'],
      ['request code 46', (p) => p.send(46), 'VHOST_UNKNOWN_REQUEST'],
      ['version 2 in the flags', (p) => p.stream.send(rawHeader(R.GET_FEATURES, 0x2, 0)), 'VHOST_BAD_VERSION'],
      ['the REPLY bit on a request', (p) => p.send(R.GET_FEATURES, V1 | 0x4), 'VHOST_BAD_FLAGS'],
      ['undefined flag bits', (p) => p.stream.send(rawHeader(R.GET_FEATURES, V1 | 0x100, 0)), 'VHOST_BAD_FLAGS'],
      ['a size field of gigabytes', (p) => p.stream.send(rawHeader(R.SET_FEATURES, V1, 0xfffffff0)), 'VHOST_PAYLOAD_TOO_LARGE'],
      ['a truncated SET_FEATURES payload', (p) => p.send(R.SET_FEATURES, V1, new Uint8Array(4)), 'VHOST_BAD_PAYLOAD_SIZE'],
      ['a payload on GET_FEATURES', (p) => p.send(R.GET_FEATURES, V1, new Uint8Array(8)), 'VHOST_BAD_PAYLOAD_SIZE'],
      ['an fd on SET_OWNER', (p, fd) => p.send(R.SET_OWNER, V1, undefined, [fd]), 'VHOST_UNEXPECTED_FDS'],
      ['SET_VRING_NUM 0', (p) => p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 0 })), 'VHOST_INVALID_PAYLOAD'],
      ['SET_VRING_NUM 3', (p) => p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 3 })), 'VHOST_INVALID_PAYLOAD'],
      ['SET_VRING_NUM 65536', (p) => p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 65536 })), 'VHOST_INVALID_PAYLOAD'],
      ['ring index 300', (p) => p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 300, num: 256 })), 'VHOST_INVALID_PAYLOAD'],
      ['ring index 8 (one past the last queue)', (p) => p.send(R.GET_VRING_BASE, V1, VringState.encode({ index: 8, num: 0 })), 'VHOST_INVALID_PAYLOAD'],
      ['ring index 0x10000 (truncates to 0)', (p) => p.send(R.SET_VRING_BASE, V1, VringState.encode({ index: 0x10000, num: 0 })), 'VHOST_INVALID_PAYLOAD'],
      ['SET_VRING_KICK with NOFD and an fd', (p, fd) => p.send(R.SET_VRING_KICK, V1, U64.encode(0x100n), [fd]), 'VHOST_UNEXPECTED_FDS'],
      ['SET_VRING_CALL without NOFD and no fd', (p) => p.send(R.SET_VRING_CALL, V1, U64.encode(0n)), 'VHOST_UNEXPECTED_FDS'],
      ['SET_VRING_KICK with bits above 8', (p, fd) => p.send(R.SET_VRING_KICK, V1, U64.encode(0x200n), [fd]), 'VHOST_INVALID_PAYLOAD'],
      ['SET_MEM_TABLE with 1 region and no fd', (p) => p.send(R.SET_MEM_TABLE, V1, memtable), 'VHOST_UNEXPECTED_FDS'],
      ['SET_MEM_TABLE with 0 regions', (p) => p.send(R.SET_MEM_TABLE, V1, new Uint8Array(8 + 32)), 'VHOST_INVALID_PAYLOAD'],
      ['SET_MEM_TABLE with an fd that cannot be mapped (an eventfd)', (p, fd) => p.send(R.SET_MEM_TABLE, V1, memtable, [fd]), 'VHOST_INVALID_PAYLOAD'],
      [
        'SET_MEM_TABLE whose region is bigger than its memfd',
        (p) => {
          const fd = libc.memfd_create('small', C.MFD_CLOEXEC);
          libc.ftruncate(fd, 4096);
          p.send(R.SET_MEM_TABLE, V1, memtable, [fd]);
          closeFd(fd);
        },
        'VHOST_MEMORY_OUT_OF_RANGE',
      ],
      [
        'SET_MEM_TABLE with overlapping user ranges',
        (p, fd) => {
          const regions = [
            { guestPhysAddr: 0n, memorySize: 1n << 20n, userAddr: 0x7f0000000000n, mmapOffset: 0n },
            { guestPhysAddr: 1n << 30n, memorySize: 1n << 20n, userAddr: 0x7f0000080000n, mmapOffset: 0n },
          ];
          const bytes = MemoryTable.encode({ regions });
          p.send(R.SET_MEM_TABLE, V1, bytes, [fd, fd]);
        },
        'VHOST_INVALID_PAYLOAD',
      ],
      ['GET_QUEUE_NUM before MQ is negotiated', (p) => p.send(R.GET_QUEUE_NUM), 'VHOST_FEATURE_NOT_NEGOTIATED'],
      ['SET_BACKEND_REQ_FD (BACKEND_REQ never offered)', (p, fd) => p.send(R.SET_BACKEND_REQ_FD, V1, undefined, [fd]), 'VHOST_FEATURE_NOT_NEGOTIATED'],
      ['GET_INFLIGHT_FD (INFLIGHT_SHMFD never offered)', (p) => p.send(R.GET_INFLIGHT_FD, V1, new Uint8Array(24)), 'VHOST_FEATURE_NOT_NEGOTIATED'],
      ['SET_FEATURES with bits never offered', (p) => p.send(R.SET_FEATURES, V1, U64.encode(1n << 60n)), 'VHOST_INVALID_PAYLOAD'],
      ['NEED_REPLY without REPLY_ACK', (p) => p.send(R.SET_OWNER, V1 | NEED_REPLY), 'VHOST_BAD_FLAGS'],
      [
        'SET_VRING_ADDR before any memory is mapped',
        (p) => {
          p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 256 }));
          p.send(R.SET_VRING_ADDR, V1, VringAddr.encode({ index: 0, flags: 0, descUserAddr: 0x1000n, usedUserAddr: 0x3000n, availUserAddr: 0x2000n, logGuestAddr: 0n }));
        },
        'VHOST_MEMORY_OUT_OF_RANGE',
      ],
      [
        'a misaligned descriptor table',
        (p) => {
          p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 256 }));
          p.send(R.SET_VRING_ADDR, V1, VringAddr.encode({ index: 0, flags: 0, descUserAddr: 0x1008n, usedUserAddr: 0x3000n, availUserAddr: 0x2000n, logGuestAddr: 0n }));
        },
        'VHOST_INVALID_PAYLOAD',
      ],
    ];

    for (const [what, act, code] of cases) {
      it(`${what}: ${code}`, async () => {
        start();
        const extra = new EventFd();
        toClose.push(extra);
        const disconnects: (string | undefined)[] = [];
        backend.on('disconnect', (_id, reason) => disconnects.push(reason?.code));
        const p = await RawFrontend.connect(tmp.path);
        toClose.push(p);
        await p.handshake(what.includes('MQ') ? 0n : what.includes('REPLY_ACK') ? 0n : undefined);
        await act(p, extra.fd);
        expect(await p.until(() => p.closed), 'the back-end closed the connection').to.equal(true);
        expect(violations.map((v) => v.code)).to.deep.equal([code]);
        expect(disconnects).to.deep.equal([code]);
        // The next connection is served normally.
        const c = await client();
        const n = await c.negotiate();
        expect(n.queueNum).to.equal(8);
        expect(backend.connections).to.equal(2);
      });
    }

    it('replies with a u64 ack under REPLY_ACK + NEED_REPLY, with the bits the spec wants', async () => {
      start();
      const p = await RawFrontend.connect(tmp.path);
      toClose.push(p);
      await p.handshake();
      const ack = await p.call(R.SET_OWNER, V1 | NEED_REPLY);
      expect(ack.flags).to.equal(0x5);
      expect(ack.request).to.equal(R.SET_OWNER);
      expect(U64.decode(ack.payload)).to.equal(0n);
      // A request with its own reply gets that reply, not an ack.
      const f = await p.call(R.GET_FEATURES, V1 | NEED_REPLY);
      expect(U64.decode(f.payload)).to.equal(backend.features);
      expect(p.replies).to.have.length(4);
    });
  });

  describe('blk', () => {
    it('reads, writes, flushes, identifies and bounds-checks over a memfd disk', async () => {
      start({ device: 'blk', blkSize: 1 << 20 });
      const c = await client();
      const n = await c.negotiate();
      expect(n.queueNum).to.equal(1);
      const config = decodeBlkConfig(await c.getConfig(0, BLK_CONFIG_SIZE), n.features);
      expect(config.capacity).to.equal(2048);
      await c.setFeatures(bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
      const memory = GuestMemory.create({ size: 1 << 20 });
      toClose.push(memory);
      await c.setMemTable(memory);
      const vq = new SplitVirtqueue({ memory, index: 0, size: 16, ringGpa: 0, eventIdx: false });
      const kick = new EventFd();
      const call = new EventFd();
      toClose.push(kick, call);
      await c.setVringNum(0, 16);
      await c.setVringAddr({ index: 0, descUserAddr: memory.userAddr(vq.addresses.desc), availUserAddr: memory.userAddr(vq.addresses.driver), usedUserAddr: memory.userAddr(vq.addresses.device) });
      await c.setVringCall(0, call.fd);
      await c.setVringKick(0, kick.fd);
      await c.setVringEnable(0, true);
      const HDR = 0x10000;
      const DATA = 0x20000;
      const STATUS = 0x30000;
      const tokens = new Uint32Array(16);
      const lens = new Uint32Array(16);
      async function request(type: number, sector: bigint, dataLen: number, write: boolean): Promise<{ status: number; len: number }> {
        const h = memory.dataView(HDR, 16);
        h.setUint32(0, type, true);
        h.setUint32(4, 0, true);
        h.setBigUint64(8, sector, true);
        memory.bytes(STATUS, 1)[0] = 0xff;
        const gpas = dataLen ? [HDR, DATA, STATUS] : [HDR, STATUS];
        const lengths = dataLen ? [16, dataLen, 1] : [16, 1];
        expect(vq.addChain(gpas, lengths, gpas.length, write && dataLen ? 2 : 1, 0)).to.equal(true);
        if (vq.publish()) kick.signal();
        for (let i = 0; i < 100; i++) {
          await settle(2);
          const got = vq.reap(tokens, lens, 16);
          if (got) return { status: memory.bytes(STATUS, 1)[0]!, len: lens[0]! };
        }
        throw new Error('no completion');
      }
      const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff);
      memory.write(DATA, pattern);
      expect(await request(1, 8n, 4096, true)).to.deep.equal({ status: 0, len: 1 });
      memory.write(DATA, new Uint8Array(4096));
      expect(await request(0, 8n, 4096, false)).to.deep.equal({ status: 0, len: 4097 });
      expect(memory.read(DATA, 4096)).to.deep.equal(pattern);
      expect(await request(4, 0n, 0, false)).to.deep.equal({ status: 0, len: 1 });
      const id = await request(8, 0n, 20, false);
      expect(id.status).to.equal(0);
      expect(Buffer.from(memory.read(DATA, 14)).toString()).to.equal('vhost-user-ref');
      expect((await request(0, 2047n, 1024, false)).status).to.equal(1, 'read past the end: IOERR');
      expect((await request(1, 1n << 60n, 512, true)).status).to.equal(1, 'huge sector: IOERR');
      expect((await request(99, 0n, 0, false)).status).to.equal(2, 'unknown type: UNSUPP');
      expect(backend.blk).to.deep.include({ reads: 1, writes: 1, flushes: 1 });
      expect(violations).to.deep.equal([]);
    });
  });

  it('blk over a file image: capacity from the file size', async () => {
    const dir = tempSocketPath('disk.img');
    writeFileSync(dir.path, new Uint8Array(3 * 512 + 100));
    try {
      start({ device: 'blk', blkImage: dir.path, queueNum: 2 });
      const c = await client();
      const n = await c.negotiate();
      expect(n.queueNum).to.equal(2);
      const config = decodeBlkConfig(await c.getConfig(0, BLK_CONFIG_SIZE), n.features);
      expect(config.capacity).to.equal(3);
      expect(config.numQueues).to.equal(2);
      expect(config.blkSize).to.equal(512);
    } finally {
      dir.cleanup();
    }
  });

  describe('resources', () => {
    it('leaks no fd and no mapping over connections, violations and close()', async () => {
      const before = resourceSnapshot();
      start();
      for (let round = 0; round < 3; round++) {
        const net = await VirtioNet.open(tmp.path, { queuePairs: 2 });
        net.sendBurst([buildUdpFrameOfSize(64, 1)]);
        await settle(5);
        net.close();
        const p = await RawFrontend.connect(tmp.path);
        const fd = new EventFd();
        await p.handshake();
        p.send(R.SET_VRING_NUM, V1, VringState.encode({ index: 0, num: 0 }), []);
        p.send(R.SET_OWNER, V1, undefined, [fd.fd]);
        await p.until(() => p.closed);
        fd.close();
        p.close();
      }
      // A connection still open when the back-end closes.
      const open = await VirtioNet.open(tmp.path, { queuePairs: 1 });
      backend.close();
      open.close();
      tmp.cleanup();
      await settle(30);
      expect(before.leaked()).to.deep.equal({ fds: 0, maps: 0 });
    });
  });
});
