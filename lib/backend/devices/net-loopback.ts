/**
 * The reference back-end's 'net' device: a loopback. A frame sent on TX ring
 * 2i+1 comes back on RX ring 2i with a fresh virtio_net_hdr.
 *
 * Offloads (virtio 1.2 §5.1.6.2, §5.1.6.4), strictly: a TX frame with NEEDS_CSUM
 * goes to RX with NEEDS_CSUM and the same csum_start/offset when the driver
 * negotiated GUEST_CSUM, else with its checksum completed; a GSO frame (TSO4/6,
 * USO) goes whole to RX (with MRG_RXBUF across buffers) when the driver
 * negotiated the matching GUEST_TSO4/6, else as segments. A TX header the
 * driver may not send (§5.1.6.2.1), or whose fields point outside the frame
 * (csum_start beyond it: CVE-2024-11614), is not acted on: the frame is dropped,
 * counted in `offloadDrops`, and the next one served.
 */
import { NET_CONFIG_SIZE } from '../../devices/net/net-config.js';
import {
  HDR_CSUM_OFFSET,
  HDR_CSUM_START,
  HDR_GSO_SIZE,
  HDR_GSO_TYPE,
  HDR_HDR_LEN,
  HDR_NUM_BUFFERS,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_SIZE,
} from '../../devices/net/virtio-net-hdr.js';
import { completePartialChecksum, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, FrameLayout, IPPROTO_TCP, IPPROTO_UDP } from '../../net/checksum.js';
import { buildRarpFrame } from '../../net/frame-builder.js';
import { Segmenter } from '../../net/segment.js';
import { ProtocolFeature, VirtioNetFeature, bit, hasBit } from '../../protocol/constants.js';
import type { BackendMemory } from '../backend-memory.js';
import type { Chain, Vring } from '../vring-state.js';
import type { DeviceModel, DeviceRings } from './device.js';

/** Counters of the reference back-end's net loopback. */
export interface NetStats {
  /** Frames looped from TX to RX. */
  frames: number;
  /** Bytes of those frames, virtio_net_hdr excluded. */
  bytes: number;
  /** TX chains shorter than the 12-byte virtio_net_hdr (completed, counted). */
  txErrors: number;
  /** Frames longer than the RX buffer offered for them (completed, counted). */
  rxTooSmall: number;
  /** TX frames dropped for an offload header the driver may not send or that points outside the frame. */
  offloadDrops: number;
  /** NEEDS_CSUM frames whose checksum the device completed (the driver did not negotiate GUEST_CSUM). */
  checksummed: number;
  /** GSO frames cut into segments (the driver did not negotiate the matching GUEST_TSO). */
  segmented: number;
}

/** The counters a device state carries, in stream order: all of {@link NetStats}. */
const STATE_COUNTERS = ['frames', 'bytes', 'txErrors', 'rxTooSmall', 'offloadDrops', 'checksummed', 'segmented'] as const satisfies readonly (keyof NetStats)[];
const NET_STATE_SIZE = 8 + 8 * STATE_COUNTERS.length;

/** The largest TX frame taken: an IPv6 GSO frame of 64 KiB payload with a VLAN tag. */
const MAX_FRAME = 14 + 4 + 40 + 65535;
const F = VirtioNetFeature;
/** The offloads served (virtio 1.2 §5.1.3: each with its prerequisite). */
const OFFLOAD_FEATURES =
  bit(F.VIRTIO_NET_F_CSUM) | bit(F.VIRTIO_NET_F_GUEST_CSUM) | bit(F.VIRTIO_NET_F_HOST_TSO4) | bit(F.VIRTIO_NET_F_HOST_TSO6) | bit(F.VIRTIO_NET_F_HOST_USO) | bit(F.VIRTIO_NET_F_GUEST_TSO4) | bit(F.VIRTIO_NET_F_GUEST_TSO6);

/** Options of the loopback. */
export interface NetLoopbackOptions {
  /**
   * false: a faulty device for conformance tests, which acts on every TX offload
   * header as it is: completes checksums wherever csum_start/offset point (inside
   * the frame) and forwards frames whose header it cannot act on unchanged. Default true.
   */
  checkOffloads?: boolean;
}

export class NetLoopback implements DeviceModel {
  readonly features: bigint;
  /** SEND_RARP and NET_SET_MTU are served. */
  /** virtio 1.2 §5: device ID. */
  readonly deviceId = 1;
  readonly protocolFeatures = bit(ProtocolFeature.RARP) | bit(ProtocolFeature.MTU) | bit(ProtocolFeature.DEVICE_STATE);
  /** A RARP announcement waiting for an RX buffer on queue pair 0. */
  private pendingRarp: Uint8Array | null = null;
  private readonly hdr = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  /** The TX frame being looped, gathered from its chain. */
  private readonly frame = new Uint8Array(MAX_FRAME);
  private readonly layout = new FrameLayout();
  private readonly segmenter = new Segmenter(MAX_FRAME);
  private readonly checkOffloads: boolean;
  /** RX chains taken for a frame spanning several buffers that could not all be had yet, per RX ring. */
  private readonly rxStash = new WeakMap<Vring, Chain[]>();
  /** Used lengths of the RX buffers of the frame being delivered (with MRG_RXBUF as many as it takes: at most a ring, 32768). */
  private readonly rxUsed = new Uint32Array(32768);
  /** Segments of a TX ring's pending GSO frame already delivered. */
  private readonly segResume = new WeakMap<Vring, number>();
  /** Write position in the RX chain being filled (segment index, offset in it). */
  private wi = 0;
  private woff = 0;
  /** For the segment callback: where segments go. */
  private segRings: DeviceRings | null = null;
  private segRx: Vring | null = null;
  private readonly emitSegment = (seg: Uint8Array): boolean => this.deliver(this.segRings!, this.segRx!, seg, seg.length, false) !== 'wait';

  /** `queueNum` counts virtqueues (two per queue pair); `stats` is updated in place. */
  constructor(
    private readonly queueNum: number,
    private readonly mac: Uint8Array,
    private readonly mtu: number,
    private readonly stats: NetStats,
    options: NetLoopbackOptions = {},
  ) {
    let f = bit(F.VIRTIO_NET_F_MRG_RXBUF) | bit(F.VIRTIO_NET_F_MAC) | bit(F.VIRTIO_NET_F_STATUS) | bit(F.VIRTIO_NET_F_MTU) | OFFLOAD_FEATURES;
    if (queueNum > 2) f |= bit(F.VIRTIO_NET_F_MQ);
    this.features = f;
    this.checkOffloads = options.checkOffloads ?? true;
  }

  /** DEVICE_STATE: the MAC and every loopback counter (8-byte MAC slot, then one f64 per {@link STATE_COUNTERS} entry). */
  saveState(): Uint8Array {
    const out = new Uint8Array(NET_STATE_SIZE);
    const dv = new DataView(out.buffer);
    out.set(this.mac, 0);
    STATE_COUNTERS.forEach((k, i) => dv.setFloat64(8 + 8 * i, this.stats[k], true));
    return out;
  }

  /** DEVICE_STATE: the counters go on from the source's; a state of another MAC is refused (the guest's address cannot change in a migration). */
  loadState(state: Uint8Array): void {
    if (state.length !== NET_STATE_SIZE) throw new Error(`a net state is ${NET_STATE_SIZE} bytes, not ${state.length}`);
    if (state.subarray(0, 6).some((b, i) => b !== this.mac[i])) throw new Error('the state is of a device with another MAC');
    const dv = new DataView(state.buffer, state.byteOffset, state.length);
    STATE_COUNTERS.forEach((k, i) => (this.stats[k] = dv.getFloat64(8 + 8 * i, true)));
  }

  configSpace(): Uint8Array {
    const c = new Uint8Array(NET_CONFIG_SIZE);
    const dv = new DataView(c.buffer);
    c.set(this.mac, 0);
    dv.setUint16(6, 1, true); // VIRTIO_NET_S_LINK_UP
    dv.setUint16(8, this.queueNum / 2, true);
    dv.setUint16(10, this.mtu, true);
    return c;
  }

  process(s: DeviceRings, r: Vring): void {
    const pair = r.index >> 1;
    this.loopback(s, s.rings[2 * pair]!, s.rings[2 * pair + 1]!);
  }

  /**
   * SEND_RARP: announce `mac` as if the guest had sent the RARP frame DPDK
   * builds; the loopback's "network" is the guest's own RX ring of pair 0.
   */
  sendRarp(s: DeviceRings, mac: Uint8Array): void {
    this.pendingRarp = buildRarpFrame(mac);
    this.process(s, s.rings[0]!);
  }

  /** NET_SET_MTU: any MTU a virtio-net device may have (§5.1.4.1: 68..65535) is accepted; frames are not cut to it. */
  acceptsMtu(mtu: number): boolean {
    return mtu >= 68 && mtu <= 65535;
  }

  /** Starts filling RX chain `x` with `hdr` (§5.1.6.4). */
  private startRx(mem: BackendMemory, x: Chain, hdr: Uint8Array): void {
    this.wi = 0;
    this.woff = 0;
    this.write(mem, x, hdr);
  }

  /** Appends `src` to the RX chain `x` being filled (the caller checked it fits); returns whether `x` is now full. */
  private write(mem: BackendMemory, x: Chain, src: Uint8Array): void {
    let done = 0;
    while (done < src.length) {
      const seg = x.segments[this.wi]!;
      const n = Math.min(seg.len - this.woff, src.length - done);
      if (n > 0) mem.bytes(seg.gpa + this.woff, n).set(src.subarray(done, done + n));
      done += n;
      this.woff += n;
      if (this.woff === seg.len) {
        this.wi++;
        this.woff = 0;
      }
    }
  }

  /** Delivers a pending RARP frame when an RX buffer is there for it. */
  private deliverRarp(s: DeviceRings, rx: Vring): void {
    const frame = this.pendingRarp!;
    const x = s.pop(rx);
    if (x === null) return;
    this.pendingRarp = null;
    if (x.writableBytes < VIRTIO_NET_HDR_SIZE + frame.length || x.readableBytes !== 0) {
      this.stats.rxTooSmall++;
      rx.push(x, 0);
    } else {
      this.hdr.fill(0);
      this.hdr[HDR_NUM_BUFFERS] = 1;
      this.startRx(s.memory, x, this.hdr);
      this.write(s.memory, x, frame);
      rx.push(x, VIRTIO_NET_HDR_SIZE + frame.length);
    }
    rx.notify();
  }

  /** Copies every frame from TX to RX until either runs dry; a TX chain without an RX buffer waits. */
  private loopback(s: DeviceRings, rx: Vring, tx: Vring): void {
    if (this.pendingRarp !== null && rx.index === 0 && s.isReady(rx)) this.deliverRarp(s, rx);
    if (!s.isReady(tx) || !s.isReady(rx)) return;
    let txDone = 0;
    const mem = s.memory;
    const acked = s.ackedFeatures ?? 0n;
    this.rxPushed = 0;
    for (;;) {
      const t = tx.pendingTx ?? s.pop(tx);
      if (t === null) break;
      tx.pendingTx = null;
      if (t.readableBytes < VIRTIO_NET_HDR_SIZE || t.readableBytes - VIRTIO_NET_HDR_SIZE > MAX_FRAME) {
        // A chain shorter than the header (CVE-2022-2132 class), or a frame no header allows: completed, not forwarded.
        this.stats.txErrors++;
        tx.push(t, 0);
        txDone++;
        continue;
      }
      const len = this.gather(mem, t);
      const verdict = this.checkOffloads ? this.validate(len, acked) : 'ok';
      if (verdict !== 'ok') {
        this.stats.offloadDrops++;
        tx.push(t, 0);
        txDone++;
        continue;
      }
      // TX completes before RX is published (deliver() does it once the frame is copied into
      // the RX buffers): should this process die between the two, the frame is lost (the TX
      // buffer is done) rather than sent again by a front-end that resumes the TX ring from its
      // used index, so no frame is delivered twice. A frame cut into segments completes after
      // its last segment (a death in between can repeat segments, never a whole frame).
      this.txEarly = { ring: tx, chain: t };
      const r = this.forward(s, rx, tx, len, acked);
      const early = this.txEarly === null;
      this.txEarly = null;
      if (r === 'wait') {
        tx.pendingTx = t;
        break;
      }
      if (!early) tx.push(t, 0);
      txDone++;
      this.segResume.delete(tx);
    }
    if (this.rxPushed) rx.notify();
    if (txDone) tx.notify();
  }

  private rxPushed = 0;
  /** The TX chain being forwarded, to complete before its frame's RX buffers are published; null once done (or for segments). */
  private txEarly: { ring: Vring; chain: Chain } | null = null;

  /** Copies the TX chain's header into `hdr` and its frame into `frame`; returns the frame length. */
  private gather(mem: BackendMemory, t: Chain): number {
    let at = 0;
    const total = t.readableBytes;
    for (const seg of t.segments) {
      if (seg.writable) break;
      const src = mem.bytes(seg.gpa, seg.len);
      for (let o = 0; o < seg.len && at < total; ) {
        if (at < VIRTIO_NET_HDR_SIZE) {
          const n = Math.min(VIRTIO_NET_HDR_SIZE - at, seg.len - o);
          this.hdr.set(src.subarray(o, o + n), at);
          at += n;
          o += n;
        } else {
          const n = seg.len - o;
          this.frame.set(src.subarray(o, o + n), at - VIRTIO_NET_HDR_SIZE);
          at += n;
          o += n;
        }
      }
    }
    return total - VIRTIO_NET_HDR_SIZE;
  }

  /**
   * Whether the device may act on the TX header in `hdr` for a frame of `len`
   * bytes in `frame`: 'ok', or why not. virtio 1.2 §5.1.6.2.1 says what a driver
   * sends (NEEDS_CSUM only with CSUM; a gso_type only with its HOST_ feature, and then
   * with NEEDS_CSUM and a gso_size); csum_start + csum_offset + 2 must lie in the frame
   * for the device to store a checksum there; a TCP/UDP packet must hold its headers.
   */
  private validate(len: number, acked: bigint): string {
    const h = this.hdr;
    const needsCsum = (h[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
    const gso = h[HDR_GSO_TYPE]!;
    if (!needsCsum && gso === VIRTIO_NET_HDR_GSO_NONE) return 'ok';
    if (needsCsum) {
      if (!hasBit(acked, F.VIRTIO_NET_F_CSUM)) return 'NEEDS_CSUM without VIRTIO_NET_F_CSUM';
      const start = h[HDR_CSUM_START]! | (h[HDR_CSUM_START + 1]! << 8);
      const off = h[HDR_CSUM_OFFSET]! | (h[HDR_CSUM_OFFSET + 1]! << 8);
      if (start >= len || start + off + 2 > len) return 'csum_start/csum_offset beyond the frame';
      if (this.claimsL4(len) && !this.layout.parse(this.frame, len)) return 'a TCP/UDP packet cut short of its headers';
    }
    if (gso !== VIRTIO_NET_HDR_GSO_NONE) {
      const need = gso === VIRTIO_NET_HDR_GSO_TCPV4 ? F.VIRTIO_NET_F_HOST_TSO4 : gso === VIRTIO_NET_HDR_GSO_TCPV6 ? F.VIRTIO_NET_F_HOST_TSO6 : gso === VIRTIO_NET_HDR_GSO_UDP_L4 ? F.VIRTIO_NET_F_HOST_USO : -1;
      if (need < 0) return `gso_type ${gso} unknown or not served`;
      if (!hasBit(acked, need)) return `gso_type ${gso} without its feature negotiated`;
      if (!needsCsum) return 'GSO without NEEDS_CSUM';
      const gsoSize = h[HDR_GSO_SIZE]! | (h[HDR_GSO_SIZE + 1]! << 8);
      const hdrLen = h[HDR_HDR_LEN]! | (h[HDR_HDR_LEN + 1]! << 8);
      if (gsoSize === 0) return 'gso_size 0';
      if (hdrLen > len) return 'hdr_len beyond the frame';
      const l = this.layout;
      if (!l.parse(this.frame, len)) return 'a GSO frame that is not TCP/UDP over IP';
      const tcp = gso !== VIRTIO_NET_HDR_GSO_UDP_L4;
      if ((l.protocol === IPPROTO_TCP) !== tcp || (gso === VIRTIO_NET_HDR_GSO_TCPV4 && l.ipVersion !== 4) || (gso === VIRTIO_NET_HDR_GSO_TCPV6 && l.ipVersion !== 6)) return 'gso_type does not match the packet';
      if ((h[HDR_CSUM_START]! | (h[HDR_CSUM_START + 1]! << 8)) !== l.l4) return 'csum_start is not the L4 header of a GSO frame';
    }
    return 'ok';
  }

  /** Whether the frame's IP header (if it is IPv4/IPv6) says TCP or UDP. */
  private claimsL4(len: number): boolean {
    const f = this.frame;
    let l3 = 14;
    if (len < 14) return false;
    let type = (f[12]! << 8) | f[13]!;
    if (type === ETHERTYPE_VLAN && len >= 18) {
      type = (f[16]! << 8) | f[17]!;
      l3 = 18;
    }
    const p = type === ETHERTYPE_IPV4 && len >= l3 + 10 ? f[l3 + 9]! : type === ETHERTYPE_IPV6 && len >= l3 + 7 ? f[l3 + 6]! : -1;
    return p === IPPROTO_TCP || p === IPPROTO_UDP;
  }

  /** Sends the gathered TX frame on to RX as the negotiated features say; 'wait' when RX buffers ran out. */
  private forward(s: DeviceRings, rx: Vring, tx: Vring, len: number, acked: bigint): 'ok' | 'wait' | 'dropped' {
    const h = this.hdr;
    const needsCsum = (h[0]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && hasBit(acked, F.VIRTIO_NET_F_CSUM);
    const gso = h[HDR_GSO_TYPE]!;
    const guestCsum = hasBit(acked, F.VIRTIO_NET_F_GUEST_CSUM);
    if (gso !== VIRTIO_NET_HDR_GSO_NONE && this.checkOffloads) {
      const whole = (gso === VIRTIO_NET_HDR_GSO_TCPV4 && hasBit(acked, F.VIRTIO_NET_F_GUEST_TSO4)) || (gso === VIRTIO_NET_HDR_GSO_TCPV6 && hasBit(acked, F.VIRTIO_NET_F_GUEST_TSO6));
      if (!whole) {
        const gsoSize = h[HDR_GSO_SIZE]! | (h[HDR_GSO_SIZE + 1]! << 8);
        this.txEarly = null;
        this.segRings = s;
        this.segRx = rx;
        const first = this.segResume.get(tx) ?? 0;
        const next = this.segmenter.segment(this.frame, len, this.layout, gsoSize, this.emitSegment, first);
        if (next < 0) return 'dropped';
        const count = Math.ceil(Math.max(1, len - this.layout.headersLength) / gsoSize);
        if (next < count) {
          this.segResume.set(tx, next);
          return 'wait';
        }
        this.stats.segmented++;
        return 'ok';
      }
      // Whole to a GUEST_TSO driver: the header goes with it (§5.1.6.4), num_buffers set on delivery.
      return this.deliver(s, rx, this.frame, len, true);
    }
    if (needsCsum && !guestCsum) {
      const start = h[HDR_CSUM_START]! | (h[HDR_CSUM_START + 1]! << 8);
      const off = h[HDR_CSUM_OFFSET]! | (h[HDR_CSUM_OFFSET + 1]! << 8);
      if (completePartialChecksum(this.frame, 0, len, start, off)) this.stats.checksummed++;
      return this.deliver(s, rx, this.frame, len, false);
    }
    return this.deliver(s, rx, this.frame, len, needsCsum);
  }

  /**
   * Puts `frame[0, len)` on RX ring `rx`: one chain, or with MRG_RXBUF as many as it
   * takes (num_buffers, §5.1.6.4). With `keepHdr` the RX header carries the TX
   * header's offload fields (NEEDS_CSUM, GSO) for a GUEST_CSUM / GUEST_TSO driver;
   * else it is zero. 'wait' when the ring has too few buffers now (those taken are
   * kept for the next try); 'dropped' when the buffer offered cannot hold the frame.
   */
  private deliver(s: DeviceRings, rx: Vring, frame: Uint8Array, len: number, keepHdr: boolean): 'ok' | 'wait' | 'dropped' {
    const mem = s.memory;
    const mrg = hasBit(s.ackedFeatures ?? 0n, F.VIRTIO_NET_F_MRG_RXBUF);
    const need = VIRTIO_NET_HDR_SIZE + len;
    let stash = this.rxStash.get(rx);
    if (stash === undefined) {
      stash = [];
      this.rxStash.set(rx, stash);
    }
    let room = 0;
    for (const c of stash) room += c.writableBytes;
    while (room < need && (mrg || stash.length === 0)) {
      const x = s.pop(rx);
      if (x === null) return 'wait';
      if (x.readableBytes !== 0 || x.writableBytes === 0) {
        this.stats.rxTooSmall++;
        rx.push(x, 0);
        this.rxPushed++;
        continue;
      }
      stash.push(x);
      room += x.writableBytes;
    }
    if (room < need) {
      this.stats.rxTooSmall++;
      for (const x of stash) rx.push(x, 0);
      this.rxPushed += stash.length;
      stash.length = 0;
      return 'dropped';
    }
    const out = this.hdr;
    if (keepHdr) out[0]! &= VIRTIO_NET_HDR_F_NEEDS_CSUM;
    else out.fill(0, 0, HDR_NUM_BUFFERS);
    out[HDR_NUM_BUFFERS] = stash.length & 0xff;
    out[HDR_NUM_BUFFERS + 1] = stash.length >>> 8;
    let done = 0;
    const used = this.rxUsed;
    for (let k = 0; k < stash.length; k++) {
      const x = stash[k]!;
      const take = Math.min(x.writableBytes - (k === 0 ? VIRTIO_NET_HDR_SIZE : 0), len - done);
      if (k === 0) this.startRx(mem, x, out);
      else {
        this.wi = 0;
        this.woff = 0;
      }
      this.write(mem, x, frame.subarray(done, done + take));
      done += take;
      used[k] = take + (k === 0 ? VIRTIO_NET_HDR_SIZE : 0);
    }
    if (this.txEarly !== null) {
      this.txEarly.ring.push(this.txEarly.chain, 0);
      this.txEarly = null;
    }
    for (let k = 0; k < stash.length; k++) rx.push(stash[k]!, used[k]!);
    this.rxPushed += stash.length;
    stash.length = 0;
    this.stats.frames++;
    this.stats.bytes += len;
    return 'ok';
  }
}
