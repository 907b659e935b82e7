/**
 * Synthetic Ethernet / IPv4 or IPv6 / TCP or UDP frames for the offload paths:
 * frames up to the largest a GSO frame can be (an IPv4 total length of 65535,
 * an IPv6 payload length of 65535), with the L4 checksum full, partial (the
 * pseudo-header sum only, as a NEEDS_CSUM transmit carries it, virtio 1.2
 * §5.1.6.2) or absent. The payload starts with a big-endian u32 sequence number;
 * byte i after it is (seq + i) & 0xff.
 */
import { VhostUserError } from '../errors.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, FrameLayout, IPPROTO_TCP, IPPROTO_UDP, IPV6_HEADER_SIZE, TCP_HEADER_SIZE, writeIpv4HeaderChecksum, writeL4Checksum, writePseudoHeaderSum } from './checksum.js';
import { parseMac } from './frame-builder.js';

/** What {@link buildL4Frame} builds. */
export interface L4FrameOptions {
  /** 4 (default) or 6. */
  ipVersion?: 4 | 6;
  /** 'udp' (default) or 'tcp'. */
  protocol?: 'udp' | 'tcp';
  /** Payload bytes (at least 4, for the sequence number). */
  payloadLength: number;
  /** Sequence number in the first 4 payload bytes (default 0). */
  seq?: number;
  /** 'full' (default): a correct L4 checksum; 'partial': the pseudo-header sum only (NEEDS_CSUM); 'none': 0. */
  checksum?: 'full' | 'partial' | 'none';
  /** TCP sequence number (default 1). */
  tcpSeq?: number;
  /** TCP flags (default ACK | PSH). */
  tcpFlags?: number;
  /** IPv4 identification (default seq & 0xffff). */
  ipId?: number;
  /** Default 02:00:00:00:00:01. */
  srcMac?: string;
  /** Default 02:00:00:00:00:02. */
  dstMac?: string;
  /** Default 1024. */
  srcPort?: number;
  /** Default 9. */
  dstPort?: number;
}

/** Bytes before the payload for `ipVersion` and `protocol` (no options). */
export function l4HeadersLength(ipVersion: 4 | 6, protocol: 'udp' | 'tcp'): number {
  return 14 + (ipVersion === 4 ? 20 : IPV6_HEADER_SIZE) + (protocol === 'tcp' ? TCP_HEADER_SIZE : 8);
}

/** The largest payload one frame (a GSO frame included) can carry: the IP length fields are 16 bits. */
export function maxL4Payload(ipVersion: 4 | 6, protocol: 'udp' | 'tcp'): number {
  const l4h = protocol === 'tcp' ? TCP_HEADER_SIZE : 8;
  return ipVersion === 4 ? 0xffff - 20 - l4h : 0xffff - l4h;
}

const layoutScratch = new FrameLayout();

/** Builds one frame (allocates: for tests and tools). */
export function buildL4Frame(o: L4FrameOptions): Uint8Array {
  const v = o.ipVersion ?? 4;
  const proto = o.protocol ?? 'udp';
  const n = o.payloadLength;
  if (!Number.isInteger(n) || n < 4 || n > maxL4Payload(v, proto)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `payload length must be 4..${maxL4Payload(v, proto)} for ${proto} over IPv${v}, got ${n}`);
  }
  const seq = o.seq ?? 0;
  const hl = l4HeadersLength(v, proto);
  const f = new Uint8Array(hl + n);
  const dv = new DataView(f.buffer);
  f.set(parseMac(o.dstMac ?? '02:00:00:00:00:02'), 0);
  f.set(parseMac(o.srcMac ?? '02:00:00:00:00:01'), 6);
  const l3 = 14;
  const l4h = proto === 'tcp' ? TCP_HEADER_SIZE : 8;
  const ipproto = proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  let l4: number;
  if (v === 4) {
    dv.setUint16(12, ETHERTYPE_IPV4);
    f[l3] = 0x45;
    dv.setUint16(l3 + 2, 20 + l4h + n);
    dv.setUint16(l3 + 4, (o.ipId ?? seq) & 0xffff);
    dv.setUint16(l3 + 6, 0x4000); // DF
    f[l3 + 8] = 64;
    f[l3 + 9] = ipproto;
    f.set([10, 0, 0, 1], l3 + 12);
    f.set([10, 0, 0, 2], l3 + 16);
    l4 = l3 + 20;
  } else {
    dv.setUint16(12, ETHERTYPE_IPV6);
    dv.setUint32(l3, 0x60000000);
    dv.setUint16(l3 + 4, l4h + n);
    f[l3 + 6] = ipproto;
    f[l3 + 7] = 64;
    f.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], l3 + 8);
    f.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], l3 + 24);
    l4 = l3 + IPV6_HEADER_SIZE;
  }
  dv.setUint16(l4, o.srcPort ?? 1024);
  dv.setUint16(l4 + 2, o.dstPort ?? 9);
  if (proto === 'tcp') {
    dv.setUint32(l4 + 4, (o.tcpSeq ?? 1) >>> 0);
    f[l4 + 12] = (TCP_HEADER_SIZE / 4) << 4;
    f[l4 + 13] = o.tcpFlags ?? 0x18;
    dv.setUint16(l4 + 14, 0xffff);
  } else {
    dv.setUint16(l4 + 4, 8 + n);
  }
  dv.setUint32(hl, seq >>> 0);
  for (let i = 4; i < n; i++) f[hl + i] = (seq + i - 4) & 0xff;
  const layout = layoutScratch;
  layout.parse(f);
  if (v === 4) writeIpv4HeaderChecksum(f, layout);
  const mode = o.checksum ?? 'full';
  if (mode === 'full') writeL4Checksum(f, layout);
  else if (mode === 'partial') writePseudoHeaderSum(f, layout);
  return f;
}
