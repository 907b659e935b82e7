/** Test frames for the TS frontend's TX cells. Pure. */

export const ETH_HEADER = 14;
const IPV4_HEADER = 20;
const UDP_HEADER = 8;
export const MIN_UDP_FRAME = ETH_HEADER + IPV4_HEADER + UDP_HEADER;

/** RFC 1071 one's-complement sum over `bytes` (even length here), folded and inverted. */
export function ipv4Checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * A `size`-byte Ethernet/IPv4/UDP frame (no FCS), like DPDK's txonly engine sends:
 * 02:00:00:00:00:01 -> 02:00:00:00:00:02, 198.18.0.1:9 -> 198.18.0.2:9 (RFC 2544
 * benchmark range, discard port), UDP checksum 0, payload bytes `seq & 0xff`.
 */
export function buildUdpFrame(size: number, seq = 0): Uint8Array {
  if (!Number.isInteger(size) || size < MIN_UDP_FRAME || size > 0xffff) {
    throw new RangeError(`frame size must be an integer from ${MIN_UDP_FRAME} to 65535, got ${size}`);
  }
  const f = new Uint8Array(size);
  const v = new DataView(f.buffer);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  v.setUint16(12, 0x0800);
  const ip = ETH_HEADER;
  f[ip] = 0x45;
  v.setUint16(ip + 2, size - ETH_HEADER);
  v.setUint16(ip + 4, seq & 0xffff);
  f[ip + 8] = 64;
  f[ip + 9] = 17;
  f.set([198, 18, 0, 1, 198, 18, 0, 2], ip + 12);
  v.setUint16(ip + 10, ipv4Checksum(f.subarray(ip, ip + IPV4_HEADER)));
  const udp = ip + IPV4_HEADER;
  v.setUint16(udp, 9);
  v.setUint16(udp + 2, 9);
  v.setUint16(udp + 4, size - ETH_HEADER - IPV4_HEADER);
  f.fill(seq & 0xff, udp + UDP_HEADER);
  return f;
}
