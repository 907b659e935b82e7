import { expect } from 'chai';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import type { TraceEvent } from '../../lib/client/trace.js';
import type { VhostUserError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { Mapping } from '../../lib/native/mapping.js';
import { BackendRequest, FrontendRequest as R, ProtocolFeature, bit, VHOST_USER_NEED_REPLY_MASK } from '../../lib/protocol/constants.js';
import { MemoryTable, U64, VringArea } from '../../lib/protocol/payloads.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import type { VhostUserMessage } from '../../lib/transport/connection.js';
import { expectRejectCode, rawHeader, resourceSnapshot, settle } from '../helpers/resources.js';
import { RawPeer, REPLY } from '../helpers/raw-peer.js';


function nextDisconnect(client: VhostUserClient): Promise<VhostUserError> {
  return new Promise((resolve) => client.once('disconnect', resolve));
}

describe('VhostUserClient against a scripted peer', () => {
  let peer: RawPeer;
  let client: VhostUserClient | null;
  let snap: ReturnType<typeof resourceSnapshot>;

  beforeEach(() => {
    snap = resourceSnapshot();
    client = null;
  });

  afterEach(async () => {
    client?.close();
    peer?.close();
    await settle();
    expect(snap.leaked(), 'fds/maps leaked').to.deep.equal({ fds: 0, maps: 0 });
  });

  async function connect(timeoutMs = 1000): Promise<VhostUserClient> {
    client = await VhostUserClient.connect(peer.path, { timeoutMs });
    return client;
  }

  it('negotiates in QEMU order and opens the back-end channel', async () => {
    peer = RawPeer.start();
    const c = await connect();
    const n = await c.negotiate();
    expect(n.features).to.equal(peer.features);
    expect(n.offeredProtocolFeatures).to.equal(peer.protocolFeatures);
    expect(n.protocolFeatures).to.equal(peer.protocolFeatures);
    expect(n.queueNum).to.equal(2);
    expect(n.maxMemSlots).to.equal(null);
    expect(peer.log.map((m) => m.request)).to.deep.equal([
      R.GET_FEATURES,
      R.GET_PROTOCOL_FEATURES,
      R.SET_PROTOCOL_FEATURES,
      R.GET_QUEUE_NUM,
      R.SET_BACKEND_REQ_FD,
      R.SET_OWNER,
    ]);
    // REPLY_ACK negotiated: requests without a reply of their own carry NEED_REPLY.
    const setOwner = peer.log.at(-1)!;
    expect(setOwner.flags).to.equal(0x1 | VHOST_USER_NEED_REPLY_MASK);
    expect(peer.log[2]!.flags).to.equal(0x1, 'SET_PROTOCOL_FEATURES goes out before REPLY_ACK is in force');
  });

  it('hands guest memory over as fds the peer can map and read', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.negotiate();
    const memory = GuestMemory.create({ regions: [{ guestPhysAddr: 0, size: 1 << 20 }, { guestPhysAddr: 1 << 30, size: 1 << 20 }] });
    try {
      memory.write((1 << 30) + 100, Buffer.from('written by the driver'));
      await c.setMemTable(memory);
      const m = peer.log.find((x) => x.request === R.SET_MEM_TABLE)!;
      const table = MemoryTable.decode(m.payload);
      expect(table.regions.map((r) => r.guestPhysAddr)).to.deep.equal([0n, 1n << 30n]);
      expect(table.regions[1]!.userAddr).to.equal(BigInt(memory.regions[1]!.userAddr));
      expect(m.fds).to.have.length(2);
      const theirs = Mapping.map(m.fds[1]!, 1 << 20);
      expect(Buffer.from(theirs.bytes(100, 21)).toString()).to.equal('written by the driver');
      theirs.close();
    } finally {
      memory.close();
    }
  });

  it('without REPLY_ACK, follows ordering-sensitive requests with a GET_FEATURES barrier', async () => {
    peer = RawPeer.start();
    peer.protocolFeatures = bit(ProtocolFeature.MQ);
    const c = await connect();
    await c.negotiate();
    const kick = new EventFd();
    await c.setVringKick(0, kick.fd);
    kick.close();
    const codes = peer.log.map((m) => m.request);
    expect(codes.slice(-2)).to.deep.equal([R.SET_VRING_KICK, R.GET_FEATURES]);
    expect(peer.log.at(-2)!.flags).to.equal(0x1);
  });

  const badReplies: [string, (m: VhostUserMessage, p: RawPeer, extraFd: number) => void, string][] = [
    ['flags without REPLY', (m, p) => p.reply(m, U64.encode(1n), 0x1), 'VHOST_BAD_REPLY_FLAGS'],
    ['flags with NEED_REPLY', (m, p) => p.reply(m, U64.encode(1n), REPLY | 0x8), 'VHOST_BAD_REPLY_FLAGS'],
    ['another request code', (_m, p) => p.connection!.send(R.GET_PROTOCOL_FEATURES, REPLY, U64.encode(1n)), 'VHOST_REPLY_MISMATCH'],
    ['a 4-byte body', (m, p) => p.reply(m, new Uint8Array(4)), 'VHOST_BAD_REPLY_SIZE'],
    ['an empty body', (m, p) => p.reply(m), 'VHOST_BAD_REPLY_SIZE'],
    ['an unexpected fd', (m, p, fd) => p.reply(m, U64.encode(1n), REPLY, [fd]), 'VHOST_UNEXPECTED_FDS'],
    ['version 2', (m, p) => p.reply(m, U64.encode(1n), 0x6), 'VHOST_BAD_VERSION'],
    ['a size field of gigabytes', (m, p) => p.sendRaw(rawHeader(m.request, REPLY, 0xfffffff0)), 'VHOST_PAYLOAD_TOO_LARGE'],
  ];

  for (const [what, answer, code] of badReplies) {
    it(`breaks with ${code} on a GET_FEATURES reply with ${what}, fast, emits disconnect, and stays broken`, async () => {
      const extra = new EventFd();
      peer = RawPeer.start((m, p) => (m.request === R.GET_FEATURES ? answer(m, p, extra.fd) : 'default'));
      const c = await connect(5000);
      const disconnected = nextDisconnect(c);
      const t0 = Date.now();
      const err = await expectRejectCode(c.getFeatures(), code);
      expect(Date.now() - t0).to.be.below(500);
      expect((await disconnected).code).to.equal(code);
      expect(c.isBroken).to.equal(true);
      if (code.startsWith('VHOST_BAD_REPLY') || code === 'VHOST_REPLY_MISMATCH' || code === 'VHOST_UNEXPECTED_FDS') {
        expect((err as VhostUserError).request).to.equal('GET_FEATURES');
      }
      await expectRejectCode(c.setOwner(), 'VHOST_CLIENT_BROKEN');
      extra.close();
    });
  }

  it('times out a back-end that never answers, within the configured bound', async () => {
    peer = RawPeer.start(() => undefined);
    const c = await connect(150);
    const t0 = Date.now();
    const err = await expectRejectCode(c.getFeatures(), 'VHOST_TIMEOUT');
    expect(Date.now() - t0).to.be.within(140, 600);
    expect(err.message).to.match(/GET_FEATURES/);
    expect((err as VhostUserError).retryable).to.equal(true);
  });

  it('reports a disconnect in the middle of the handshake', async () => {
    peer = RawPeer.start((m, p) => {
      if (m.request === R.GET_PROTOCOL_FEATURES) {
        p.connection!.close();
        return;
      }
      return 'default';
    });
    const c = await connect();
    const disconnected = nextDisconnect(c);
    await expectRejectCode(c.negotiate(), 'VHOST_DISCONNECTED');
    expect((await disconnected).code).to.equal('VHOST_DISCONNECTED');
  });

  it('treats a NAK as an answer: VHOST_NACK naming the request, and the client stays usable', async () => {
    peer = RawPeer.start((m, p) => {
      if (m.request === R.SET_VRING_NUM) return p.ack(m, 1n);
      return 'default';
    });
    const c = await connect();
    await c.negotiate();
    const err = await expectRejectCode(c.setVringNum(0, 256), 'VHOST_NACK');
    expect((err as VhostUserError).request).to.equal('SET_VRING_NUM');
    expect(c.isBroken).to.equal(false);
    expect(await c.getFeatures()).to.equal(peer.features);
  });

  it('reports an empty GET_CONFIG reply as VHOST_BACKEND_FAILED without breaking', async () => {
    peer = RawPeer.start((m, p) => {
      if (m.request === R.GET_CONFIG) return p.reply(m);
      return 'default';
    });
    const c = await connect();
    await c.negotiate();
    await expectRejectCode(c.getConfig(0, 8), 'VHOST_BACKEND_FAILED');
    expect(c.isBroken).to.equal(false);
  });

  it('refuses requests whose protocol feature was not negotiated, without sending them', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.negotiate();
    const before = peer.log.length;
    await expectRejectCode(c.getMaxMemSlots(), 'VHOST_FEATURE_NOT_NEGOTIATED');
    await expectRejectCode(c.setStatus(1), 'VHOST_FEATURE_NOT_NEGOTIATED');
    expect(peer.log.length).to.equal(before);
  });

  it('breaks on an unsolicited message', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.getFeatures();
    const disconnected = nextDisconnect(c);
    peer.connection!.send(R.GET_FEATURES, REPLY, U64.encode(0n));
    expect((await disconnected).code).to.equal('VHOST_REPLY_MISMATCH');
  });

  it('serves back-end requests: acks CONFIG_CHANGE_MSG, refuses IOTLB_MSG, takes a host notifier fd', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.negotiate({ protocolFeatures: peer.protocolFeatures | bit(ProtocolFeature.HOST_NOTIFIER) });
    expect(peer.backendChannel).to.not.equal(null);
    const replies: bigint[] = [];
    const gotReply = () => new Promise<void>((resolve) => peer.backendChannel!.once('message', (m) => {
      expect(m.flags).to.equal(REPLY);
      replies.push(U64.decode(m.payload));
      resolve();
    }));
    const changed = new Promise<void>((resolve) => c.once('config-change', resolve));
    let r = gotReply();
    peer.backendChannel!.send(BackendRequest.CONFIG_CHANGE_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK);
    await changed;
    await r;
    r = gotReply();
    peer.backendChannel!.send(BackendRequest.IOTLB_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK, new Uint8Array(32).fill(0).map((_, i) => (i === 24 ? 3 : i === 25 ? 1 : 0)));
    await r;
    expect(replies[0]).to.equal(0n);
    expect(replies[1]).to.not.equal(0n);
    // HOST_NOTIFIER was not offered by the peer, so it is not negotiated: refused, fd closed.
    const efd = new EventFd();
    r = gotReply();
    peer.backendChannel!.send(BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK, VringArea.encode({ index: 0, nofd: false, size: 4096n, offset: 0n }), [efd.fd]);
    await r;
    efd.close();
    expect(replies[2]).to.not.equal(0n);
  });

  it('accepts a host notifier fd when HOST_NOTIFIER is negotiated, replaces it, and closes it on close()', async () => {
    peer = RawPeer.start();
    peer.protocolFeatures |= bit(ProtocolFeature.HOST_NOTIFIER);
    const c = await connect();
    await c.negotiate();
    const seen: { index: number; fd: number | null }[] = [];
    c.on('host-notifier', (n) => seen.push({ index: n.index, fd: n.fd }));
    const acks: bigint[] = [];
    peer.backendChannel!.on('message', (m) => acks.push(U64.decode(m.payload)));
    for (let i = 0; i < 2; i++) {
      const area = new EventFd();
      peer.backendChannel!.send(BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK, VringArea.encode({ index: 1, nofd: false, size: 4096n, offset: 0n }), [area.fd]);
      area.close();
    }
    for (const deadline = Date.now() + 2000; acks.length < 2 && Date.now() < deadline; ) await settle(1);
    expect(acks).to.deep.equal([0n, 0n]);
    expect(seen.map((n) => n.index)).to.deep.equal([1, 1]);
    expect(seen[0]!.fd).to.be.a('number');
    // The first fd was closed when the second replaced it; the second is closed by close() (checked by afterEach).
  });

  it('breaks when the back-end channel carries garbage', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.negotiate();
    const disconnected = nextDisconnect(c);
    peer.backendChannel!.send(99, 0x1);
    expect((await disconnected).code).to.equal('VHOST_UNKNOWN_REQUEST');
  });

  it('traces every message in both directions, decoded', async () => {
    peer = RawPeer.start();
    const events: TraceEvent[] = [];
    client = await VhostUserClient.connect(peer.path, { trace: (e) => events.push(e) });
    await client.getFeatures();
    await client.setVringNum(1, 256);
    expect(events.map((e) => `${e.direction} ${e.request}`)).to.deep.equal(['send GET_FEATURES', 'recv GET_FEATURES', 'send SET_VRING_NUM']);
    expect(events[1]!.decoded).to.equal(peer.features);
    expect(events[2]!.decoded).to.deep.equal({ index: 1, num: 256 });
  });

  it('close() is idempotent, fails later calls with VHOST_CLIENT_CLOSED, and emits no disconnect', async () => {
    peer = RawPeer.start();
    const c = await connect();
    await c.negotiate();
    let disconnects = 0;
    c.on('disconnect', () => disconnects++);
    c.close();
    c.close();
    await expectRejectCode(c.getFeatures(), 'VHOST_CLIENT_CLOSED');
    expect(disconnects).to.equal(0);
  });
});
