/**
 * `vhost-user net recv`: keeps the RX rings of a virtio-net device filled,
 * receives frames until --count, and optionally writes them to a pcap file.
 *
 * It runs in interrupt mode, as a guest's NAPI does: while frames keep coming it
 * drains the rings in a loop (re-posting every buffer as soon as its frame is
 * counted), and once they are empty it asks for a call (used_event, virtio 1.2
 * §2.7.10) and sleeps on the call eventfd. A receiver that spins on an empty ring
 * instead takes the CPU time that the sender and the switch need on a machine with
 * few cores, gets preempted while frames arrive, and the back-end drops what does not
 * fit into its RX ring (OVS counts them in ovs_tx_failure_drops).
 */
import type { RxBurst, VirtioNet } from '../../devices/net/virtio-net.js';
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../devices/net/virtio-net-hdr.js';
import { VhostUserError } from '../../errors.js';
import { readOvsPortStats } from '../../launch/ovs.js';
import { PcapWriter } from '../../pcap/pcap-writer.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { netOptions, openNet, rate, rateLine } from './net-common.js';

/** Frames per receiveBurst(): most buffers stay posted while a burst is counted. */
const BURST = 64;
/**
 * RX ring entries unless --queue-size says otherwise: 4096 (8 MiB of buffers). The ring is
 * what holds frames while this process is not running; on a loaded 2-core machine a sender's
 * time slice fills 256 entries many times over (measured through OVS at load 7.5: 12% of
 * 20,000 unpaced frames delivered with 256 entries, 61% with 4096).
 */
const RECV_QUEUE_SIZE = 4096;
const TICK_MS = 100;

export default defineCommand({
  name: 'net recv',
  summary: 'receive frames from a virtio-net RX ring, optionally into a pcap file',
  description:
    'Opens a virtio-net device on the back-end, receives --count frames on all queue pairs and\n' +
    'writes them to --pcap (readable by tshark/tcpdump). Fails with VHOST_TIMEOUT when no frame\n' +
    'arrives for --timeout ms. Prints one summary line (frames, bytes, Mpps). Sleeps on the call\n' +
    'eventfd while the rings are empty, so a sender and a switch on the same cores keep theirs.\n' +
    'With --ovs-port the summary adds the frames OVS reported dropped on that port (its RX ring\n' +
    'was full: this receiver did not keep up), and received + dropped = --count ends the run.',
  options: {
    ...netOptions,
    queueSize: { ...netOptions.queueSize, default: RECV_QUEUE_SIZE },
    count: { type: 'number', integer: true, min: 1, default: 1000, valueName: 'N', description: 'frames to receive' },
    pcap: { type: 'string', valueName: 'OUT', description: 'write received frames to this pcap file' },
    ovsPort: { type: 'string', valueName: 'NAME', description: "the OVS port this device is plugged into: report the frames OVS dropped on it (ovs_tx_failure_drops, tx_dropped), and stop once received + dropped reach --count" },
    ovsRundir: { type: 'string', valueName: 'DIR', description: 'that OVS\'s run directory (db.sock, BRIDGE.mgmt); default $OVS_RUNDIR or /var/run/openvswitch' },
    csum: { type: 'boolean', description: 'negotiate GUEST_CSUM: frames may arrive with a partial checksum (NEEDS_CSUM), completed before --pcap' },
    guestTso: { type: 'boolean', description: 'negotiate GUEST_TSO4/6 (with --csum): TCP frames up to 64 KiB arrive whole, across buffers' },
  },
  async run(args, io) {
    const pcap = args.pcap ? await PcapWriter.open(args.pcap, io.fs ? { fs: io.fs } : {}) : null;
    let net: VirtioNet | undefined;
    let tick: NodeJS.Timeout | undefined;
    // Wall-clock nanoseconds = this + hrtime (as PcapWriter computes them when given no timestamp).
    const pcapEpoch = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    try {
      const rundir = args.ovsRundir ?? process.env['OVS_RUNDIR'] ?? '/var/run/openvswitch';
      // Frames OVS dropped towards this port since the start: failure drops (RX ring full), MTU, link down.
      const ovsDrops = async () => {
        const s = await readOvsPortStats(args.ovsPort!, rundir);
        return s.txFailureDrops + s.txMtuExceededDrops;
      };
      const dropsAtStart = args.ovsPort !== undefined ? await ovsDrops() : 0;
      let dropped = 0;
      net = await openNet('net recv', args, args.csum || args.guestTso ? { csum: true, guestTso: args.guestTso } : {});
      const dev = net;
      let frames = 0;
      let bytes = 0;
      // Offload header flags seen (virtio 1.2 §5.1.6.4), and partial checksums that could not be completed.
      let needsCsum = 0;
      let dataValid = 0;
      let csumErrors = 0;
      let gso = 0;
      let t0 = 0n;
      let tEnd = 0n;
      let seen = 0;
      let lastFrame = Date.now();
      let lastProgress = Date.now();
      await new Promise<void>((resolve, reject) => {
        dev.on('frames', (_queue: number, burst: RxBurst) => {
          if (frames === 0) t0 = process.hrtime.bigint();
          const n = Math.min(burst.count, args.count - frames);
          // One timestamp per burst: the frames of a burst arrived together, and a BigInt clock read per frame costs more than the frame.
          const ts = pcap ? pcapEpoch + process.hrtime.bigint() : 0n;
          for (let i = 0; i < n; i++) {
            const len = burst.lengths[i]!;
            const flags = burst.flags[i]!;
            if (flags & VIRTIO_NET_HDR_F_DATA_VALID) dataValid++;
            if (burst.gsoTypes[i] !== 0) gso++;
            if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
              needsCsum++;
              // Completed before the capture is written, so a capture always holds valid checksums.
              if (!burst.completeChecksum(i)) csumErrors++;
            }
            if (pcap) pcap.write(burst.buffer.subarray(burst.offsets[i], burst.offsets[i]! + len), ts);
            bytes += len;
          }
          frames += n;
          if (frames >= args.count) {
            tEnd = process.hrtime.bigint();
            dev.stopInterrupts();
            resolve();
          }
        });
        dev.on('disconnect', reject);
        let asking = false;
        tick = setInterval(() => {
          const now = Date.now();
          if (frames !== seen) {
            seen = frames;
            lastFrame = now;
          } else if (args.ovsPort !== undefined && !asking) {
            // A quiet moment: ask OVS whether the missing frames were dropped on their way here.
            asking = true;
            ovsDrops().then(
              (d) => {
                asking = false;
                dropped = d - dropsAtStart;
                if (frames > 0 && frames + dropped >= args.count) {
                  tEnd = process.hrtime.bigint();
                  dev.stopInterrupts();
                  resolve();
                }
              },
              (e: unknown) => reject(e as Error),
            );
          }
          if (frames === seen && now - lastFrame > args.timeout) {
            const by = args.ovsPort !== undefined ? `; OVS dropped ${dropped} on ${args.ovsPort}` : '';
            reject(new VhostUserError('VHOST_TIMEOUT', `no frame for ${args.timeout} ms (${frames} of ${args.count} received${by})`));
          }
          if (now - lastProgress >= 1000) {
            io.progress?.(`received ${frames}/${args.count}`);
            lastProgress = now;
          }
        }, Math.min(TICK_MS, args.timeout));
        dev.startInterrupts(BURST);
      });
      // From the first frame to the last: the time spent waiting for the sender to start is not the receiver's rate.
      const summary = rate(frames, bytes, Number(tEnd - t0) / 1e9);
      if (args.ovsPort !== undefined) dropped = (await ovsDrops()) - dropsAtStart;
      const backend = args.ovsPort !== undefined ? { backendDropped: dropped, backendPort: args.ovsPort } : {};
      const offloads = { needsCsum, dataValid, csumErrors, gso };
      if (args.json) io.stdout(`${toJson({ ...summary, ...backend, queues: dev.queuePairs, ring: dev.ring, pcap: args.pcap ?? null, offloads })}\n`);
      else {
        const withOffloads = args.csum || args.guestTso;
        io.stdout(withOffloads ? `${rateLine('received', summary).trimEnd()}; NEEDS_CSUM ${needsCsum} (completed ${needsCsum - csumErrors}), DATA_VALID ${dataValid}, GSO ${gso}\n` : rateLine('received', summary));
        if (args.ovsPort !== undefined) io.stdout(`OVS dropped ${dropped} frames on ${args.ovsPort} (RX ring full or frame above the MTU): ${((100 * frames) / (frames + dropped || 1)).toFixed(2)}% delivered\n`);
      }
    } finally {
      clearInterval(tick);
      net?.stopInterrupts();
      net?.close();
      await pcap?.close();
    }
  },
});
