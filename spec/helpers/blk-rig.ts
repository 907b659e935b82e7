/**
 * A minimal virtio-blk front-end for back-end tests: VhostUserClient, one split
 * ring on memfd guest memory, each request slot with its own header, data page
 * and status byte (slot = token), so many requests can be in flight at once. A
 * rig survives its back-end: attach() sets the same memory and ring up on a new
 * connection, handing over the inflight area, as QEMU's vhost-user-blk does on
 * reconnect.
 */
import { VhostUserClient, SUPPORTED_PROTOCOL_FEATURES, type InflightArea, type Negotiated } from '../../lib/client/vhost-user-client.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { closeFd } from '../../lib/native/libc.js';
import { bit, DeviceStatus, hasBit, ProtocolFeature, VirtioFeature } from '../../lib/protocol/constants.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import type { Virtqueue } from '../../lib/virtqueue/virtqueue.js';

export const BLK_T = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 } as const;
export const RIG_PAGE = 4096;
/** Where slot `token`'s header (16 bytes each), status byte and data page live in guest memory. */
export const RIG_HDR = 0x100000;
export const RIG_STATUS = 0x200000;
export const RIG_DATA = 0x400000;
const HDR = RIG_HDR;
const STATUS = RIG_STATUS;
const DATA = RIG_DATA;

export interface RigCompletion {
  token: number;
  status: number;
  len: number;
}

export class BlkRig {
  readonly memory: GuestMemory;
  readonly vq: Virtqueue;
  readonly kick = new EventFd();
  readonly call = new EventFd();
  client: VhostUserClient | null = null;
  negotiated: Negotiated | null = null;
  area: InflightArea | null = null;
  /** Every completion reaped, in order (a token twice means a request completed twice). */
  readonly completions: RigCompletion[] = [];
  private readonly tokens: Uint32Array;
  private readonly lens: Uint32Array;

  constructor(readonly queueSize = 512, readonly slots = 128, readonly ring: 'split' | 'packed' = 'split') {
    this.memory = GuestMemory.create({ size: DATA + slots * RIG_PAGE });
    const q = { memory: this.memory, index: 0, size: queueSize, ringGpa: 0, eventIdx: false };
    this.vq = ring === 'packed' ? new PackedVirtqueue(q) : new SplitVirtqueue(q);
    this.tokens = new Uint32Array(queueSize);
    this.lens = new Uint32Array(queueSize);
  }

  /** Connects, negotiates (INFLIGHT_SHMFD when `inflight`), hands over or gets the area, sets the ring up. */
  async attach(socket: string, options: { inflight?: boolean; extraFeatures?: bigint } = {}): Promise<Negotiated> {
    const c = await VhostUserClient.connect(socket, { timeoutMs: 3000, connect: { timeoutMs: 5000 } });
    this.client = c;
    const n = await c.negotiate({ protocolFeatures: SUPPORTED_PROTOCOL_FEATURES | (options.inflight ? bit(ProtocolFeature.INFLIGHT_SHMFD) : 0n) });
    this.negotiated = n;
    const packed = this.ring === 'packed' ? bit(VirtioFeature.VIRTIO_F_RING_PACKED) : 0n;
    await c.setFeatures(bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES) | packed | (options.extraFeatures ?? 0n));
    // virtio 1.2 §3.1.1; DPDK starts a device only once it sees DRIVER_OK.
    const status = hasBit(n.protocolFeatures, ProtocolFeature.STATUS);
    const FEATURES_OK = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
    if (status) await c.setStatus(FEATURES_OK);
    if (options.inflight) {
      // QEMU's vhost-user-blk: GET_INFLIGHT_FD once, SET_INFLIGHT_FD on every start.
      this.area ??= await c.getInflightFd(1, this.queueSize);
      await c.setInflightFd(this.area);
    }
    await c.setMemTable(this.memory);
    await c.setVringNum(0, this.queueSize);
    // After a crash the back-end cannot be asked GET_VRING_BASE: the used index is the base (as QEMU does);
    // packed: the position just past the last used descriptor, in both halves (the initial base on a fresh ring).
    await c.setVringBase(0, this.ring === 'packed' ? this.vq.resumeBase() : this.usedIdx());
    const a = this.vq.addresses;
    await c.setVringAddr({ index: 0, descUserAddr: this.memory.userAddr(a.desc), availUserAddr: this.memory.userAddr(a.driver), usedUserAddr: this.memory.userAddr(a.device) });
    await c.setVringCall(0, this.call.fd);
    await c.setVringKick(0, this.kick.fd);
    await c.setVringEnable(0, true);
    if (status) await c.setStatus(FEATURES_OK | DeviceStatus.DRIVER_OK);
    return n;
  }

  /** used.idx as the back-end wrote it (split rings). */
  usedIdx(): number {
    return this.memory.dataView(this.vq.addresses.device, 4).getUint16(2, true);
  }

  data(token: number): Uint8Array {
    return this.memory.bytes(DATA + token * RIG_PAGE, RIG_PAGE);
  }

  status(token: number): number {
    return this.memory.bytes(STATUS + token, 1)[0]!;
  }

  /** Adds a request in slot `token` (not yet published); `segments` are DISCARD/WRITE_ZEROES ranges. */
  add(token: number, type: number, sector: bigint, options: { length?: number; segments?: { sector: bigint; num: number; flags: number }[] } = {}): void {
    const h = this.memory.dataView(HDR + token * 16, 16);
    h.setUint32(0, type, true);
    h.setUint32(4, 0, true);
    h.setBigUint64(8, sector, true);
    this.memory.bytes(STATUS + token, 1)[0] = 0xff;
    let length = options.length ?? (type === BLK_T.IN || type === BLK_T.OUT ? RIG_PAGE : 0);
    if (options.segments) {
      const dv = this.memory.dataView(DATA + token * RIG_PAGE, options.segments.length * 16);
      options.segments.forEach((s, i) => {
        dv.setBigUint64(i * 16, s.sector, true);
        dv.setUint32(i * 16 + 8, s.num, true);
        dv.setUint32(i * 16 + 12, s.flags, true);
      });
      length = options.segments.length * 16;
    }
    const deviceReadsData = type === BLK_T.OUT || type === BLK_T.DISCARD || type === BLK_T.WRITE_ZEROES;
    const gpas = length ? [HDR + token * 16, DATA + token * RIG_PAGE, STATUS + token] : [HDR + token * 16, STATUS + token];
    const lengths = length ? [16, length, 1] : [16, 1];
    if (!this.vq.addChain(gpas, lengths, gpas.length, deviceReadsData && length ? 2 : 1, token)) throw new Error('ring full');
  }

  publish(): void {
    if (this.vq.publish()) this.kick.signal();
  }

  /** Reaps completions into `completions`; returns how many. */
  reap(): number {
    let total = 0;
    for (let n = this.vq.reap(this.tokens, this.lens, this.queueSize); n > 0; n = this.vq.reap(this.tokens, this.lens, this.queueSize)) {
      for (let i = 0; i < n; i++) this.completions.push({ token: this.tokens[i]!, status: this.status(this.tokens[i]!), len: this.lens[i]! });
      total += n;
    }
    return total;
  }

  /** Waits until `count` completions were reaped in all, or `ms` pass; returns whether they were. */
  async waitFor(count: number, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.reap();
      if (this.completions.length >= count) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  /** One request, waited for. */
  async request(token: number, type: number, sector: bigint, options: Parameters<BlkRig['add']>[3] = {}): Promise<RigCompletion> {
    const before = this.completions.length;
    this.add(token, type, sector, options);
    this.publish();
    if (!(await this.waitFor(before + 1))) throw new Error(`request ${token} (type ${type}) not completed`);
    return this.completions[this.completions.length - 1]!;
  }

  /** Drops the connection (the back-end keeps or loses what it holds). */
  detach(): void {
    this.client?.close();
    this.client = null;
  }

  close(): void {
    this.detach();
    if (this.area) closeFd(this.area.fd);
    this.area = null;
    this.kick.close();
    this.call.close();
    this.memory.close();
  }
}
