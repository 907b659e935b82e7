/**
 * Synthetic Ethernet/IPv4/UDP frames for traffic tests and the `net` CLI.
 *
 *   Ethernet (14): dst MAC, src MAC, ethertype 0x0800
 *   IPv4 (20):     0x45, tos 0, total length, id, DF, ttl 64, proto 17, header checksum, src, dst
 *   UDP (8):       src port, dst port, length, checksum 0 ("not computed", allowed for IPv4 by RFC 768)
 *   payload
 *
 * No Ethernet padding and no FCS: virtio-net frames carry neither, and the NIC
 * (or DPDK's PMD) pads short frames on the wire.
 */
import { VhostUserError } from '../errors.js';

/** Destination MAC, source MAC, ethertype (no VLAN tag, no FCS). */
export const ETH_HEADER_SIZE = 14;
/** An IPv4 header without options. */
export const IPV4_HEADER_SIZE = 20;
/** RFC 768. */
export const UDP_HEADER_SIZE = 8;
/** Ethernet + IPv4 + UDP headers: the frame length of an empty UDP datagram. */
export const UDP_FRAME_OVERHEAD = ETH_HEADER_SIZE + IPV4_HEADER_SIZE + UDP_HEADER_SIZE;
/** Smallest frame {@link buildUdpFrameOfSize} builds: the Ethernet minimum without FCS. */
export const MIN_FRAME_SIZE = 60;
/** Largest frame {@link buildUdpFrameOfSize} builds: a 9000-byte jumbo frame. */
export const MAX_FRAME_SIZE = 9000;

const ETHERTYPE_IPV4 = 0x0800;
/** RFC 903 Reverse ARP: what a back-end broadcasts for SEND_RARP. */
export const ETHERTYPE_RARP = 0x8035;
const IPPROTO_UDP = 17;
const PAYLOAD_OFFSET = UDP_FRAME_OVERHEAD;

/** PATTERN[k] = k & 0xff: the payload of sequence number s is PATTERN[s & 0xff ...], copied or compared in one native call. */
const PATTERN = Uint8Array.from({ length: MAX_FRAME_SIZE + 256 }, (_, k) => k & 0xff);

/** Addresses and ports of a built UDP frame. */
export interface UdpEndpoints {
  /** `02:00:00:00:00:01` form or 6 bytes. Default 02:00:00:00:00:01 (locally administered). */
  srcMac?: string | Uint8Array;
  /** Default 02:00:00:00:00:02. */
  dstMac?: string | Uint8Array;
  /** Dotted quad or 4 bytes. Default 10.0.0.1. */
  srcIp?: string | Uint8Array;
  /** Default 10.0.0.2. */
  dstIp?: string | Uint8Array;
  /** Default 1024. */
  srcPort?: number;
  /** Default 9 (discard). */
  dstPort?: number;
  /** IPv4 identification field. Default 0. */
  ipId?: number;
}

/** Options of {@link buildUdpFrame}: endpoints and the payload. */
export interface UdpFrameOptions extends UdpEndpoints {
  /** The UDP payload. Either this or `payloadLength`. */
  payload?: Uint8Array;
  /** A payload of this many bytes, each `fill`. */
  payloadLength?: number;
  /** Byte value for a `payloadLength` payload. Default 0. */
  fill?: number;
}

function invalid(message: string): VhostUserError {
  return new VhostUserError('VHOST_INVALID_ARGUMENT', message);
}

/** A MAC address as 6 bytes, from `52:54:00:12:34:56` or 6 bytes; VHOST_INVALID_ARGUMENT otherwise. */
export function parseMac(mac: string | Uint8Array, what = 'MAC address'): Uint8Array {
  if (typeof mac !== 'string') {
    if (mac.length !== 6) throw invalid(`${what} must be 6 bytes, got ${mac.length}`);
    return mac;
  }
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw invalid(`${what} ${JSON.stringify(mac)} is not a MAC address`);
  return Uint8Array.from(mac.split(':'), (h) => parseInt(h, 16));
}

function ipBytes(ip: string | Uint8Array, what: string): Uint8Array {
  if (typeof ip !== 'string') {
    if (ip.length !== 4) throw invalid(`${what} must be 4 bytes, got ${ip.length}`);
    return ip;
  }
  const parts = ip.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    throw invalid(`${what} ${JSON.stringify(ip)} is not an IPv4 address`);
  }
  return Uint8Array.from(parts, Number);
}

function u16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw invalid(`${what} must be 0..65535, got ${value}`);
  return value;
}

/** RFC 1071 Internet checksum of `bytes[start, end)`, as the value to store (already complemented). */
export function internetChecksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < end) sum += bytes[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Builds one Ethernet/IPv4/UDP frame of `42 + payload` bytes with a correct IPv4 header checksum. */
export function buildUdpFrame(options: UdpFrameOptions = {}): Uint8Array {
  const { payload, payloadLength } = options;
  if (payload !== undefined && payloadLength !== undefined) throw invalid('give payload or payloadLength, not both');
  const n = payload?.length ?? payloadLength ?? 0;
  const fill = options.fill ?? 0;
  if (!Number.isInteger(fill) || fill < 0 || fill > 0xff) throw invalid(`fill must be a byte, got ${fill}`);
  if (!Number.isInteger(n) || n < 0 || IPV4_HEADER_SIZE + UDP_HEADER_SIZE + n > 0xffff) {
    throw invalid(`UDP payload length must be 0..${0xffff - IPV4_HEADER_SIZE - UDP_HEADER_SIZE}, got ${n}`);
  }
  const frame = new Uint8Array(UDP_FRAME_OVERHEAD + n);
  const v = new DataView(frame.buffer);
  frame.set(parseMac(options.dstMac ?? '02:00:00:00:00:02', 'dstMac'), 0);
  frame.set(parseMac(options.srcMac ?? '02:00:00:00:00:01', 'srcMac'), 6);
  v.setUint16(12, ETHERTYPE_IPV4);

  const ip = ETH_HEADER_SIZE;
  frame[ip] = 0x45; // version 4, IHL 5 words: no options
  v.setUint16(ip + 2, IPV4_HEADER_SIZE + UDP_HEADER_SIZE + n);
  v.setUint16(ip + 4, u16(options.ipId ?? 0, 'ipId'));
  v.setUint16(ip + 6, 0x4000); // DF: these frames are never meant to be fragmented
  frame[ip + 8] = 64;
  frame[ip + 9] = IPPROTO_UDP;
  frame.set(ipBytes(options.srcIp ?? '10.0.0.1', 'srcIp'), ip + 12);
  frame.set(ipBytes(options.dstIp ?? '10.0.0.2', 'dstIp'), ip + 16);
  v.setUint16(ip + 10, internetChecksum(frame, ip, ip + IPV4_HEADER_SIZE));

  const udp = ip + IPV4_HEADER_SIZE;
  v.setUint16(udp, u16(options.srcPort ?? 1024, 'srcPort'));
  v.setUint16(udp + 2, u16(options.dstPort ?? 9, 'dstPort'));
  v.setUint16(udp + 4, UDP_HEADER_SIZE + n);
  // UDP checksum left 0: optional for IPv4, and skipping it keeps jumbo-frame generation cheap.

  if (payload !== undefined) frame.set(payload, PAYLOAD_OFFSET);
  else if (fill !== 0) frame.fill(fill, PAYLOAD_OFFSET);
  return frame;
}

/**
 * Builds a UDP frame of exactly `frameSize` bytes (60..9000) carrying sequence
 * number `seq` (u32, big-endian) in the first 4 payload bytes; payload byte `i`
 * after it is `(seq + i) & 0xff`, so a receiver can check the bytes arrived
 * intact ({@link framePayloadIntact}). The IPv4 id is `seq & 0xffff`.
 * `frameSize` ≥ 60 always leaves room for the sequence number, so no padding is needed.
 */
export function buildUdpFrameOfSize(frameSize: number, seq: number, endpoints: UdpEndpoints = {}): Uint8Array {
  if (!Number.isInteger(frameSize) || frameSize < MIN_FRAME_SIZE || frameSize > MAX_FRAME_SIZE) {
    throw invalid(`frame size must be ${MIN_FRAME_SIZE}..${MAX_FRAME_SIZE}, got ${frameSize}`);
  }
  if (!Number.isInteger(seq) || seq < 0 || seq > 0xffffffff) throw invalid(`sequence number must be a u32, got ${seq}`);
  const frame = buildUdpFrame({ ipId: seq & 0xffff, ...endpoints, payloadLength: frameSize - UDP_FRAME_OVERHEAD });
  new DataView(frame.buffer).setUint32(PAYLOAD_OFFSET, seq);
  writePattern(frame, seq);
  return frame;
}

/** Payload bytes after the sequence number: byte i is (seq + i) & 0xff. */
function writePattern(frame: Uint8Array, seq: number): void {
  const b = seq & 0xff;
  frame.set(PATTERN.subarray(b, b + frame.length - PAYLOAD_OFFSET - 4), PAYLOAD_OFFSET + 4);
}

/**
 * The RARP frame a back-end broadcasts for SEND_RARP after a migration, as DPDK's
 * make_rarp_packet builds it: broadcast from `mac`, RFC 903 reverse request
 * (op 3) for `mac` with both protocol addresses 0, padded to 60 bytes.
 */
export function buildRarpFrame(mac: string | Uint8Array): Uint8Array {
  const m = parseMac(mac);
  const f = new Uint8Array(MIN_FRAME_SIZE);
  f.fill(0xff, 0, 6);
  f.set(m, 6);
  f[12] = ETHERTYPE_RARP >> 8;
  f[13] = ETHERTYPE_RARP & 0xff;
  const a = ETH_HEADER_SIZE; // hardware Ethernet, protocol IPv4, address sizes 6 and 4, op 3
  f.set([0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03], a);
  f.set(m, a + 8); // sender hardware address
  f.set(m, a + 18); // target hardware address
  return f;
}

/** Whether `frame` is Ethernet with ethertype RARP. */
export function isRarpFrame(frame: Uint8Array): boolean {
  return frame.length >= ETH_HEADER_SIZE && ((frame[12]! << 8) | frame[13]!) === ETHERTYPE_RARP;
}

/**
 * {@link buildUdpFrameOfSize} for many frames of one size: the headers are laid
 * out once, and `write(seq, into)` fills a caller's buffer with the frame for
 * `seq` (IPv4 id and header checksum, sequence number, payload pattern), so a
 * traffic loop can reuse a few buffers instead of building a frame per packet.
 * The bytes are those of buildUdpFrameOfSize(frameSize, seq, endpoints).
 */
export class UdpFrameTemplate {
  private readonly template: Uint8Array;
  /** One's-complement sum of the IPv4 header with id and checksum zero. */
  private readonly ipSum: number;

  constructor(
    /** Bytes per frame (60..9000). */
    readonly frameSize: number,
    endpoints: UdpEndpoints = {},
  ) {
    this.template = buildUdpFrameOfSize(frameSize, 0, { ...endpoints, ipId: 0 });
    const ip = ETH_HEADER_SIZE;
    this.template[ip + 10] = 0;
    this.template[ip + 11] = 0;
    let sum = 0;
    for (let i = ip; i < ip + IPV4_HEADER_SIZE; i += 2) sum += (this.template[i]! << 8) | this.template[i + 1]!;
    this.ipSum = sum;
  }

  /** A new frame for `seq` (allocates). */
  frame(seq: number): Uint8Array {
    return this.write(seq, new Uint8Array(this.frameSize));
  }

  /** Writes the frame for `seq` into `into` (at least frameSize bytes) and returns the frameSize-byte view of it. */
  write(seq: number, into: Uint8Array): Uint8Array {
    if (into.length < this.frameSize) throw invalid(`a ${into.length}-byte buffer cannot hold a ${this.frameSize}-byte frame`);
    const f = into.length === this.frameSize ? into : into.subarray(0, this.frameSize);
    f.set(this.template.subarray(0, PAYLOAD_OFFSET));
    const ip = ETH_HEADER_SIZE;
    const id = seq & 0xffff;
    f[ip + 4] = id >>> 8;
    f[ip + 5] = id & 0xff;
    let sum = this.ipSum + id;
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    sum = ~sum & 0xffff;
    f[ip + 10] = sum >>> 8;
    f[ip + 11] = sum & 0xff;
    f[PAYLOAD_OFFSET] = seq >>> 24;
    f[PAYLOAD_OFFSET + 1] = (seq >>> 16) & 0xff;
    f[PAYLOAD_OFFSET + 2] = (seq >>> 8) & 0xff;
    f[PAYLOAD_OFFSET + 3] = seq & 0xff;
    writePattern(f, seq);
    return f;
  }
}

/** Offset of the UDP payload if `frame` is Ethernet/IPv4 (no options)/UDP with at least 4 payload bytes. */
function udpPayloadOffset(frame: Uint8Array): number | undefined {
  if (frame.length < PAYLOAD_OFFSET + 4) return undefined;
  if (frame[12] !== ETHERTYPE_IPV4 >> 8 || frame[13] !== (ETHERTYPE_IPV4 & 0xff)) return undefined;
  if (frame[ETH_HEADER_SIZE] !== 0x45 || frame[ETH_HEADER_SIZE + 9] !== IPPROTO_UDP) return undefined;
  return PAYLOAD_OFFSET;
}

/** The sequence number of a {@link buildUdpFrameOfSize} frame, or undefined if `frame` is not IPv4/UDP with ≥ 4 payload bytes. */
export function frameSequence(frame: Uint8Array): number | undefined {
  const off = udpPayloadOffset(frame);
  if (off === undefined) return undefined;
  return ((frame[off]! << 24) | (frame[off + 1]! << 16) | (frame[off + 2]! << 8) | frame[off + 3]!) >>> 0;
}

/** Whether a {@link buildUdpFrameOfSize} frame's payload pattern is intact (false for any other frame). */
export function framePayloadIntact(frame: Uint8Array): boolean {
  const seq = frameSequence(frame);
  if (seq === undefined) return false;
  const b = seq & 0xff;
  return Buffer.compare(frame.subarray(PAYLOAD_OFFSET + 4), PATTERN.subarray(b, b + frame.length - PAYLOAD_OFFSET - 4)) === 0;
}
