/** Shared by the trace specs: record filters, a frame loop through VirtioNet, a polling wait. */
import { RxBurst, type VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import type { TraceClose, TraceMessage, TraceRecord } from '../../lib/trace/trace-record.js';
import { settle } from '../helpers/resources.js';

export function messagesOf(records: readonly TraceRecord[], from?: 'frontend' | 'backend'): TraceMessage[] {
  return records.filter((r): r is TraceMessage => r.kind === 'message' && (from === undefined || r.from === from));
}

export function closesOf(records: readonly TraceRecord[]): TraceClose[] {
  return records.filter((r): r is TraceClose => r.kind === 'close');
}

/** Loops `count` frames (200 bytes, sequence-numbered) through `net`; returns the numbers that came back intact. */
export async function loopFrames(net: VirtioNet, count: number, ms = 5000): Promise<number[]> {
  const burst = new RxBurst(64);
  const got: number[] = [];
  let sent = 0;
  const deadline = Date.now() + ms;
  while (got.length < count && Date.now() < deadline) {
    if (sent < count) sent += net.sendBurst([buildUdpFrameOfSize(200, sent)], 1);
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) {
      const f = burst.frame(i);
      if (framePayloadIntact(f)) got.push(frameSequence(f)!);
    }
    await new Promise((r) => setImmediate(r));
  }
  return got;
}

/** Polls `cond` every 2 ms for up to `ms`. */
export async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await settle(2);
}
