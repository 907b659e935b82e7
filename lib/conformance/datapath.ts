/**
 * Minimal drivers the data-plane checks drive a back-end with: rings of 64
 * entries in memfd guest memory, no optional features unless asked, every
 * buffer one descriptor (net) or one three-part chain (blk). Unlike VirtioNet,
 * every step is the check's to take: which features SET_FEATURES carries,
 * whether and when SET_VRING_ENABLE is sent, when a ring is stopped and
 * restarted, and whether used-ring writes are logged.
 *
 * Rings are split unless a check asks for packed. Layout (guest-physical): ring i at i * 0x4000; net RX buffers at 0x100000,
 * TX buffers at 0x200000 (2 KiB slots); blk request header at 0x100000, data
 * at 0x200000, status at 0x300000. Guest memory is one 4 MiB region at GPA 0.
 */
import type { Negotiated, VhostUserClient } from '../client/vhost-user-client.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_NET_HDR_SIZE } from '../devices/net/virtio-net-hdr.js';
import { buildUdpFrameOfSize, frameSequence } from '../net/frame-builder.js';
import { bit, DeviceStatus, featureNames, hasBit, ProtocolFeature, VHOST_VRING_F_LOG, VirtioFeature } from '../protocol/constants.js';
import type { EventFd } from '../transport/eventfd.js';
import { VhostUserError } from '../errors.js';
import { encodePackedVringBase } from '../protocol/payloads.js';
import { PackedVirtqueue } from '../virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../virtqueue/split-queue.js';
import type { Virtqueue } from '../virtqueue/virtqueue.js';
import { skip } from './check.js';
import type { CheckContext } from './context.js';

export const QUEUE_SIZE = 64;
export const MEMORY_SIZE = 4 << 20;
const RING_STRIDE = 0x4000;
const SLOT = 2048;
/** virtio_net_hdr with VIRTIO_F_VERSION_1 (virtio 1.2 §5.1.6: num_buffers is always present). */
export const NET_HDR_SIZE = VIRTIO_NET_HDR_SIZE;

export interface RingSetupOptions {
  /** Put VHOST_USER_F_PROTOCOL_FEATURES in SET_FEATURES (default true). */
  protocolFeatures?: boolean;
  /** Send SET_VRING_ENABLE 1 for every ring after setting it up (default: when protocolFeatures). */
  enable?: boolean;
  /** More feature bits for SET_FEATURES (e.g. VHOST_F_LOG_ALL); each must be offered. */
  extraFeatures?: bigint;
  /** Set VHOST_VRING_F_LOG with log_guest_addr = where completions are written: the used ring (split), the descriptor ring (packed). */
  logUsed?: boolean;
  /** Ring layout (default split); packed adds VIRTIO_F_RING_PACKED to SET_FEATURES. */
  ring?: 'split' | 'packed';
  /**
   * GPA of ring 0 (default 0; ring i follows at i * 0x4000). Below 0x100000. DPDK 22.11 takes a
   * log_guest_addr of 0 for "not mapped" and leaves the ring stopped, so logging checks move the rings up.
   */
  ringOffset?: number;
}

/** A fresh packed ring: both indexes 0, both wrap counters 1 (virtio 1.2 §2.8.1). */
export const PACKED_INITIAL_BASE = encodePackedVringBase({ lastAvailIdx: 0, availWrapCounter: true, lastUsedIdx: 0, usedWrapCounter: true });

/** SET_FEATURES, SET_MEM_TABLE and, per ring, NUM, BASE, ADDR, KICK, CALL (QEMU's order), then ENABLE. */
export class Rings {
  readonly queues: Virtqueue[] = [];
  readonly kicks: EventFd[] = [];
  readonly calls: EventFd[] = [];
  readonly features: bigint;

  private constructor(
    readonly ctx: CheckContext,
    readonly client: VhostUserClient,
    readonly memory: GuestMemory,
    readonly options: RingSetupOptions,
    features: bigint,
  ) {
    this.features = features;
  }

  static async setUp(ctx: CheckContext, client: VhostUserClient, n: Negotiated, count: number, options: RingSetupOptions = {}): Promise<Rings> {
    const pf = options.protocolFeatures ?? true;
    const packed = options.ring === 'packed';
    let features = bit(VirtioFeature.VIRTIO_F_VERSION_1) | (options.extraFeatures ?? 0n);
    if (packed) features |= bit(VirtioFeature.VIRTIO_F_RING_PACKED);
    if (pf) features |= bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
    const missing = features & ~n.features;
    if (missing) skip(`feature ${featureNames(missing).join(', ')} not offered`);
    if (n.queueNum !== null && n.queueNum < count) skip(`the check needs ${count} queues, GET_QUEUE_NUM says ${n.queueNum}`);
    await client.setFeatures(features);
    // virtio 1.2 §3.1.1 initialisation; DPDK starts a device only once it sees DRIVER_OK.
    const status = client.hasProtocolFeature(ProtocolFeature.STATUS);
    if (status) await client.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK);
    const memory = ctx.memory({ size: MEMORY_SIZE });
    await client.setMemTable(memory);
    const rings = new Rings(ctx, client, memory, options, features);
    for (let i = 0; i < count; i++) {
      const q = { memory, index: i, size: QUEUE_SIZE, ringGpa: (options.ringOffset ?? 0) + i * RING_STRIDE, eventIdx: false };
      rings.queues.push(packed ? new PackedVirtqueue(q) : new SplitVirtqueue(q));
      rings.kicks.push(ctx.eventFd());
      rings.calls.push(ctx.eventFd());
      await rings.start(i, packed ? PACKED_INITIAL_BASE : 0);
    }
    if (options.enable ?? pf) for (let i = 0; i < count; i++) await client.setVringEnable(i, true);
    if (status) await client.setStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK);
    return rings;
  }

  /** Sets a ring up (again) from `base`: NUM, BASE, ADDR, KICK, CALL. */
  async start(i: number, base: number): Promise<void> {
    const q = this.queues[i]!;
    const c = this.client;
    await c.setVringNum(i, QUEUE_SIZE);
    await c.setVringBase(i, base);
    const m = this.memory;
    await c.setVringAddr({
      index: i,
      descUserAddr: m.userAddr(q.addresses.desc),
      availUserAddr: m.userAddr(q.addresses.driver),
      usedUserAddr: m.userAddr(q.addresses.device),
      ...(this.options.logUsed ? { flags: VHOST_VRING_F_LOG, logGuestAddr: q.packed ? q.addresses.desc : q.addresses.device } : {}),
    });
    await c.setVringKick(i, this.kicks[i]!.fd);
    await c.setVringCall(i, this.calls[i]!.fd);
  }

  /** Publishes what was added to ring `i` and kicks it (always: an extra kick is harmless). */
  kick(i: number): void {
    this.queues[i]!.publish();
    this.kicks[i]!.signal();
  }

  /** The used index the back-end has written for split ring `i`. */
  usedIdx(i: number): number {
    if (this.queues[i]!.packed) throw new VhostUserError('VHOST_INVALID_STATE', 'a packed ring has no used index');
    return this.memory.dataView(this.queues[i]!.addresses.device, 4).getUint16(2, true);
  }

  get protocolFeatures(): boolean {
    return hasBit(this.features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
  }
}

/** virtio-net queue pair 0: RX ring 0, TX ring 1 (virtio 1.2 §5.1.2). */
export class NetPath {
  /** Sequence numbers of frames received, in arrival order. */
  readonly received: number[] = [];
  /** Every frame received (for RARP and similar checks), without the virtio-net header. */
  readonly frames: Uint8Array[] = [];
  /** The RX slot each of `frames` arrived in. */
  readonly slots: number[] = [];
  /** GPA of TX buffer slots; a check may move it into another region. */
  txBase = 0x200000;
  private txNext = 0;
  private readonly tokens = new Uint32Array(QUEUE_SIZE);
  private readonly lens = new Uint32Array(QUEUE_SIZE);

  private constructor(readonly rings: Rings) {}

  static async open(ctx: CheckContext, client: VhostUserClient, n: Negotiated, options: RingSetupOptions = {}): Promise<NetPath> {
    const net = new NetPath(await Rings.setUp(ctx, client, n, 2, options));
    const rx = net.rings.queues[0]!;
    for (let s = 0; s < QUEUE_SIZE; s++) rx.addBuffer(0x100000 + s * SLOT, SLOT, true, s);
    net.rings.kick(0);
    return net;
  }

  get memory(): GuestMemory {
    return this.rings.memory;
  }

  /** GPA of RX slot `s`. */
  rxSlot(s: number): number {
    return 0x100000 + s * SLOT;
  }

  /** Sends one UDP frame carrying `seq`; returns false when the TX ring is full. */
  send(seq: number, size = 128): boolean {
    this.reapTx();
    const tx = this.rings.queues[1]!;
    if (tx.freeCount === 0) return false;
    const gpa = this.txBase + (this.txNext++ % QUEUE_SIZE) * SLOT;
    const frame = buildUdpFrameOfSize(size, seq);
    this.memory.bytes(gpa, NET_HDR_SIZE).fill(0);
    this.memory.write(gpa + NET_HDR_SIZE, frame);
    tx.addBuffer(gpa, NET_HDR_SIZE + frame.length, false, seq);
    this.rings.kick(1);
    return true;
  }

  /**
   * Sends `frame` behind `header` (the first 10 bytes of a virtio_net_hdr, as a
   * driver fills them; num_buffers 0) with token `seq`, header and frame in one
   * descriptor; returns false when the TX ring is full or the frame does not fit a slot.
   */
  sendRaw(header: Uint8Array, frame: Uint8Array, seq: number): boolean {
    this.reapTx();
    const tx = this.rings.queues[1]!;
    if (tx.freeCount === 0 || NET_HDR_SIZE + frame.length > SLOT) return false;
    const gpa = this.txBase + (this.txNext++ % QUEUE_SIZE) * SLOT;
    this.memory.bytes(gpa, NET_HDR_SIZE).fill(0);
    this.memory.write(gpa, header.subarray(0, Math.min(header.length, NET_HDR_SIZE - 2)));
    this.memory.write(gpa + NET_HDR_SIZE, frame);
    tx.addBuffer(gpa, NET_HDR_SIZE + frame.length, false, seq);
    this.rings.kick(1);
    return true;
  }

  /** Completed TX buffers taken back. */
  reapTx(): number {
    const tx = this.rings.queues[1]!;
    let total = 0;
    for (let n = tx.reap(this.tokens, this.lens, QUEUE_SIZE); n > 0; n = tx.reap(this.tokens, this.lens, QUEUE_SIZE)) total += n;
    return total;
  }

  /** Takes received frames into `received`/`frames` and gives their buffers back. */
  pollRx(): number {
    const rx = this.rings.queues[0]!;
    let total = 0;
    for (let n = rx.reap(this.tokens, this.lens, QUEUE_SIZE); n > 0; n = rx.reap(this.tokens, this.lens, QUEUE_SIZE)) {
      for (let i = 0; i < n; i++) {
        const s = this.tokens[i]!;
        const len = this.lens[i]!;
        const frame = len > NET_HDR_SIZE ? this.memory.read(this.rxSlot(s) + NET_HDR_SIZE, len - NET_HDR_SIZE) : new Uint8Array(0);
        this.frames.push(frame);
        this.slots.push(s);
        const seq = frameSequence(frame);
        if (seq !== undefined) this.received.push(seq);
        rx.addBuffer(this.rxSlot(s), SLOT, true, s);
      }
      total += n;
    }
    if (total) this.rings.kick(0);
    return total;
  }

  /** Waits up to `ms` for a frame carrying `seq` to come back on RX. */
  async waitFor(seq: number, ms: number): Promise<boolean> {
    return this.rings.ctx.until(() => {
      this.pollRx();
      this.reapTx();
      return this.received.includes(seq);
    }, ms);
  }

  /** Sends `seq` and waits for it to come back (the back-end loops or forwards frames). */
  async roundTrip(seq: number, ms: number): Promise<boolean> {
    if (!this.send(seq)) return false;
    return this.waitFor(seq, ms);
  }
}

export const BlkRequestType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8 } as const;

export interface BlkCompletion {
  /** virtio-blk status byte: 0 OK, 1 IOERR, 2 UNSUPP. */
  status: number;
  /** Bytes the device reports written (data + status). */
  len: number;
}

const BLK_HDR = 0x100000;
const BLK_STATUS = 0x300000;

/**
 * virtio-blk request queue 0 (virtio 1.2 §5.2.6): header, data, status as one
 * chain. Each request has its own header and status slot (by token), so a request
 * the back-end never completed cannot be mistaken for a later one; the data
 * buffer is shared, so data-carrying requests go one at a time.
 */
export class BlkPath {
  /** GPA of the data buffer; a check may move it into another region. */
  dataGpa = 0x200000;
  readonly completed = new Map<number, BlkCompletion>();
  private readonly tokens = new Uint32Array(QUEUE_SIZE);
  private readonly lens = new Uint32Array(QUEUE_SIZE);
  private nextToken = 0;

  private constructor(readonly rings: Rings) {}

  static async open(ctx: CheckContext, client: VhostUserClient, n: Negotiated, options: RingSetupOptions = {}): Promise<BlkPath> {
    return new BlkPath(await Rings.setUp(ctx, client, n, 1, options));
  }

  get memory(): GuestMemory {
    return this.rings.memory;
  }

  /** Makes one request available and kicks; `data` is written to the data buffer for OUT. Returns its token. */
  submit(type: number, sector: bigint, length: number, data?: Uint8Array): number {
    const token = this.nextToken++;
    const hdr = BLK_HDR + (token % QUEUE_SIZE) * 16;
    const status = BLK_STATUS + (token % QUEUE_SIZE);
    const h = this.memory.dataView(hdr, 16);
    h.setUint32(0, type, true);
    h.setUint32(4, 0, true);
    h.setBigUint64(8, sector, true);
    this.memory.bytes(status, 1)[0] = 0xff;
    if (data) this.memory.write(this.dataGpa, data);
    const write = type === BlkRequestType.OUT;
    const gpas = length ? [hdr, this.dataGpa, status] : [hdr, status];
    const lens = length ? [16, length, 1] : [16, 1];
    this.rings.queues[0]!.addChain(gpas, lens, gpas.length, write && length ? 2 : 1, token);
    this.rings.kick(0);
    return token;
  }

  /** Takes completions into `completed`. */
  poll(): number {
    const q = this.rings.queues[0]!;
    let total = 0;
    for (let n = q.reap(this.tokens, this.lens, QUEUE_SIZE); n > 0; n = q.reap(this.tokens, this.lens, QUEUE_SIZE)) {
      for (let i = 0; i < n; i++) {
        const t = this.tokens[i]!;
        this.completed.set(t, { status: this.memory.bytes(BLK_STATUS + (t % QUEUE_SIZE), 1)[0]!, len: this.lens[i]! });
      }
      total += n;
    }
    return total;
  }

  /** The completion of request `token` within `ms`, or null. */
  async wait(token: number, ms: number): Promise<BlkCompletion | null> {
    await this.rings.ctx.until(() => (this.poll(), this.completed.has(token)), ms);
    return this.completed.get(token) ?? null;
  }

  async request(type: number, sector: bigint, length: number, ms: number, data?: Uint8Array): Promise<BlkCompletion | null> {
    return this.wait(this.submit(type, sector, length, data), ms);
  }

  read(length: number): Uint8Array {
    return this.memory.read(this.dataGpa, length);
  }
}
