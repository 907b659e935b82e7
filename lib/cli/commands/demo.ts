/**
 * `vhost-user demo`: the whole stack in one process, no DPDK needed. Starts the
 * reference net back-end on a temporary socket, opens a VirtioNet against it,
 * pushes --frames synthetic UDP frames TX → loopback → RX and checks every one
 * came back intact. Exits 0 only when all did.
 *
 * The back-end runs on this thread's event loop, so the driver yields
 * (setImmediate) after every burst: that is when the back-end's kick watchers run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceBackend } from '../../backend/reference-backend.js';
import { RxBurst, VirtioNet } from '../../devices/net/virtio-net.js';
import { PcapWriter } from '../../pcap/pcap-writer.js';
import { framePayloadIntact, frameSequence, UdpFrameTemplate } from '../../net/frame-builder.js';
import { featureNames, protocolFeatureNames } from '../../protocol/constants.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { rate, yieldToLoop } from './net-common.js';

const BURST = 128;

export default defineCommand({
  name: 'demo',
  summary: 'loop frames through the in-process reference back-end and check they come back intact',
  description:
    'Starts the reference net back-end on a temporary socket, opens a virtio-net driver against it,\n' +
    'sends --frames UDP frames of --size bytes, receives them back through the loopback and verifies\n' +
    'each one (length, sequence number, payload pattern). Prints the negotiated features, frame and\n' +
    'byte counts each way and the rate; exits 0 only if every frame came back intact.',
  options: {
    frames: { type: 'number', integer: true, min: 1, default: 10000, valueName: 'N', description: 'frames to send' },
    size: { type: 'number', integer: true, min: 60, max: 2036, default: 64, valueName: 'BYTES', description: 'frame size' },
    queues: { type: 'number', integer: true, min: 1, max: 4, default: 1, valueName: 'Q', description: 'queue pairs' },
    ring: { type: 'enum', choices: ['split', 'packed'], default: 'split', description: 'virtqueue layout' },
    eventIdx: { type: 'boolean', default: true, description: 'negotiate VIRTIO_RING_F_EVENT_IDX (--event-idx=false to turn off)' },
    timeout: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'give up after this long without progress' },
    pcap: { type: 'string', valueName: 'OUT', description: 'write every frame that came back to this pcap file (tshark -r OUT)' },
    json: { type: 'boolean', description: 'print one JSON object' },
  },
  async run(args, io) {
    // First, so a capture file that cannot be created leaves no back-end or directory behind.
    const pcap = args.pcap ? await PcapWriter.open(args.pcap, io.fs ? { fs: io.fs } : {}) : null;
    const dir = mkdtempSync(join(tmpdir(), 'vhost-demo-'));
    const socket = join(dir, 'net.sock');
    const backend = ReferenceBackend.listen(socket, { device: 'net' });
    const violations: string[] = [];
    backend.on('violation', (v) => violations.push(`${v.code}${v.request ? ` [${v.request}]` : ''}: ${v.message}`));
    let net: VirtioNet | null = null;
    try {
      const ring = args.ring;
      net = await VirtioNet.open(socket, {
        queuePairs: args.queues,
        ring,
        eventIdx: args.eventIdx,
        timeoutMs: args.timeout,
      });
      const total = args.frames;
      const seen = new Uint8Array(total);
      const bursts = Array.from({ length: net.queuePairs }, () => new RxBurst(256));
      const out = new Array<Uint8Array>(BURST);
      // sendBurst copies, so BURST buffers are rewritten for every burst: no frame is allocated.
      const template = new UdpFrameTemplate(args.size);
      const pool = Array.from({ length: BURST }, () => new Uint8Array(args.size));
      let sent = 0;
      let sentBytes = 0;
      let received = 0;
      let receivedBytes = 0;
      let corrupt = 0;
      let duplicates = 0;
      let lastProgress = Date.now();
      const t0 = process.hrtime.bigint();
      for (let spin = 0; received + corrupt + duplicates < total; spin++) {
        let progress = false;
        if (sent < total) {
          const q = spin % net.queuePairs;
          const n = Math.min(BURST, total - sent);
          for (let i = 0; i < n; i++) out[i] = template.write(sent + i, pool[i]!);
          const took = net.sendBurst(out, n, q);
          for (let i = 0; i < took; i++) sentBytes += out[i]!.length;
          sent += took;
          progress ||= took > 0;
        }
        await yieldToLoop();
        for (let q = 0; q < net.queuePairs; q++) {
          const b = bursts[q]!;
          for (let n = net.receiveBurst(q, b); n > 0; n = net.receiveBurst(q, b)) {
            progress = true;
            for (let i = 0; i < n; i++) {
              const frame = b.buffer.subarray(b.offsets[i], b.offsets[i]! + b.lengths[i]!);
              pcap?.write(frame);
              const seq = frameSequence(frame);
              if (frame.length !== args.size || seq === undefined || seq >= total || !framePayloadIntact(frame)) corrupt++;
              else if (seen[seq]) duplicates++;
              else {
                seen[seq] = 1;
                received++;
                receivedBytes += frame.length;
              }
            }
          }
        }
        if (progress) lastProgress = Date.now();
        else if (Date.now() - lastProgress > args.timeout || violations.length > 0 || net.client.isBroken) break;
      }
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const tx = rate(sent, sentBytes, seconds);
      const rx = rate(received, receivedBytes, seconds);
      const lost = total - received - corrupt - duplicates;
      const ok = received === total && corrupt === 0 && duplicates === 0 && violations.length === 0;
      const result = {
        ok,
        ring: net.ring,
        queuePairs: net.queuePairs,
        queueSize: net.queueSize,
        frameSize: args.size,
        features: featureNames(net.features, 'net'),
        protocolFeatures: protocolFeatureNames(net.client.protocolFeatures),
        tx: { frames: sent, bytes: sentBytes },
        rx: { frames: received, bytes: receivedBytes },
        backend: { ...backend.net },
        lost,
        corrupt,
        duplicates,
        violations,
        pcap: args.pcap ?? null,
        seconds,
        mpps: rx.mpps,
        gbps: rx.gbps,
      };
      if (args.json) io.stdout(`${toJson(result)}\n`);
      else {
        io.stdout(
          [
            `reference back-end on ${socket}; ${net.ring} rings, ${net.queuePairs} queue pair(s) of ${net.queueSize}`,
            `features: ${result.features.join(' ')}`,
            `protocol features: ${result.protocolFeatures.join(' ')}`,
            `sent ${tx.frames} frames, ${tx.bytes} bytes; received ${rx.frames} frames, ${rx.bytes} bytes in ${seconds.toFixed(3)} s: ${rx.mpps.toFixed(3)} Mpps, ${rx.gbps.toFixed(3)} Gbit/s`,
            `lost ${lost}, corrupt ${corrupt}, duplicated ${duplicates}${violations.length ? `; violations: ${violations.join('; ')}` : ''}`,
            ok ? 'OK: every frame came back intact' : 'FAILED: not every frame came back intact',
            '',
          ].join('\n'),
        );
      }
      return ok ? 0 : 1;
    } finally {
      await pcap?.close();
      net?.close();
      backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
