/**
 * The proxy's edges: the back-end request channel (SET_BACKEND_REQ_FD) relayed
 * through the proxy's own socketpair, connection ends (who closed, after what),
 * reconnects numbered, and hostile bytes from either side, which are recorded
 * and end the conversation in bounded time without taking the proxy down.
 */
import { expect } from 'chai';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { liveBackends, makeTempDir } from '../../lib/launch/backend-process.js';
import { startReferenceBackend } from '../../lib/launch/reference-backend.js';
import { BackendRequest, FrontendRequest as R, ProtocolFeature, VHOST_USER_NEED_REPLY_MASK, bit } from '../../lib/protocol/constants.js';
import { U64, VringArea } from '../../lib/protocol/payloads.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import { UnixStream } from '../../lib/transport/unix-stream.js';
import { RawPeer, REPLY, type Handler } from '../helpers/raw-peer.js';
import { leakedAfter, rawHeader, resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';
import { closesOf, loopFrames, messagesOf, until } from './helpers.js';

/** Reads from a raw stream until the peer closes (true) or `ms` pass (false). */
async function peerCloses(s: UnixStream, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = s.recv(0, 4096);
    for (const fd of r.fds) EventFd.prototype.close.call({ fd } as EventFd);
    if (r.n === 0) return true;
    if (r.n < 0) await settle(2);
  }
  return false;
}

describe('TraceProxy edges', function () {
  this.timeout(10_000);
  let tmpP: ReturnType<typeof tempSocketPath>;
  let peer: RawPeer | null = null;
  let proxy: TraceProxy | null = null;
  const toClose: { close(): void }[] = [];
  let snap: ReturnType<typeof resourceSnapshot>;

  beforeEach(() => {
    snap = resourceSnapshot();
    tmpP = tempSocketPath('proxy.sock');
  });
  afterEach(async () => {
    for (const c of toClose.splice(0)) c.close();
    await proxy?.close();
    proxy = null;
    peer?.close();
    peer = null;
    tmpP.cleanup();
    const leaked = await leakedAfter(snap);
    expect({ fds: Math.max(0, leaked.fds), maps: Math.max(0, leaked.maps) }).to.deep.equal({ fds: 0, maps: 0 });
  });

  async function start(handler?: Handler): Promise<TraceProxy> {
    peer = RawPeer.start(handler);
    proxy = await TraceProxy.start({ listen: tmpP.path, connect: peer.path, connectTimeoutMs: 2000 });
    return proxy;
  }

  it('relays the back-end channel: the back-end gets the proxy\'s socket, requests, fds and acks pass and are decoded', async () => {
    await start();
    peer!.protocolFeatures |= bit(ProtocolFeature.HOST_NOTIFIER);
    const client = await VhostUserClient.connect(tmpP.path, { timeoutMs: 2000 });
    toClose.push(client);
    await client.negotiate();
    await until(() => peer!.backendChannel !== null);
    const setFd = messagesOf(proxy!.records, 'frontend').find((r) => r.request === 'SET_BACKEND_REQ_FD')!;
    expect(setFd.fds).to.equal(1);
    expect(setFd.needReply).to.equal(true);

    const acks: bigint[] = [];
    peer!.backendChannel!.on('message', (m) => acks.push(U64.decode(m.payload)));
    const changed = new Promise<void>((resolve) => client.once('config-change', resolve));
    peer!.backendChannel!.send(BackendRequest.CONFIG_CHANGE_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK);
    await changed;
    const notifiers: (number | null)[] = [];
    client.on('host-notifier', (n) => notifiers.push(n.fd));
    const area = new EventFd();
    peer!.backendChannel!.send(BackendRequest.VRING_HOST_NOTIFIER_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK, VringArea.encode({ index: 1, nofd: false, size: 4096n, offset: 0n }), [area.fd]);
    area.close();
    await until(() => acks.length === 2);
    expect(acks).to.deep.equal([0n, 0n]);
    expect(notifiers).to.have.length(1);
    expect(notifiers[0]).to.be.a('number');

    const channel = proxy!.messages.filter((r) => r.channel === 'backend');
    expect(channel.map((r) => `${r.from} ${r.request} fds=${r.fds}`)).to.deep.equal([
      'backend CONFIG_CHANGE_MSG fds=0',
      'frontend CONFIG_CHANGE_MSG fds=0',
      'backend VRING_HOST_NOTIFIER_MSG fds=1',
      'frontend VRING_HOST_NOTIFIER_MSG fds=0',
    ]);
    expect(channel[0]!.needReply).to.equal(true);
    expect(channel[1]!.reply).to.equal(true);
    expect(channel[1]!.text).to.equal('CONFIG_CHANGE_MSG ack 0');
    expect(channel[2]!.decoded).to.deep.equal({ index: 1, nofd: false, size: 4096n, offset: 0n });
    expect(channel[2]!.text).to.equal('VRING_HOST_NOTIFIER_MSG {index: 1, nofd: false, size: 0x1000, offset: 0x0}');

    // The back-end drops its channel: recorded on that channel, and relayed (this client then
    // treats its connection as broken and closes it, which is recorded next).
    peer!.backendChannel!.close();
    await until(() => closesOf(proxy!.records).length === 2);
    expect(closesOf(proxy!.records)[0]).to.deep.equal({
      kind: 'close',
      time: closesOf(proxy!.records)[0]!.time,
      connection: 1,
      channel: 'backend',
      closedBy: 'backend',
      afterRequest: 'VRING_HOST_NOTIFIER_MSG',
      afterFrom: 'frontend',
      text: 'backend closed the back-end channel after VRING_HOST_NOTIFIER_MSG from the frontend',
    });
    expect(closesOf(proxy!.records)[1]).to.include({ channel: 'frontend', closedBy: 'frontend' });
  });

  it('records who ended the connection after which message, and numbers reconnects', async () => {
    await start();
    let client = await VhostUserClient.connect(tmpP.path, { timeoutMs: 2000 });
    await client.getFeatures();
    client.close();
    await until(() => closesOf(proxy!.records).length === 1);
    expect(closesOf(proxy!.records)[0]).to.include({ connection: 1, closedBy: 'frontend', afterRequest: 'GET_FEATURES', afterFrom: 'backend' });

    // The RawPeer serves one connection: a new one for the reconnect, on the same path.
    peer!.close();
    const dir = await makeTempDir('vhost-trace-');
    toClose.push({ close: () => void rm(dir, { recursive: true, force: true }) });
    peer = RawPeer.start(undefined, path.join(dir, 'again.sock'));
    await proxy!.close();
    proxy = await TraceProxy.start({ listen: tmpP.path, connect: peer.path });
    client = await VhostUserClient.connect(tmpP.path, { timeoutMs: 2000 });
    toClose.push(client);
    await client.getFeatures();
    const disconnected = new Promise<void>((resolve) => client.once('disconnect', () => resolve()));
    peer.connection!.close(); // the back-end goes away
    await disconnected;
    await until(() => closesOf(proxy!.records).length === 1);
    expect(closesOf(proxy.records)[0]).to.include({ connection: 1, closedBy: 'backend', afterRequest: 'GET_FEATURES' });
    peer.close();
    peer = RawPeer.start(undefined, path.join(dir, 'again.sock'));
    const third = await VhostUserClient.connect(tmpP.path, { timeoutMs: 2000 });
    toClose.push(third);
    await third.getFeatures();
    expect(proxy.connections).to.equal(2);
    expect(messagesOf(proxy.records).at(-1)).to.include({ connection: 2, request: 'GET_FEATURES', from: 'backend' });
  });

  for (const side of ['frontend', 'backend'] as const) {
    it(`a header of 1 GiB from the ${side}: recorded with VHOST_PAYLOAD_TOO_LARGE, both sides closed at once, the proxy serves the next connection`, async () => {
      await start((m, p) => {
        if (side === 'backend' && m.request === R.GET_FEATURES) {
          p.sendRaw(rawHeader(R.GET_FEATURES, REPLY, 1 << 30));
          return;
        }
        return 'default';
      });
      const raw = await UnixStream.connect(tmpP.path);
      toClose.push(raw);
      raw.send(side === 'frontend' ? rawHeader(R.GET_FEATURES, 0x1, 1 << 30) : rawHeader(R.GET_FEATURES, 0x1, 0));
      expect(await peerCloses(raw), 'the front-end sees the proxy close').to.equal(true);
      await until(() => peer!.connection?.isClosed === true);
      expect(peer!.connection!.isClosed, 'the back-end socket is closed too').to.equal(true);
      const [end] = closesOf(proxy!.records);
      expect(end).to.include({ connection: 1, closedBy: 'proxy' });
      expect(end!.error).to.include({ code: 'VHOST_PAYLOAD_TOO_LARGE', from: side });
      expect(proxy!.messages.map((r) => r.request)).to.deep.equal(side === 'frontend' ? [] : ['GET_FEATURES']);
      expect(proxy!.openConnections).to.equal(0);
    });
  }

  it('passes an unknown request code through (UNKNOWN(99)) and a version-0 header ends the connection with VHOST_BAD_VERSION', async () => {
    await start((m) => (m.request === 99 ? undefined : 'default'));
    const raw = await UnixStream.connect(tmpP.path);
    toClose.push(raw);
    raw.send(new Uint8Array([...rawHeader(99, 0x1, 4), 1, 2, 3, 4]));
    await until(() => peer!.log.length === 1);
    expect(peer!.log[0]).to.include({ request: 99, flags: 1 });
    expect([...peer!.log[0]!.payload]).to.deep.equal([1, 2, 3, 4]);
    expect(proxy!.messages[0]).to.include({ request: 'UNKNOWN(99)', code: 99, size: 4, text: 'UNKNOWN(99) <4 bytes, not decoded: 01020304>' });
    raw.send(rawHeader(R.GET_FEATURES, 0x0, 0));
    expect(await peerCloses(raw)).to.equal(true);
    expect(closesOf(proxy!.records)[0]!.error).to.include({ code: 'VHOST_BAD_VERSION', from: 'frontend' });
  });

  it('a back-end nobody listens on: the front-end is closed after connectTimeoutMs, recorded with the connect error', async () => {
    const dir = await makeTempDir('vhost-trace-');
    try {
      proxy = await TraceProxy.start({ listen: tmpP.path, connect: path.join(dir, 'nobody.sock'), connectTimeoutMs: 200 });
      const raw = await UnixStream.connect(tmpP.path);
      toClose.push(raw);
      expect(await peerCloses(raw, 3000)).to.equal(true);
      expect(closesOf(proxy.records)[0]!.error).to.include({ code: 'VHOST_CONNECT_TIMEOUT', from: 'backend' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a back-end process killed with SIGKILL mid-traffic: recorded as closed by the back-end, the front-end sees the disconnect', async () => {
    const dir = await makeTempDir('vhost-trace-');
    const backend = await startReferenceBackend({ socketPath: path.join(dir, 'ref.sock') });
    // Node opens one fd for good at the first child started with piped stdio: counted from here.
    snap = resourceSnapshot();
    try {
      proxy = await TraceProxy.start({ listen: tmpP.path, connect: backend.socketPath });
      const net = await VirtioNet.open(tmpP.path, { queueSize: 64, timeoutMs: 2000 });
      toClose.push(net);
      expect(await loopFrames(net, 20)).to.have.length(20);
      await backend.kill9();
      await until(() => closesOf(proxy!.records).length > 0);
      const [end] = closesOf(proxy.records);
      expect(end).to.include({ connection: 1, channel: 'frontend', closedBy: 'backend' });
      expect(end!.error).to.equal(undefined);
      await until(() => net.client.isBroken);
      expect(net.client.isBroken).to.equal(true);
    } finally {
      await backend.stop();
      await rm(dir, { recursive: true, force: true });
      expect(liveBackends()).to.have.length(0);
    }
  });
});
