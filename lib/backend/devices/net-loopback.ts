/**
 * The reference back-end's 'net' device: a loopback. A frame sent on TX ring
 * 2i+1 comes back on RX ring 2i with a fresh virtio_net_hdr.
 */
import { NET_CONFIG_SIZE } from '../../devices/net/net-config.js';
import { VIRTIO_NET_HDR_SIZE } from '../../devices/net/virtio-net-hdr.js';
import { buildRarpFrame } from '../../net/frame-builder.js';
import { ProtocolFeature, VirtioNetFeature, bit } from '../../protocol/constants.js';
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
}


export class NetLoopback implements DeviceModel {
  readonly features: bigint;
  /** SEND_RARP and NET_SET_MTU are served. */
  /** virtio 1.2 §5: device ID. */
  readonly deviceId = 1;
  readonly protocolFeatures = bit(ProtocolFeature.RARP) | bit(ProtocolFeature.MTU) | bit(ProtocolFeature.DEVICE_STATE);
  /** A RARP announcement waiting for an RX buffer on queue pair 0. */
  private pendingRarp: Uint8Array | null = null;
  private readonly scratch = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  /** Write position in the RX chain being filled (segment index, offset in it). */
  private wi = 0;
  private woff = 0;

  /** `queueNum` counts virtqueues (two per queue pair); `stats` is updated in place. */
  constructor(
    private readonly queueNum: number,
    private readonly mac: Uint8Array,
    private readonly mtu: number,
    private readonly stats: NetStats,
  ) {
    let f = bit(VirtioNetFeature.VIRTIO_NET_F_MRG_RXBUF) | bit(VirtioNetFeature.VIRTIO_NET_F_MAC) | bit(VirtioNetFeature.VIRTIO_NET_F_STATUS) | bit(VirtioNetFeature.VIRTIO_NET_F_MTU);
    if (queueNum > 2) f |= bit(VirtioNetFeature.VIRTIO_NET_F_MQ);
    this.features = f;
  }

  /** DEVICE_STATE: the MAC and the loopback counters (8-byte MAC slot, then four f64). */
  saveState(): Uint8Array {
    const out = new Uint8Array(8 + 4 * 8);
    const dv = new DataView(out.buffer);
    out.set(this.mac, 0);
    [this.stats.frames, this.stats.bytes, this.stats.txErrors, this.stats.rxTooSmall].forEach((v, i) => dv.setFloat64(8 + 8 * i, v, true));
    return out;
  }

  /** DEVICE_STATE: the counters go on from the source's; a state of another MAC is refused (the guest's address cannot change in a migration). */
  loadState(state: Uint8Array): void {
    if (state.length !== 40) throw new Error(`a net state is 40 bytes, not ${state.length}`);
    if (state.subarray(0, 6).some((b, i) => b !== this.mac[i])) throw new Error('the state is of a device with another MAC');
    const dv = new DataView(state.buffer, state.byteOffset, state.length);
    this.stats.frames = dv.getFloat64(8, true);
    this.stats.bytes = dv.getFloat64(16, true);
    this.stats.txErrors = dv.getFloat64(24, true);
    this.stats.rxTooSmall = dv.getFloat64(32, true);
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

  /** Starts filling RX chain `x` with a fresh virtio_net_hdr (all zero, num_buffers = 1, §5.1.6.4). */
  private startRx(mem: BackendMemory, x: Chain): void {
    this.wi = 0;
    this.woff = 0;
    const hdr = this.scratch;
    hdr.fill(0);
    hdr[10] = 1;
    this.write(mem, x, hdr);
  }

  /** Appends `src` to the RX chain `x` being filled (the caller checked it fits). */
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
      this.startRx(s.memory, x);
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
    let rxDone = 0;
    const mem = s.memory;
    for (;;) {
      const t = tx.pendingTx ?? s.pop(tx);
      if (t === null) break;
      tx.pendingTx = null;
      if (t.readableBytes < VIRTIO_NET_HDR_SIZE) {
        // A chain shorter than the header (CVE-2022-2132 class): completed, not forwarded.
        this.stats.txErrors++;
        tx.push(t, 0);
        txDone++;
        continue;
      }
      const frameLen = t.readableBytes - VIRTIO_NET_HDR_SIZE;
      const x = s.pop(rx);
      if (x === null) {
        tx.pendingTx = t;
        break;
      }
      if (x.writableBytes < VIRTIO_NET_HDR_SIZE + frameLen || x.readableBytes !== 0) {
        this.stats.rxTooSmall++;
        rx.push(x, 0);
        tx.push(t, 0);
        rxDone++;
        txDone++;
        continue;
      }
      this.startRx(mem, x);
      let skip = VIRTIO_NET_HDR_SIZE;
      for (const seg of t.segments) {
        if (seg.writable) break;
        if (skip >= seg.len) {
          skip -= seg.len;
          continue;
        }
        this.write(mem, x, mem.bytes(seg.gpa + skip, seg.len - skip));
        skip = 0;
      }
      // TX completes before RX: should this process die between the two, the frame
      // is lost (the TX buffer is done) rather than sent again by a front-end that
      // resumes the TX ring from its used index, so no frame is delivered twice.
      tx.push(t, 0);
      rx.push(x, VIRTIO_NET_HDR_SIZE + frameLen);
      rxDone++;
      txDone++;
      this.stats.frames++;
      this.stats.bytes += frameLen;
    }
    if (rxDone) rx.notify();
    if (txDone) tx.notify();
  }
}
