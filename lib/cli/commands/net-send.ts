/**
 * `vhost-user net send`: transmits frames through a virtio-net TX ring and exits
 * once the back-end has taken every one of them back out of the ring.
 */
import { VhostUserError } from '../../errors.js';
import { buildUdpFrameOfSize } from '../../net/frame-builder.js';
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
  },
  async run(args, io) {
    const pool = args.pcap ? readPcapFrames(args.pcap, io.fs ? { fs: io.fs } : {}) : [];
    if (args.pcap && pool.length === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${args.pcap} holds no frames`);
    const count = args.count ?? (args.pcap ? pool.length : 1000);
    if (!args.pcap) for (let s = 0; s < Math.min(count, SYNTHETIC_POOL); s++) pool.push(buildUdpFrameOfSize(args.size, s));
    const net = await openNet('net send', args);
    try {
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
        const took = net.sendBurst(burst, n, q);
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
      io.stdout(args.json ? `${toJson({ ...summary, queues: net.queuePairs, ring: net.ring, kicks: totals.kicks, drops: totals.txDrops })}\n` : rateLine('sent', summary));
    } finally {
      net.close();
    }
  },
});
