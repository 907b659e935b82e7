/** Rate arithmetic: counter samples to Mpps and Gbit/s. Pure; no I/O. */

/** A reading of one packet/byte counter pair at a monotonic time (`process.hrtime.bigint()`). */
export interface CounterSample {
  tNs: bigint;
  packets: number;
  bytes: number;
}

export interface Rate {
  packets: number;
  bytes: number;
  elapsedMs: number;
  mpps: number;
  /** L2 frame rate: `mpps * frameSize * 8 / 1000`, without preamble, IFG or FCS. */
  gbps: number;
  /** Bytes per packet from the counters; equals the frame size when the frames are what we asked for. */
  bytesPerPacket: number | null;
}

/** Gbit/s of `mpps` frames of `frameSize` bytes, L2 only (no preamble/IFG/FCS). */
export function gbpsOf(mpps: number, frameSize: number): number {
  return (mpps * frameSize * 8) / 1000;
}

/**
 * Rate between two samples of the same counters. Throws if the time does not
 * advance or a counter goes backwards (counters cleared or port restarted in between).
 */
export function rateBetween(a: CounterSample, b: CounterSample, frameSize: number): Rate {
  const elapsedNs = b.tNs - a.tNs;
  if (elapsedNs <= 0n) throw new RangeError(`samples are not in time order (${a.tNs} -> ${b.tNs})`);
  const packets = b.packets - a.packets;
  const bytes = b.bytes - a.bytes;
  if (packets < 0 || bytes < 0) {
    throw new RangeError(`counters went backwards (${a.packets} -> ${b.packets} packets, ${a.bytes} -> ${b.bytes} bytes)`);
  }
  const elapsedMs = Number(elapsedNs) / 1e6;
  const mpps = packets / (elapsedMs * 1000);
  return {
    packets,
    bytes,
    elapsedMs,
    mpps,
    gbps: gbpsOf(mpps, frameSize),
    bytesPerPacket: packets > 0 ? bytes / packets : null,
  };
}

/** `ours / dpdk`, or null when either side is missing or DPDK measured nothing. */
export function ratioOf(ours: number | null | undefined, dpdk: number | null | undefined): number | null {
  if (ours == null || dpdk == null || !(dpdk > 0)) return null;
  return ours / dpdk;
}

/** Median (mean of the middle two for an even count); null for an empty list. */
export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((p, q) => p - q);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Relative spread `(max - min) / median`, null for fewer than two values. */
export function spread(xs: readonly number[]): number | null {
  const m = median(xs);
  if (xs.length < 2 || m === null || m === 0) return null;
  return (Math.max(...xs) - Math.min(...xs)) / m;
}

/** Midpoint of two hrtime readings: the best guess of when a counter read taking that long happened. */
export function midpoint(before: bigint, after: bigint): bigint {
  return before + (after - before) / 2n;
}
