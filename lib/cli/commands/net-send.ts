/**
 * `vhost-user net send`: transmits frames through a virtio-net TX ring and exits
 * once the back-end has taken every one of them back out of the ring.
 */
import { VhostUserError } from '../../errors.js';
import { TxOffloads } from '../../devices/net/tx-offloads.js';
import { buildUdpFrameOfSize } from '../../net/frame-builder.js';
import { buildL4Frame, l4HeadersLength, maxL4Payload } from '../../net/l4-frame.js';
import { readPcapFrames } from '../../pcap/pcap-reader.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { netOptions, openNet, rate, rateLine, yieldToLoop } from './net-common.js';

/** Synthetic frames are built once and cycled: sendBurst copies, so reuse is safe. */
const SYNTHETIC_POOL = 4096;
const BURST = 32;

export default defineCommand({
  name: 'net send',
  summary: 'send frames through a virtio-net TX ring (synthetic UDP, or from a pcap)',
  description:
    'Opens a virtio-net device on the back-end, sends --count frames (UDP frames of --size bytes\n' +
    'carrying a sequence number, or the frames of --pcap in a loop), and exits 0 once the back-end\n' +
    'has consumed all of them. Prints one summary line (frames, bytes, Mpps); progress shows on a terminal.',
  options: {
    ...netOptions,
    count: { type: 'number', integer: true, min: 1, valueName: 'N', description: 'frames to send (default: 1000, or the pcap\'s frame count)' },
    size: { type: 'number', integer: true, min: 60, max: 9000, default: 64, valueName: 'BYTES', description: 'synthetic frame size' },
    pcap: { type: 'string', valueName: 'IN', description: 'send the frames of this pcap file instead' },
    csum: { type: 'boolean', description: 'UDP frames whose checksum the device computes (VIRTIO_NET_F_CSUM, NEEDS_CSUM; the frame holds the pseudo-header sum)' },
    tso: { type: 'number', integer: true, min: 1, max: 65495, valueName: 'SIZE', description: 'TCP frames of 65535 bytes the device cuts into segments of SIZE payload bytes (HOST_TSO4/6, GSO); --size is not used' },
    ipv6: { type: 'boolean', description: 'with --csum or --tso: IPv6 instead of IPv4' },
  },
  async run(args, io) {
    const pool = args.pcap ? readPcapFrames(args.pcap, io.fs ? { fs: io.fs } : {}) : [];
    if (args.pcap && pool.length === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${args.pcap} holds no frames`);
    const count = args.count ?? (args.pcap ? pool.length : 1000);
    const offload = args.tso !== undefined ? 'tso' : args.csum ? 'csum' : null;
    if (offload && args.pcap) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `--${offload} sends synthetic frames; it does not go with --pcap`);
    const offloads = offload ? new TxOffloads(BURST) : undefined;
    if (offload) {
      // Offloaded frames: UDP (--csum) of --size bytes, or TCP GSO frames (--tso) of the largest payload, each with the pseudo-header sum only.
      const ipVersion = args.ipv6 ? 6 : 4;
      const protocol = offload === 'tso' ? 'tcp' : 'udp';
      // TSO frames are 65 535 bytes: 64 KiB, and the largest frame tshark still verifies.
      const payloadLength = offload === 'tso' ? Math.min(maxL4Payload(ipVersion, 'tcp'), 65535 - l4HeadersLength(ipVersion, 'tcp')) : args.size - l4HeadersLength(ipVersion, 'udp');
      if (payloadLength < 4) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `--size ${args.size} leaves no room for a payload`);
      const n = Math.min(count, offload === 'tso' ? 64 : SYNTHETIC_POOL);
      for (let s = 0; s < n; s++) pool.push(buildL4Frame({ ipVersion, protocol, payloadLength, seq: s, tcpSeq: 1 + s * payloadLength, checksum: 'partial' }));
      // Every frame has the same headers, so one set of offload entries serves every burst.
      for (let i = 0; i < BURST; i++) offloads!.prepare(i, pool[0]!, pool[0]!.length, args.tso ?? 0);
    } else if (!args.pcap) for (let s = 0; s < Math.min(count, SYNTHETIC_POOL); s++) pool.push(buildUdpFrameOfSize(args.size, s));
    const net = await openNet('net send', args, offload === 'tso' ? { tso: true } : offload === 'csum' ? { csum: true } : {});
    try {
      if (offload === 'csum' && !net.offloads.csum) throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', '--csum: the back-end does not offer VIRTIO_NET_F_CSUM');
      if (offload === 'tso' && !(args.ipv6 ? net.offloads.tso6 : net.offloads.tso4)) {
        throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', `--tso: the back-end does not offer VIRTIO_NET_F_HOST_TSO${args.ipv6 ? 6 : 4} (DPDK's net_vhost needs tso=1)`);
      }
      const longest = pool.reduce((m, f) => Math.max(m, f.length), 0);
      if (longest > net.maxFrameSize) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `a ${longest}-byte frame does not fit a ${net.maxFrameSize}-byte TX slot`);
      const burst = new Array<Uint8Array>(BURST);
      let sent = 0;
      let bytes = 0;
      let lastProgress = Date.now();
      let stalledSince = Date.now();
      const t0 = process.hrtime.bigint();
      for (let spins = 0; sent < count; spins++) {
        const n = Math.min(BURST, count - sent);
        for (let i = 0; i < n; i++) burst[i] = pool[(sent + i) % pool.length]!;
        const q = spins % net.queuePairs;
        const took = net.sendBurst(burst, n, q, offloads);
        for (let i = 0; i < took; i++) bytes += burst[i]!.length;
        sent += took;
        const now = Date.now();
        if (took > 0) stalledSince = now;
        else if (now - stalledSince > args.timeout) {
          throw new VhostUserError('VHOST_TIMEOUT', `the back-end consumed nothing for ${args.timeout} ms (${sent} of ${count} frames sent)`);
        } else {
          // Ring full: sleep until half of it is free instead of spinning (see waitTxSpace).
          await net.waitTxSpace(q, net.queueSize >> 1, Math.min(args.timeout, 100));
        }
        if (spins % 256 === 0) {
          await yieldToLoop();
          if (now - lastProgress >= 1000) {
            io.progress?.(`sent ${sent}/${count}`);
            lastProgress = now;
          }
        }
      }
      const drainDeadline = Date.now() + args.timeout;
      for (let q = 0; q < net.queuePairs; q++) {
        while (net.txInFlight(q) > 0) {
          if (Date.now() > drainDeadline) {
            throw new VhostUserError('VHOST_TIMEOUT', `the back-end left ${net.txInFlight(q)} frames unconsumed on queue pair ${q}`);
          }
          await yieldToLoop();
        }
      }
      const summary = rate(sent, bytes, Number(process.hrtime.bigint() - t0) / 1e9);
      const totals = net.totals();
      io.stdout(args.json ? `${toJson({ ...summary, queues: net.queuePairs, ring: net.ring, kicks: totals.kicks, drops: totals.txDrops, offload })}\n` : rateLine('sent', summary));
    } finally {
      net.close();
    }
  },
});
