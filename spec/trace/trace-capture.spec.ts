/**
 * One recorded session in every output: two connections through one proxy (VirtioNet
 * looping frames through the reference back-end; then a client whose back-end opens
 * the SET_BACKEND_REQ_FD channel and sends requests on it), written as text lines,
 * JSON lines and pcapng. The pcapng is read back by an independent structural
 * parser and by tshark with the shipped Lua dissector.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { findExecutable, makeTempDir } from '../../lib/launch/backend-process.js';
import { LINKTYPE_USER0 } from '../../lib/pcap/pcapng-writer.js';
import { BackendRequest, VHOST_USER_NEED_REPLY_MASK } from '../../lib/protocol/constants.js';
import { VringState } from '../../lib/protocol/payloads.js';
import { formatRecord, formatTextLine } from '../../lib/trace/trace-format.js';
import { TracePcapngWriter, tracePacket, TRACE_PREFIX_SIZE } from '../../lib/trace/trace-pcapng.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import type { TraceRecord } from '../../lib/trace/trace-record.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { closesOf, loopFrames, messagesOf, tshark, until } from './helpers.js';
import { parsePcapng } from './pcapng-parse.js';

describe('trace outputs of one recorded session (text, JSON, pcapng, tshark)', function () {
  this.timeout(20_000);
  let dir: string;
  let records: TraceRecord[];
  let capture: string;

  before(async () => {
    dir = await makeTempDir('vhost-trace-');
    const backendPath = path.join(dir, 'backend.sock');
    const listen = path.join(dir, 'proxy.sock');
    capture = path.join(dir, 'trace.pcapng');
    const backend = ReferenceBackend.listen(backendPath, { device: 'net' });
    const proxy = await TraceProxy.start({ listen, connect: backendPath });
    const pcap = await TracePcapngWriter.open(capture, proxy.startEpochMs);
    proxy.on('record', (r) => pcap.write(r));
    try {
      const net = await VirtioNet.open(listen, { queueSize: 64, timeoutMs: 2000 });
      expect(await loopFrames(net, 10)).to.have.length(10);
      net.close();
      await until(() => proxy.openConnections === 0);
      backend.close();
      // Connection 2: a back-end that opens its channel and uses it.
      const peer = RawPeer.start(undefined, backendPath);
      try {
        const client = await VhostUserClient.connect(listen, { timeoutMs: 2000 });
        await client.negotiate();
        await until(() => peer.backendChannel !== null);
        const replies: unknown[] = [];
        peer.backendChannel!.on('message', (m) => replies.push(m));
        peer.backendChannel!.send(BackendRequest.CONFIG_CHANGE_MSG, 0x1 | VHOST_USER_NEED_REPLY_MASK);
        peer.backendChannel!.send(BackendRequest.VRING_CALL, 0x1 | VHOST_USER_NEED_REPLY_MASK, VringState.encode({ index: 1, num: 0 }));
        await until(() => replies.length === 2);
        client.close();
        await until(() => proxy.openConnections === 0);
      } finally {
        peer.close();
      }
    } finally {
      await proxy.close();
      backend.close();
      await pcap.close();
    }
    records = [...proxy.records];
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('records both connections: numbered, each with its end, the back-end channel decoded', () => {
    expect(closesOf(records).map((r) => `${r.connection} ${r.channel} ${r.closedBy}`)).to.deep.equal([
      '1 frontend frontend',
      '2 frontend frontend',
      '2 backend proxy',
    ]);
    const channel = messagesOf(records).filter((r) => r.channel === 'backend');
    expect(channel.map((r) => `${r.from} ${r.text}`), JSON.stringify(channel.map((r) => r.text))).to.deep.equal([
      'backend CONFIG_CHANGE_MSG',
      'backend VRING_CALL {index: 1, num: 0}',
      'frontend CONFIG_CHANGE_MSG ack 0',
      // INBAND_NOTIFICATIONS is not negotiated, so the client refuses it (-EOPNOTSUPP).
      'frontend VRING_CALL ack -95 (failure)',
    ]);
  });

  it('text lines: aligned columns with time, direction, flags and fds', () => {
    const lines = records.map(formatTextLine);
    const first = lines[0]!;
    expect(first).to.match(/^ +\d+\.\d{3} {2}#1 {3}F->B {2}.{10} {2}fds=0 {2}GET_FEATURES$/);
    const column = first.indexOf('GET_FEATURES');
    for (const [i, r] of records.entries()) {
      if (r.kind === 'message') expect(lines[i]!.indexOf(r.request), lines[i]).to.equal(column);
    }
    expect(lines.some((l) => /F->B {2}NEED_REPLY {2}fds=1 {2}SET_MEM_TABLE \{regions: \[\{guestPhysAddr: 0x0,/.test(l)), String(/F->B {2}NEED_REPLY {2}fds=1 {2}SET_MEM_TABLE \{regions: \[\{guestPhysAddr: 0x0,/)).to.equal(true);
    expect(lines.some((l) => /F<=B {2}NEED_REPLY {2}fds=0 {2}CONFIG_CHANGE_MSG$/.test(l)), String(/F<=B {2}NEED_REPLY {2}fds=0 {2}CONFIG_CHANGE_MSG$/)).to.equal(true);
    expect(lines.some((l) => /F=>B {2}REPLY {7}fds=0 {2}VRING_CALL ack -95 \(failure\)$/.test(l)), String(/F=>B {2}REPLY {7}fds=0 {2}VRING_CALL ack -95 \(failure\)$/)).to.equal(true);
    expect(lines.some((l) => /#2 {3}---- {2}frontend closed the connection after /.test(l)), String(/#2 {3}---- {2}frontend closed the connection after /)).to.equal(true);
  });

  it('JSON lines: from, request, fds, flags, decoded values with bigints as hex', () => {
    const objects = records.map((r) => JSON.parse(formatRecord(r, 'json')) as Record<string, unknown>);
    for (const o of objects) expect(o.kind === 'close' || ('from' in o && 'request' in o && typeof o.fds === 'number'), JSON.stringify(o)).to.equal(true);
    const kick = objects.find((o) => o.request === 'SET_VRING_KICK' && o.from === 'frontend')!;
    expect(kick).to.include({ channel: 'frontend', fds: 1, needReply: true, reply: false, size: 8, decoded: '0x0', payload: '0000000000000000' });
    const mem = objects.find((o) => o.request === 'SET_MEM_TABLE' && o.from === 'frontend')!;
    expect((mem.decoded as { regions: { guestPhysAddr: string }[] }).regions[0]!.guestPhysAddr).to.equal('0x0');
    expect(objects.at(-1)).to.include({ kind: 'close', connection: 2, channel: 'backend', closedBy: 'proxy' });
  });

  it('pcapng: a section header, one USER0 interface, one packet per record with the prefix, the wire bytes, direction and comment', () => {
    const { epbs, idbs } = parsePcapng(readFileSync(capture));
    expect(idbs).to.have.length(1);
    expect(idbs[0]!.linkType).to.equal(LINKTYPE_USER0);
    expect([...idbs[0]!.options.get(9)![0]!]).to.deep.equal([9]); // if_tsresol: nanoseconds
    expect(epbs).to.have.length(records.length);
    let last = 0n;
    for (const [i, r] of records.entries()) {
      const e = epbs[i]!;
      expect(e.interfaceId).to.equal(0);
      expect(e.capLen).to.equal(e.origLen);
      expect(Buffer.from(e.data).equals(Buffer.from(tracePacket(r))), `packet ${i}`).to.equal(true);
      expect(e.comment).to.equal(r.text);
      expect(e.timestampNs >= last).to.equal(true);
      last = e.timestampNs;
      if (r.kind === 'message') {
        expect(Buffer.from(e.data.subarray(TRACE_PREFIX_SIZE)).equals(Buffer.from(r.bytes))).to.equal(true);
        expect(e.data[2]).to.equal(r.fds);
        expect(e.flags).to.equal(r.from === 'backend' ? 1 : 2);
      }
    }
  });

  it('tshark with wireshark/vhost-user.lua names every request, its flags, fds and decoded fields', async function () {
    if (!findExecutable('tshark')) {
      process.stdout.write('      skipped: tshark is not installed (apt-get install tshark)\n');
      this.skip();
    }
    const fields = await tshark(capture, '-T', 'fields', '-E', 'separator=,', '-e', 'vhostuser.connection', '-e', 'vhostuser.request_name', '-e', 'vhostuser.fds', '-e', 'vhostuser.from_backend', '-e', 'vhostuser.backend_channel');
    const expected = records.map((r) =>
      r.kind === 'message'
        ? `${r.connection},${r.request},${r.fds},${r.from === 'backend' ? 1 : 0},${r.channel === 'backend' ? 1 : 0}`
        : `${r.connection},,,${r.closedBy === 'backend' ? 1 : 0},${r.channel === 'backend' ? 1 : 0}`,
    );
    expect(fields.trim().split('\n')).to.deep.equal(expected);
    const v = await tshark(capture, '-V');
    for (const want of [
      'Request: 1 (GET_FEATURES)',
      /Features: 0x[0-9a-f]{16}\n\s+Feature: /,
      /Protocol features: 0x[0-9a-f]{16}\n\s+Feature: MQ/,
      'Feature: VIRTIO_F_VERSION_1',
      /\.\.\.\. 1\.\.\. = NEED_REPLY: True/,
      /\.\.\.\. \.1\.\. = REPLY: True/,
      /Request: 5 \(SET_MEM_TABLE\)[^]*?Regions: 1\n[^]*?Region 0: gpa 0x0000000000000000 size 0x0000000000200000/,
      /Request: 8 \(SET_VRING_NUM\)[^]*?Vring index: 0\n\s+Num: 64/,
      /Request: 9 \(SET_VRING_ADDR\)[^]*?Descriptor table address: 0x[0-9a-f]+\n\s+Used ring address/,
      /Request: 12 \(SET_VRING_KICK\)[^]*?Vring index: 1\n\s+NOFD \(no fd: polling\): False/,
      'File descriptors (SCM_RIGHTS): 1',
      /Request: 24 \(GET_CONFIG\)[^]*?Config offset: 0\n\s+Config size: 24/,
      /Device status: 0x[0-9a-f]+ \(ACKNOWLEDGE \| DRIVER \| DRIVER_OK \| FEATURES_OK\)/,
      'Ack (0 = success): 0',
      /Request: 2 \(CONFIG_CHANGE_MSG\)/,
      /Back-end channel: True/,
      /Request: 4 \(VRING_CALL\)[^]*?Vring index: 1\n\s+Num: 0/,
      /Connection end: frontend closed the connection after/,
      'Direction: Inbound',
      'Direction: Outbound',
    ]) {
      if (typeof want === 'string') expect(v).to.include(want);
      else expect(v).to.match(want);
    }
    expect(v).not.to.match(/Malformed|Lua Error|Dissector bug/);
    // With the device preference, the device's feature bits are named too.
    const net = await tshark(capture, '-o', 'vhostuser.device:net', '-V', '-Y', 'vhostuser.request_name == "GET_FEATURES" && vhostuser.flags.reply');
    expect(net).to.include('Feature: VIRTIO_NET_F_MRG_RXBUF');
    expect(net).not.to.include('Feature: BIT_');
  });
});
