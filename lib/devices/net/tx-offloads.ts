/**
 * Per-frame transmit offload requests for {@link VirtioNet.sendBurst} and
 * sendInPlace: the fields of the virtio_net_hdr a driver fills (virtio 1.2
 * §5.1.6.2), as typed arrays indexed by the frame's position in the burst, so
 * a sender reuses one object for every burst and allocates nothing per frame.
 */
import { FrameLayout, IPPROTO_TCP, writePseudoHeaderSum } from '../../net/checksum.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
} from './virtio-net-hdr.js';

/** The virtio_net_hdr fields of up to `capacity` frames of one burst; entry i goes with frame i. */
export class TxOffloads {
  /** `flags` (0 or VIRTIO_NET_HDR_F_NEEDS_CSUM). */
  readonly flags: Uint8Array;
  /** `gso_type` (VIRTIO_NET_HDR_GSO_*). */
  readonly gsoTypes: Uint8Array;
  /** `hdr_len`: bytes of headers before the payload (GSO). */
  readonly hdrLens: Uint16Array;
  /** `gso_size`: payload bytes per segment (GSO). */
  readonly gsoSizes: Uint16Array;
  /** `csum_start`: where the device starts summing (NEEDS_CSUM). */
  readonly csumStarts: Uint16Array;
  /** `csum_offset`: where, from csum_start, it stores the checksum (NEEDS_CSUM). */
  readonly csumOffsets: Uint16Array;
  private readonly layout = new FrameLayout();

  /** @param capacity the most frames of one burst that carry offloads. */
  constructor(
    /** Entries (frames per burst). */
    readonly capacity = 64,
  ) {
    this.flags = new Uint8Array(capacity);
    this.gsoTypes = new Uint8Array(capacity);
    this.hdrLens = new Uint16Array(capacity);
    this.gsoSizes = new Uint16Array(capacity);
    this.csumStarts = new Uint16Array(capacity);
    this.csumOffsets = new Uint16Array(capacity);
  }

  /** Frame i asks for nothing (a zero header). */
  clear(i: number): void {
    this.flags[i] = 0;
    this.gsoTypes[i] = VIRTIO_NET_HDR_GSO_NONE;
    this.hdrLens[i] = 0;
    this.gsoSizes[i] = 0;
    this.csumStarts[i] = 0;
    this.csumOffsets[i] = 0;
  }

  /** Frame i: the device sums [csumStart, end) and stores the checksum at csumStart + csumOffset. */
  setChecksum(i: number, csumStart: number, csumOffset: number): void {
    this.flags[i] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    this.csumStarts[i] = csumStart;
    this.csumOffsets[i] = csumOffset;
  }

  /** Frame i: the device cuts the payload after `hdrLen` header bytes into `gsoSize`-byte segments. */
  setGso(i: number, gsoType: number, gsoSize: number, hdrLen: number): void {
    this.gsoTypes[i] = gsoType;
    this.gsoSizes[i] = gsoSize;
    this.hdrLens[i] = hdrLen;
  }

  /**
   * Prepares frame i, an Ethernet / IPv4|IPv6 / TCP|UDP frame, for a checksum
   * offload: stores the pseudo-header sum in its L4 checksum field (the frame is
   * modified) and sets NEEDS_CSUM with csum_start at the L4 header (virtio 1.2
   * §5.1.6.2). With `gsoSize` > 0 it also asks for segmentation: TCPV4, TCPV6
   * or UDP_L4 by the frame's headers, hdr_len = all headers. Returns false,
   * changing nothing, when the frame is not TCP or UDP over IP.
   */
  prepare(i: number, frame: Uint8Array, length = frame.length, gsoSize = 0): boolean {
    const l = this.layout;
    if (!l.parse(frame, length)) return false;
    writePseudoHeaderSum(frame, l);
    this.setChecksum(i, l.l4, l.csumField - l.l4);
    if (gsoSize > 0) {
      const type = l.protocol === IPPROTO_TCP ? (l.ipVersion === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6) : VIRTIO_NET_HDR_GSO_UDP_L4;
      this.setGso(i, type, gsoSize, l.headersLength);
    } else this.setGso(i, VIRTIO_NET_HDR_GSO_NONE, 0, 0);
    return true;
  }
}
