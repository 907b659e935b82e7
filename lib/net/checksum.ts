/**
 * Internet checksums (RFC 1071) for the offload paths: where a frame's IPv4 or
 * IPv6 and TCP or UDP headers are, the pseudo-header sum a driver stores when it
 * leaves the L4 checksum to the device (virtio 1.2 §5.1.6.2, VIRTIO_NET_HDR_F_NEEDS_CSUM),
 * and the completion of such a partial checksum, by a device or by a driver that
 * negotiated VIRTIO_NET_F_GUEST_CSUM (§5.1.6.4).
 *
 * Nothing here allocates: frames are parsed into a reusable {@link FrameLayout},
 * sums are numbers. Sums are computed over byte pairs in network order; a range
 * starts at an even offset from the header it covers, as every checksum here does.
 */

/** IP protocol number of TCP. */
export const IPPROTO_TCP = 6;
/** IP protocol number of UDP. */
export const IPPROTO_UDP = 17;
/** Ethertype of IPv4. */
export const ETHERTYPE_IPV4 = 0x0800;
/** Ethertype of IPv6. */
export const ETHERTYPE_IPV6 = 0x86dd;
/** Ethertype of an 802.1Q VLAN tag. */
export const ETHERTYPE_VLAN = 0x8100;
/** Offset of the checksum in a TCP header (RFC 9293). */
export const TCP_CSUM_OFFSET = 16;
/** Offset of the checksum in a UDP header (RFC 768). */
export const UDP_CSUM_OFFSET = 6;
/** A fixed IPv6 header (RFC 8200). */
export const IPV6_HEADER_SIZE = 40;
/** A TCP header without options. */
export const TCP_HEADER_SIZE = 20;

/** Folds a 32-bit accumulation of 16-bit words to 16 bits with end-around carry (not complemented). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * The one's-complement sum of `bytes[start, end)` taken as big-endian 16-bit words
 * (an odd last byte padded with zero), plus `initial`, folded to 16 bits, not complemented.
 */
export function onesSum(bytes: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  // Folding every 8 K words keeps the accumulator below 2^30, a small integer.
  while (i + 1 < end) {
    const stop = Math.min(end - 1, i + 16384);
    for (; i < stop; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += bytes[i]! << 8;
  return foldSum(sum);
}

/**
 * Where the headers of an Ethernet frame are, for IPv4 (any IHL) or IPv6 (no
 * extension headers) carrying TCP or UDP, at most one VLAN tag. Reused: parse()
 * overwrites every field.
 */
export class FrameLayout {
  /** Whether the last parse() found Ethernet / IPv4|IPv6 / TCP|UDP with the whole L4 header inside the frame. */
  ok = false;
  /** 4 or 6. */
  ipVersion = 0;
  /** Offset of the IP header. */
  l3 = 0;
  /** Offset of the TCP or UDP header (the csum_start of a partial checksum). */
  l4 = 0;
  /** IPPROTO_TCP or IPPROTO_UDP. */
  protocol = 0;
  /** TCP header length from its data offset, or 8 for UDP. */
  l4HeaderLength = 0;
  /** L4 header and payload bytes, as the IP header states them. */
  l4Length = 0;
  /** l4 + l4HeaderLength: where the payload starts (the hdr_len of a GSO frame). */
  headersLength = 0;
  /** Offset of the L4 checksum field (l4 + 16 for TCP, l4 + 6 for UDP). */
  csumField = 0;

  /** Parses `frame[0, length)`; sets and returns {@link ok}. */
  parse(frame: Uint8Array, length = frame.length): boolean {
    this.ok = false;
    let l3 = 14;
    if (length < l3) return false;
    let type = (frame[12]! << 8) | frame[13]!;
    if (type === ETHERTYPE_VLAN) {
      if (length < 18) return false;
      type = (frame[16]! << 8) | frame[17]!;
      l3 = 18;
    }
    let l4: number;
    let protocol: number;
    let l4Length: number;
    if (type === ETHERTYPE_IPV4) {
      if (length < l3 + 20 || frame[l3]! >> 4 !== 4) return false;
      const ihl = (frame[l3]! & 0xf) * 4;
      const total = (frame[l3 + 2]! << 8) | frame[l3 + 3]!;
      if (ihl < 20 || total < ihl || l3 + total > length) return false;
      // A fragment carries no (or not all of the) L4 header: not ours to checksum.
      if ((((frame[l3 + 6]! & 0x1f) << 8) | frame[l3 + 7]!) !== 0 || (frame[l3 + 6]! & 0x20) !== 0) return false;
      l4 = l3 + ihl;
      protocol = frame[l3 + 9]!;
      l4Length = total - ihl;
      this.ipVersion = 4;
    } else if (type === ETHERTYPE_IPV6) {
      if (length < l3 + IPV6_HEADER_SIZE || frame[l3]! >> 4 !== 6) return false;
      l4Length = (frame[l3 + 4]! << 8) | frame[l3 + 5]!;
      l4 = l3 + IPV6_HEADER_SIZE;
      if (l4 + l4Length > length) return false;
      protocol = frame[l3 + 6]!;
      this.ipVersion = 6;
    } else return false;
    let l4h: number;
    if (protocol === IPPROTO_TCP) {
      if (l4Length < TCP_HEADER_SIZE) return false;
      l4h = (frame[l4 + 12]! >> 4) * 4;
      if (l4h < TCP_HEADER_SIZE || l4h > l4Length) return false;
      this.csumField = l4 + TCP_CSUM_OFFSET;
    } else if (protocol === IPPROTO_UDP) {
      if (l4Length < 8) return false;
      l4h = 8;
      this.csumField = l4 + UDP_CSUM_OFFSET;
    } else return false;
    this.l3 = l3;
    this.l4 = l4;
    this.protocol = protocol;
    this.l4Length = l4Length;
    this.l4HeaderLength = l4h;
    this.headersLength = l4 + l4h;
    this.ok = true;
    return true;
  }
}

/**
 * The pseudo-header sum (RFC 768 / RFC 9293 for IPv4, RFC 8200 §8.1 for IPv6) of
 * the packet whose IP header is at `l3`, for `protocol` and an L4 length of
 * `l4Length` bytes: folded, not complemented, as a driver stores it in the L4
 * checksum field with NEEDS_CSUM (virtio 1.2 §5.1.6.2).
 */
export function pseudoHeaderSum(frame: Uint8Array, l3: number, ipVersion: number, protocol: number, l4Length: number): number {
  if (ipVersion === 4) return onesSum(frame, l3 + 12, l3 + 20, protocol + l4Length);
  // IPv6: a 32-bit upper-layer length, then three zero bytes and the next header.
  return onesSum(frame, l3 + 8, l3 + 40, protocol + (l4Length >>> 16) + (l4Length & 0xffff));
}

/**
 * Prepares a parsed frame for a NEEDS_CSUM transmit: stores the pseudo-header sum
 * in its L4 checksum field, so that the device's checksum over [l4, end) is the
 * right one (virtio 1.2 §5.1.6.2). csum_start is `layout.l4`, csum_offset
 * `layout.csumField - layout.l4`.
 */
export function writePseudoHeaderSum(frame: Uint8Array, layout: FrameLayout): void {
  const s = pseudoHeaderSum(frame, layout.l3, layout.ipVersion, layout.protocol, layout.l4Length);
  frame[layout.csumField] = s >>> 8;
  frame[layout.csumField + 1] = s & 0xff;
}

/**
 * Completes a partial checksum the way a device does for NEEDS_CSUM (virtio 1.2
 * §5.1.6.2), or a GUEST_CSUM driver for a received NEEDS_CSUM frame (§5.1.6.4):
 * the one's-complement sum of frame bytes [csumStart, end) (the field already
 * holds the pseudo-header sum), complemented, stored at csumStart + csumOffset.
 * A result of 0 is stored as 0xffff, which every verifier accepts and which UDP
 * requires (RFC 768: 0 means "no checksum"). `frame` is `bytes[start, start +
 * length)`. Returns false, writing nothing, when the field is not inside the frame.
 */
export function completePartialChecksum(bytes: Uint8Array, start: number, length: number, csumStart: number, csumOffset: number): boolean {
  if (csumStart >= length || csumStart + csumOffset + 2 > length) return false;
  const field = start + csumStart + csumOffset;
  let c = ~onesSum(bytes, start + csumStart, start + length) & 0xffff;
  if (c === 0) c = 0xffff;
  bytes[field] = c >>> 8;
  bytes[field + 1] = c & 0xff;
  return true;
}

/** Computes and stores the full L4 checksum of a parsed frame (what a device's NEEDS_CSUM gives). */
export function writeL4Checksum(frame: Uint8Array, layout: FrameLayout): void {
  writePseudoHeaderSum(frame, layout);
  completePartialChecksum(frame, 0, layout.l4 + layout.l4Length, layout.l4, layout.csumField - layout.l4);
}

/** Computes and stores the IPv4 header checksum of a parsed IPv4 frame. */
export function writeIpv4HeaderChecksum(frame: Uint8Array, layout: FrameLayout): void {
  const l3 = layout.l3;
  frame[l3 + 10] = 0;
  frame[l3 + 11] = 0;
  const c = ~onesSum(frame, l3, layout.l4) & 0xffff;
  frame[l3 + 10] = c >>> 8;
  frame[l3 + 11] = c & 0xff;
}

/**
 * Whether a parsed frame's checksums verify: the IPv4 header checksum, and the
 * L4 checksum over the pseudo-header and [l4, l4 + l4Length) (a UDP/IPv4 checksum
 * of 0, "not computed", counts as valid; UDP over IPv6 must have one, RFC 8200 §8.1).
 */
export function checksumsValid(frame: Uint8Array, layout: FrameLayout): boolean {
  if (!layout.ok) return false;
  if (layout.ipVersion === 4 && onesSum(frame, layout.l3, layout.l4) !== 0xffff) return false;
  const field = (frame[layout.csumField]! << 8) | frame[layout.csumField + 1]!;
  if (layout.protocol === IPPROTO_UDP && field === 0) return layout.ipVersion === 4;
  const ph = pseudoHeaderSum(frame, layout.l3, layout.ipVersion, layout.protocol, layout.l4Length);
  return onesSum(frame, layout.l4, layout.l4 + layout.l4Length, ph) === 0xffff;
}
