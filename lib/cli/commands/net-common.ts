/** What `net send` and `net recv` share: the options that open a VirtioNet, and rate arithmetic. */
import { VirtioNet, type RingKind, type VirtioNetOptions } from '../../devices/net/virtio-net.js';
import type { OptionSpecs } from '../args.js';
import { acceptOnce, endpoint, listenOption } from './endpoint.js';

export const netOptions = {
  socket: { type: 'string', valueName: 'PATH', description: 'the back-end socket (the back-end listens); or give --listen' },
  ...listenOption,
  queues: { type: 'number', integer: true, min: 1, default: 1, valueName: 'Q', description: 'queue pairs to use (needs VIRTIO_NET_F_MQ above 1)' },
  ring: { type: 'enum', choices: ['split', 'packed'], default: 'split', description: 'virtqueue layout' },
  queueSize: { type: 'number', integer: true, min: 2, max: 32768, default: 256, valueName: 'N', description: 'entries per ring' },
  timeout: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'deadline for each reply, and for the back-end to make progress' },
  json: { type: 'boolean', description: 'print one JSON object instead of a line' },
} as const satisfies OptionSpecs;

/**
 * Opens the device on --socket, or accepts the back-end on --listen (waiting up to --timeout
 * for it); `extra` adds driver options (offloads) to those from the command line.
 */
export async function openNet(
  command: string,
  args: { socket?: string | undefined; listen?: string | undefined; queues: number; ring: string; queueSize: number; timeout: number },
  extra: VirtioNetOptions = {},
): Promise<VirtioNet> {
  const where = endpoint(command, args);
  const options = { ...extra, queuePairs: args.queues, queueSize: args.queueSize, ring: args.ring as RingKind, timeoutMs: args.timeout };
  if ('socket' in where) return VirtioNet.open(where.socket, { ...options, connect: { timeoutMs: args.timeout } });
  return acceptOnce(where.listen, (listener) => VirtioNet.accept(listener, { ...options, acceptTimeoutMs: args.timeout }));
}

export interface RateSummary {
  frames: number;
  bytes: number;
  seconds: number;
  mpps: number;
  /** L2 bit rate: frame bytes only, no preamble or inter-frame gap. */
  gbps: number;
}

export function rate(frames: number, bytes: number, seconds: number): RateSummary {
  const s = seconds > 0 ? seconds : Number.EPSILON;
  return { frames, bytes, seconds, mpps: frames / s / 1e6, gbps: (bytes * 8) / s / 1e9 };
}

export function rateLine(verb: string, r: RateSummary): string {
  return `${verb} ${r.frames} frames, ${r.bytes} bytes in ${r.seconds.toFixed(3)} s: ${r.mpps.toFixed(3)} Mpps, ${r.gbps.toFixed(3)} Gbit/s\n`;
}

/** Yields to the event loop, so disconnects, timers and signals are seen during busy loops. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
