/** What the `blk` commands share: the options that open a VirtioBlk, and moving many bytes in chunks over every queue. */
import type { RingKind } from '../../devices/vhost-device.js';
import { VirtioBlk } from '../../devices/blk/virtio-blk.js';
import type { OptionSpecs } from '../args.js';

export const blkOptions = {
  socket: { type: 'string', required: true, valueName: 'PATH', description: 'the back-end socket' },
  queues: { type: 'number', integer: true, min: 1, default: 1, valueName: 'Q', description: 'request queues to use (needs VIRTIO_BLK_F_MQ above 1)' },
  ring: { type: 'enum', choices: ['split', 'packed'], default: 'split', description: 'virtqueue layout' },
  queueSize: { type: 'number', integer: true, min: 4, max: 32768, default: 256, valueName: 'N', description: 'entries per ring' },
  timeout: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'deadline for each reply and each request' },
  lenientUsedLen: { type: 'boolean', description: 'count, rather than fail on, used lengths that are not what the request implies (buggy back-ends)' },
  json: { type: 'boolean', description: 'print one JSON object instead of text' },
} as const satisfies OptionSpecs;

export interface BlkArgs {
  socket: string;
  queues: number;
  ring: string;
  queueSize: number;
  timeout: number;
  lenientUsedLen: boolean;
}

export function openBlk(args: BlkArgs): Promise<VirtioBlk> {
  return VirtioBlk.open(args.socket, {
    queues: args.queues,
    queueSize: args.queueSize,
    ring: args.ring as RingKind,
    timeoutMs: args.timeout,
    requestTimeoutMs: args.timeout,
    connect: { timeoutMs: args.timeout },
    strictUsedLen: !args.lenientUsedLen,
  });
}

/** Bytes per request when a command moves a large range: 1 MiB, or less when seg_max × size_max is smaller. */
export function chunkBytes(blk: VirtioBlk): number {
  const { sizeMax, blkSize } = blk.limits;
  const segs = blk.queue(0).maxSegments;
  let chunk = 1024 * 1024;
  if (sizeMax > 0) chunk = Math.min(chunk, sizeMax * segs);
  return Math.max(blkSize, chunk - (chunk % blkSize));
}

/** Requests kept in flight per queue by the bulk commands. */
const DEPTH = 4;

/**
 * Runs `op` over `length` bytes in chunks, DEPTH requests in flight on every
 * queue. `op` gets the chunk's offset relative to the start, its length and the queue.
 */
export async function inChunks(blk: VirtioBlk, length: number, op: (rel: number, len: number, queue: number) => Promise<void>): Promise<void> {
  const chunk = chunkBytes(blk);
  let next = 0;
  const worker = async (queue: number) => {
    while (next < length) {
      const rel = next;
      const len = Math.min(chunk, length - rel);
      next += len;
      await op(rel, len, queue);
    }
  };
  const workers: Promise<void>[] = [];
  for (let q = 0; q < blk.queueCount; q++) for (let d = 0; d < DEPTH; d++) workers.push(worker(q));
  // Every worker finishes or the first failure is reported (the rest fail with it or complete).
  const results = await Promise.allSettled(workers);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed).reason;
}
