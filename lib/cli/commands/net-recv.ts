/**
 * `vhost-user net recv`: keeps the RX rings of a virtio-net device filled,
 * receives frames until --count, and optionally writes them to a pcap file.
 */
import { RxBurst } from '../../devices/net/virtio-net.js';
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../devices/net/virtio-net-hdr.js';
import { VhostUserError } from '../../errors.js';
import { PcapWriter } from '../../pcap/pcap-writer.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { netOptions, openNet, rate, rateLine, yieldToLoop } from './net-common.js';

export default defineCommand({
  name: 'net recv',
  summary: 'receive frames from a virtio-net RX ring, optionally into a pcap file',
  description:
    'Opens a virtio-net device on the back-end, receives --count frames on all queue pairs and\n' +
    'writes them to --pcap (readable by tshark/tcpdump). Fails with VHOST_TIMEOUT when no frame\n' +
    'arrives for --timeout ms. Prints one summary line (frames, bytes, Mpps).',
  options: {
    ...netOptions,
    count: { type: 'number', integer: true, min: 1, default: 1000, valueName: 'N', description: 'frames to receive' },
    pcap: { type: 'string', valueName: 'OUT', description: 'write received frames to this pcap file' },
    csum: { type: 'boolean', description: 'negotiate GUEST_CSUM: frames may arrive with a partial checksum (NEEDS_CSUM), completed before --pcap' },
    guestTso: { type: 'boolean', description: 'negotiate GUEST_TSO4/6 (with --csum): TCP frames up to 64 KiB arrive whole, across buffers' },
  },
  async run(args, io) {
    const pcap = args.pcap ? await PcapWriter.open(args.pcap, io.fs ? { fs: io.fs } : {}) : null;
    let net;
    try {
      net = await openNet(args, args.csum || args.guestTso ? { csum: true, guestTso: args.guestTso } : {});
      const burst = new RxBurst(64);
      let frames = 0;
      let bytes = 0;
      // Offload header flags seen (virtio 1.2 §5.1.6.4), and partial checksums that could not be completed.
      let needsCsum = 0;
      let dataValid = 0;
      let csumErrors = 0;
      let gso = 0;
      let lastFrame = Date.now();
      let lastProgress = Date.now();
      const t0 = process.hrtime.bigint();
      for (let spins = 0; frames < args.count; spins++) {
        const q = spins % net.queuePairs;
        const n = net.receiveBurst(q, burst);
        for (let i = 0; i < n && frames < args.count; i++) {
          const len = burst.lengths[i]!;
          const flags = burst.flags[i]!;
          if (flags & VIRTIO_NET_HDR_F_DATA_VALID) dataValid++;
          if (burst.gsoTypes[i] !== 0) gso++;
          if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
            needsCsum++;
            if (!burst.completeChecksum(i)) csumErrors++;
          }
          if (pcap) pcap.write(burst.buffer.subarray(burst.offsets[i], burst.offsets[i]! + len));
          frames++;
          bytes += len;
        }
        const now = Date.now();
        if (n > 0) lastFrame = now;
        else if (now - lastFrame > args.timeout) {
          throw new VhostUserError('VHOST_TIMEOUT', `no frame for ${args.timeout} ms (${frames} of ${args.count} received)`);
        }
        if (spins % 256 === 0) {
          await yieldToLoop();
          if (now - lastProgress >= 1000) {
            io.progress?.(`received ${frames}/${args.count}`);
            lastProgress = now;
          }
        }
      }
      const summary = rate(frames, bytes, Number(process.hrtime.bigint() - t0) / 1e9);
      const offloads = { needsCsum, dataValid, csumErrors, gso };
      const line = args.csum || args.guestTso ? `${rateLine('received', summary).trimEnd()}; NEEDS_CSUM ${needsCsum} (completed ${needsCsum - csumErrors}), DATA_VALID ${dataValid}, GSO ${gso}\n` : rateLine('received', summary);
      io.stdout(args.json ? `${toJson({ ...summary, queues: net.queuePairs, ring: net.ring, pcap: args.pcap ?? null, offloads })}\n` : line);
    } finally {
      net?.close();
      await pcap?.close();
    }
  },
});
