/**
 * The proxy in front of a real back-end: dpdk-testpmd (io forwarding) answers
 * VirtioNet through the proxy; frames come back byte for byte and DPDK's replies
 * are decoded (its features, its protocol features, its acks); the capture of that
 * conversation is decoded by tshark with the shipped dissector.
 */
import { expect } from 'chai';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { findExecutable, liveBackends, makeTempDir } from '../../lib/launch/backend-process.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { ProtocolFeature, VirtioFeature, hasBit } from '../../lib/protocol/constants.js';
import { TracePcapngWriter } from '../../lib/trace/trace-pcapng.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { closesOf, loopFrames, messagesOf, tshark, until } from './helpers.js';

describe('TraceProxy in front of dpdk-testpmd @integration', function () {
  this.timeout(40_000);
  let backend: TestpmdBackend | null = null;
  let dir: string;

  before(function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
  });
  after(async () => {
    await backend?.stop();
    backend = null;
    if (dir) await rm(dir, { recursive: true, force: true });
    expect(liveBackends()).to.have.length(0);
  });

  it('relays VirtioNet to testpmd: frames come back, DPDK\'s replies are decoded, the back-end channel is relayed, tshark decodes the capture', async () => {
    dir = await makeTempDir('vhost-trace-dpdk-');
    backend = await startTestpmd({ queues: 1, forwardMode: 'io' });
    const snap = resourceSnapshot();
    const proxy = await TraceProxy.start({ listen: path.join(dir, 'proxy.sock'), connect: backend.socketPath });
    const capture = path.join(dir, 'dpdk.pcapng');
    const pcap = await TracePcapngWriter.open(capture, proxy.startEpochMs);
    proxy.on('record', (r) => pcap.write(r));
    try {
      const net = await VirtioNet.open(proxy.listenPath, { queueSize: 256, timeoutMs: 5000 });
      try {
        expect(await loopFrames(net, 100, 10_000)).to.deep.equal(Array.from({ length: 100 }, (_, i) => i));
      } finally {
        net.close();
      }
      await until(() => closesOf(proxy.records).some((r) => r.channel === 'frontend'), 5000);
    } finally {
      await proxy.close();
      await pcap.close();
    }
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });

    const replies = messagesOf(proxy.records, 'backend').filter((r) => r.channel === 'frontend');
    const features = replies.find((r) => r.request === 'GET_FEATURES')!.decoded as bigint;
    expect(hasBit(features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)).to.equal(true);
    expect(hasBit(features, VirtioFeature.VIRTIO_F_RING_PACKED), 'DPDK offers packed rings').to.equal(true);
    const protocol = replies.find((r) => r.request === 'GET_PROTOCOL_FEATURES')!;
    expect(hasBit(protocol.decoded as bigint, ProtocolFeature.BACKEND_REQ)).to.equal(true);
    expect(protocol.text).to.match(/^GET_PROTOCOL_FEATURES 0x[0-9a-f]{16} \(MQ LOG_SHMFD RARP REPLY_ACK MTU BACKEND_REQ/);
    const sent = messagesOf(proxy.records, 'frontend');
    const setFd = sent.find((r) => r.request === 'SET_BACKEND_REQ_FD')!;
    expect(setFd.fds, 'the back-end channel socket went to DPDK (the proxy\'s own end)').to.equal(1);
    expect(replies.find((r) => r.request === 'SET_BACKEND_REQ_FD')!.text).to.equal('SET_BACKEND_REQ_FD ack 0');
    expect(sent.find((r) => r.request === 'SET_MEM_TABLE')!.fds).to.be.above(0);
    expect(sent.filter((r) => r.request === 'SET_VRING_KICK').map((r) => r.fds)).to.deep.equal([1, 1]);
    const [end] = closesOf(proxy.records).filter((r) => r.channel === 'frontend');
    expect(end).to.include({ closedBy: 'frontend', connection: 1 });

    if (!findExecutable('tshark')) return;
    const v = await tshark(capture, '-V');
    expect(v).to.match(/Request: 15 \(GET_PROTOCOL_FEATURES\)[^]*?REPLY: True[^]*?Protocol features: 0x[0-9a-f]{16}\n(\s+Feature: \w+\n)*\s+Feature: BACKEND_REQ/);
    expect(v).to.match(/Request: 21 \(SET_BACKEND_REQ_FD\)[^]*?File descriptors \(SCM_RIGHTS\): 1/);
    expect(v).to.match(/Request: 5 \(SET_MEM_TABLE\)[^]*?Region 0: gpa/);
    expect(v).not.to.match(/Malformed|Lua Error/);
  });
});
