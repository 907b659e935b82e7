/**
 * The tracing proxy between real parts: VirtioNet (this library) and the
 * reference back-end (in this process), memfd memory, eventfds and SCM_RIGHTS
 * through the proxy. Frames loop through the back-end and come back intact, so
 * every fd really reached the other side; the records show what passed.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import type { TraceRecord } from '../../lib/trace/trace-record.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';
import { closesOf, loopFrames, messagesOf, until } from './helpers.js';

describe('TraceProxy with VirtioNet and the reference back-end', function () {
  this.timeout(10_000);
  let tmpB: ReturnType<typeof tempSocketPath>;
  let tmpP: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend | null = null;
  let proxy: TraceProxy | null = null;
  let net: VirtioNet | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;

  beforeEach(() => {
    snap = resourceSnapshot();
    tmpB = tempSocketPath('backend.sock');
    tmpP = tempSocketPath('proxy.sock');
  });
  afterEach(async () => {
    net?.close();
    net = null;
    await proxy?.close();
    proxy = null;
    backend?.close();
    backend = null;
    tmpB.cleanup();
    tmpP.cleanup();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('relays the whole conversation with its fds: frames loop intact, and the trace shows each request decoded', async () => {
    backend = ReferenceBackend.listen(tmpB.path, { device: 'net' });
    const seen: TraceRecord[] = [];
    proxy = await TraceProxy.start({ listen: tmpP.path, connect: tmpB.path, onRecord: (r) => seen.push(r) });
    const emitted: TraceRecord[] = [];
    proxy.on('record', (r) => emitted.push(r));
    net = await VirtioNet.open(tmpP.path, { queueSize: 64, timeoutMs: 2000 });
    const got = await loopFrames(net, 50);
    expect(got).to.deep.equal(Array.from({ length: 50 }, (_, i) => i));
    expect(backend.net.frames).to.equal(50);

    const fromFrontend = messagesOf(proxy.records, 'frontend');
    const names = fromFrontend.map((r) => r.request);
    expect(names.slice(0, 2)).to.deep.equal(['GET_FEATURES', 'GET_PROTOCOL_FEATURES']);
    for (const n of ['SET_FEATURES', 'SET_OWNER', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_BASE', 'SET_VRING_KICK', 'SET_VRING_CALL']) {
      expect(names, n).to.include(n);
    }
    const memTable = fromFrontend.find((r) => r.request === 'SET_MEM_TABLE')!;
    const regions = (memTable.decoded as { regions: unknown[] }).regions;
    expect(memTable.fds).to.equal(regions.length).and.to.be.above(0);
    expect(memTable.text).to.match(/^SET_MEM_TABLE \{regions: \[\{guestPhysAddr: 0x/);
    for (const kick of fromFrontend.filter((r) => r.request === 'SET_VRING_KICK')) expect(kick.fds).to.equal(1);
    const num = fromFrontend.find((r) => r.request === 'SET_VRING_NUM')!;
    expect(num.decoded).to.deep.equal({ index: 0, num: 64 });
    expect(num.text).to.equal('SET_VRING_NUM {index: 0, num: 64}');
    expect(num.size).to.equal(8);
    expect(num.bytes.length).to.equal(20);

    const replies = messagesOf(proxy.records, 'backend');
    const features = replies.find((r) => r.request === 'GET_FEATURES')!;
    expect(features.reply).to.equal(true);
    expect(features.decoded).to.equal(backend.features);
    expect(features.text).to.match(/^GET_FEATURES 0x[0-9a-f]{16} \(.*VIRTIO_F_VERSION_1/);
    expect(replies.every((r) => r.channel === 'frontend' && r.reply && r.connection === 1)).to.equal(true);
    // Every record went to onRecord and to the event, in the same order.
    expect(seen).to.deep.equal(proxy.records);
    expect(emitted).to.deep.equal(proxy.records);
    const times = proxy.records.map((r) => r.time);
    expect(times).to.deep.equal([...times].sort((a, b) => a - b));

    net.close();
    net = null;
    await until(() => closesOf(proxy!.records).length > 0);
    const [end] = closesOf(proxy.records);
    expect(end).to.include({ connection: 1, channel: 'frontend', closedBy: 'frontend' });
    expect(end!.afterRequest).to.be.a('string');
  });
});
