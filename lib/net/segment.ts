/**
 * Software segmentation of a GSO frame (virtio 1.2 §5.1.6.2: VIRTIO_NET_HDR_GSO_TCPV4,
 * _TCPV6, _UDP_L4): what a device does with a TSO or USO frame when the receiving
 * side cannot take it whole. TCP segments follow RFC 9293 (sequence numbers advance by
 * the payload; FIN and PSH only on the last segment, CWR only on the first), UDP
 * segments are datagrams of their own (as Linux's UDP GSO makes them); every segment
 * gets its IP length, a new IPv4 id (+1 per segment) and header checksum, and a full
 * L4 checksum. Segments are built one at a time in a reusable scratch buffer.
 */
import { FrameLayout, IPPROTO_TCP, writeIpv4HeaderChecksum, writeL4Checksum } from './checksum.js';

/** Cuts GSO frames into segments; one instance per user, reused. */
export class Segmenter {
  private readonly scratch: Uint8Array;
  private readonly seg = new FrameLayout();

  /** @param maxSegment the largest segment (headers + gso_size) it builds. */
  constructor(readonly maxSegment = 65535 + 18) {
    this.scratch = new Uint8Array(maxSegment);
  }

  /**
   * Segments `frame[0, length)`, parsed into `layout` (TCP or UDP, ok), into
   * payloads of `gsoSize` bytes, from segment `first` on, calling `emit(segment)`
   * for each (the view is valid during the call only); `emit` returns false when
   * it could not take the segment, which stops the loop. Returns the index of the
   * first segment not taken (the segment count when all were), or -1 when the
   * frame cannot be segmented (gsoSize 0, or a segment larger than maxSegment).
   */
  segment(frame: Uint8Array, length: number, layout: FrameLayout, gsoSize: number, emit: (segment: Uint8Array) => boolean, first = 0): number {
    const hl = layout.headersLength;
    if (gsoSize <= 0 || hl + gsoSize > this.maxSegment) return -1;
    const end = layout.l4 + layout.l4Length;
    const payload = Math.min(end, length) - hl;
    const count = payload <= 0 ? 1 : Math.ceil(payload / gsoSize);
    const s = this.scratch;
    const tcp = layout.protocol === IPPROTO_TCP;
    const l3 = layout.l3;
    const l4 = layout.l4;
    const ipId = layout.ipVersion === 4 ? (frame[l3 + 4]! << 8) | frame[l3 + 5]! : 0;
    const tcpSeq = tcp ? ((frame[l4 + 4]! << 24) | (frame[l4 + 5]! << 16) | (frame[l4 + 6]! << 8) | frame[l4 + 7]!) >>> 0 : 0;
    const flags = tcp ? frame[l4 + 13]! : 0;
    for (let k = first; k < count; k++) {
      const off = hl + k * gsoSize;
      const n = Math.max(0, Math.min(gsoSize, hl + payload - off));
      s.set(frame.subarray(0, hl), 0);
      s.set(frame.subarray(off, off + n), hl);
      const segLen = hl + n;
      const l4Length = segLen - l4;
      if (layout.ipVersion === 4) {
        const total = segLen - l3;
        s[l3 + 2] = total >>> 8;
        s[l3 + 3] = total & 0xff;
        const id = (ipId + k) & 0xffff;
        s[l3 + 4] = id >>> 8;
        s[l3 + 5] = id & 0xff;
      } else {
        s[l3 + 4] = l4Length >>> 8;
        s[l3 + 5] = l4Length & 0xff;
      }
      if (tcp) {
        const seq = (tcpSeq + k * gsoSize) >>> 0;
        s[l4 + 4] = seq >>> 24;
        s[l4 + 5] = (seq >>> 16) & 0xff;
        s[l4 + 6] = (seq >>> 8) & 0xff;
        s[l4 + 7] = seq & 0xff;
        let f = flags;
        if (k < count - 1) f &= ~0x09; // FIN, PSH: last segment only
        if (k > 0) f &= ~0x80; // CWR: first segment only
        s[l4 + 13] = f;
      } else {
        s[l4 + 4] = l4Length >>> 8;
        s[l4 + 5] = l4Length & 0xff;
      }
      const view = s.subarray(0, segLen);
      const seg = this.seg;
      seg.parse(view);
      if (layout.ipVersion === 4) writeIpv4HeaderChecksum(view, seg);
      writeL4Checksum(view, seg);
      if (!emit(view)) return k;
    }
    return count;
  }
}
