/**
 * The vhost-user front-end: what QEMU's hw/virtio/vhost-user.c does for a VM,
 * for a test or a tool. One short method per request, named as in the spec
 * (vhost-user.rst, "Front-end message types"); the policy lives in `request()`:
 *
 * - a request that needs a protocol feature is refused before it is sent when the
 *   feature was not negotiated (VHOST_FEATURE_NOT_NEGOTIATED);
 * - with REPLY_ACK negotiated, every request without a reply of its own carries
 *   NEED_REPLY and waits for the ack; a non-zero ack is VHOST_NACK naming it;
 * - without REPLY_ACK, requests whose effect later steps rely on are followed by
 *   GET_FEATURES as a barrier, as QEMU does (vhost_user_set_vring_addr et al.);
 * - a protocol violation, a timeout or a lost connection leaves the client broken
 *   for good and emits `disconnect` once with the reason.
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserError } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { GuestRegion } from '../memory/guest-region.js';
import { C, closeFd, libc, syscallError } from '../native/libc.js';
import {
  bit,
  FrontendRequest,
  hasBit,
  ProtocolFeature,
  VHOST_MEMORY_BASELINE_NREGIONS,
  VirtioFeature,
} from '../protocol/constants.js';
import {
  Config,
  decodeDeviceStateFdReply,
  decodePackedVringBase,
  DeviceStateTransfer,
  TransferDirection,
  TransferPhase,
  Inflight,
  encodePayload,
  encodeVringFdIndex,
  Log,
  MemoryTable,
  SingleMemoryRegion,
  U64,
  VringAddr,
  VringState,
  type MemoryRegion,
  type PackedVringBase,
  type PayloadCodec,
} from '../protocol/payloads.js';
import { requireFrontendRequestSpec } from '../protocol/requests.js';
import { Connection } from '../transport/connection.js';
import type { UnixListener } from '../transport/unix-listener.js';
import { UnixStream, type ConnectOptions } from '../transport/unix-stream.js';
import { BackendChannel, type HostNotifier } from './backend-channel.js';
import { FrontendChannel, type Reply } from './frontend-channel.js';
import type { TraceHook } from './trace.js';

/** Options of {@link VhostUserClient.connect} and {@link VhostUserClient.accept}. */
export interface VhostUserClientOptions {
  /** How long any reply may take (default 5000 ms). */
  timeoutMs?: number;
  /** Sees every message in both directions, decoded. */
  trace?: TraceHook;
}

/** Protocol features this library can honour, and so asks for by default. */
export const SUPPORTED_PROTOCOL_FEATURES: bigint = [
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.RARP,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.MTU,
  ProtocolFeature.BACKEND_REQ,
  ProtocolFeature.CONFIG,
  ProtocolFeature.BACKEND_SEND_FD,
  ProtocolFeature.HOST_NOTIFIER,
  ProtocolFeature.RESET_DEVICE,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
  ProtocolFeature.DEVICE_STATE,
].reduce((mask, b) => mask | bit(b), 0n);

/** Options of {@link VhostUserClient.negotiate}. */
export interface NegotiateOptions {
  /** Protocol features to accept if offered (default SUPPORTED_PROTOCOL_FEATURES). */
  protocolFeatures?: bigint;
  /** Open the back-end request channel when BACKEND_REQ is negotiated (default true). */
  backendChannel?: boolean;
}

/** What {@link VhostUserClient.negotiate} learnt from the back-end. */
export interface Negotiated {
  /** What GET_FEATURES offered (SET_FEATURES comes later, at device start). */
  features: bigint;
  /** What GET_PROTOCOL_FEATURES offered; 0 without VHOST_USER_F_PROTOCOL_FEATURES. */
  offeredProtocolFeatures: bigint;
  /** What SET_PROTOCOL_FEATURES acknowledged. */
  protocolFeatures: bigint;
  /** GET_QUEUE_NUM, or null without MQ. */
  queueNum: number | null;
  /** GET_MAX_MEM_SLOTS, or null without CONFIGURE_MEM_SLOTS. */
  maxMemSlots: number | null;
}

/**
 * SET_VRING_ADDR (vhost-user.rst, 'A vring address description'). The ring addresses
 * are front-end virtual addresses ({@link GuestMemory.userAddr}), as the memory table
 * gave them to the back-end.
 */
export interface VringAddrOptions {
  /** The vring. */
  index: number;
  /** The descriptor table (packed: the descriptor ring). */
  descUserAddr: number | bigint;
  /** The used ring (packed: the device event suppression area). */
  usedUserAddr: number | bigint;
  /** The available ring (packed: the driver event suppression area). */
  availUserAddr: number | bigint;
  /** Guest physical address where used-ring writes are logged, with VHOST_VRING_F_LOG. */
  logGuestAddr?: number | bigint;
  /** VHOST_VRING_F_LOG to have used-ring writes logged. */
  flags?: number;
}

/** GET_VRING_BASE's reply: where the back-end stopped the ring. */
export interface VringBase {
  /** The vring. */
  index: number;
  /** The next available index the device would have processed (split: last_avail_idx). */
  num: number;
  /** The packed-ring reading of `num`, when VIRTIO_F_RING_PACKED was set with SET_FEATURES. */
  packed: PackedVringBase | null;
}

/**
 * The shared inflight-tracking area (INFLIGHT_SHMFD): the back-end allocates it
 * (GET_INFLIGHT_FD) and records there which descriptors it is working on; the
 * front-end keeps the fd and hands it to a restarted back-end (SET_INFLIGHT_FD),
 * which resubmits what was in flight (vhost-user.rst, "Inflight I/O tracking").
 * The fd belongs to whoever holds this object: closeInflight() releases it.
 */
export interface InflightArea {
  /** The memfd holding the area. */
  fd: number;
  /** Size of the area in bytes. */
  mmapSize: bigint;
  /** Where the area starts in the fd. */
  mmapOffset: bigint;
  /** Queues the area tracks. */
  numQueues: number;
  /** Descriptors per queue it tracks. */
  queueSize: number;
}

/** Events a {@link VhostUserClient} emits. */
export interface VhostUserClientEvents {
  /** The connection is gone or unusable; every later request fails. Emitted once. */
  disconnect: (reason: VhostUserError) => void;
  /** CONFIG_CHANGE_MSG on the back-end channel: the device's config space changed. */
  'config-change': () => void;
  /** VRING_CALL on the back-end channel (IN_BAND_NOTIFICATIONS): the device used buffers on ring `index`. */
  'vring-call': (index: number) => void;
  /** VRING_ERR on the back-end channel: the device hit an error on ring `index`. */
  'vring-err': (index: number) => void;
  /** VRING_HOST_NOTIFIER_MSG: a notification area to map (or, with no fd, withdrawn). */
  'host-notifier': (notifier: HostNotifier) => void;
  /** A back-end request this library answered "not supported". */
  'backend-unsupported': (request: string) => void;
}

interface RequestOptions {
  payload?: Uint8Array;
  fds?: readonly number[];
  reply?: PayloadCodec<unknown>;
  /** Follow with a GET_FEATURES barrier when REPLY_ACK is not negotiated. */
  ordered?: boolean;
  emptyReplyIsFailure?: boolean;
  replyBodyIgnored?: boolean;
  /** Never set NEED_REPLY, even with REPLY_ACK negotiated. */
  noAck?: boolean;
}

const R = FrontendRequest;

/** A vhost-user front-end on one connection: one method per front-end request (vhost-user.rst, 'Front-end message types'), every reply validated, one request in flight. */
export class VhostUserClient extends EventEmitter<VhostUserClientEvents> {
  private readonly channel: FrontendChannel;
  private readonly trace: TraceHook | undefined;
  private backend: BackendChannel | null = null;
  private readonly hostNotifiers = new Map<number, number>();
  private readonly memSlots = new Set<GuestRegion>();
  private ackedFeatures: bigint | null = null;
  private ackedProtocolFeatures = 0n;
  private maxMemSlots: number | null = null;
  private closed = false;
  private brokenBy: VhostUserError | null = null;

  constructor(connection: Connection, options: VhostUserClientOptions = {}) {
    super();
    this.trace = options.trace;
    this.channel = new FrontendChannel(connection, { timeoutMs: options.timeoutMs ?? 5000, trace: options.trace });
    this.channel.on('broken', (e) => this.onBroken(e));
  }

  /** Client mode: connect to a back-end listening on `path`, retrying until `connect.timeoutMs`. */
  static async connect(path: string, options: VhostUserClientOptions & { connect?: ConnectOptions } = {}): Promise<VhostUserClient> {
    return new VhostUserClient(new Connection(await UnixStream.connect(path, options.connect)), options);
  }

  /** Server mode: wait for a back-end to connect to `listener` (DPDK `client=1`). */
  static async accept(listener: UnixListener, options: VhostUserClientOptions & { acceptTimeoutMs?: number; signal?: AbortSignal } = {}): Promise<VhostUserClient> {
    return new VhostUserClient(new Connection(await listener.accept(options.acceptTimeoutMs, options.signal)), options);
  }

  /** Features acknowledged with SET_FEATURES, or null before it. */
  get features(): bigint | null {
    return this.ackedFeatures;
  }

  /** Protocol features acknowledged with SET_PROTOCOL_FEATURES (0 before it). */
  get protocolFeatures(): bigint {
    return this.ackedProtocolFeatures;
  }

  /** Whether the client failed for good (see {@link VhostUserClient.error}); every request then rejects with VHOST_CLIENT_BROKEN. */
  get isBroken(): boolean {
    return this.brokenBy !== null;
  }

  /** Why the client broke, or null. */
  get error(): VhostUserError | null {
    return this.brokenBy;
  }

  /** Regions the back-end was given on this connection (SET_MEM_TABLE, ADD_MEM_REG, less REM_MEM_REG), in the order given. */
  get sharedRegions(): readonly GuestRegion[] {
    return [...this.memSlots];
  }

  /** Whether protocol feature `bitNumber` ({@link ProtocolFeature}) was acknowledged with SET_PROTOCOL_FEATURES. */
  hasProtocolFeature(bitNumber: number): boolean {
    return hasBit(this.ackedProtocolFeatures, bitNumber);
  }

  /**
   * The handshake QEMU performs when a device is created (vhost_user_backend_init,
   * then vhost_dev_init): features, protocol features, queue count, memory slots,
   * the back-end channel, then SET_OWNER. SET_FEATURES is left to device start.
   */
  async negotiate(options: NegotiateOptions = {}): Promise<Negotiated> {
    const features = await this.getFeatures();
    const result: Negotiated = { features, offeredProtocolFeatures: 0n, protocolFeatures: 0n, queueNum: null, maxMemSlots: null };
    if (hasBit(features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) {
      result.offeredProtocolFeatures = await this.getProtocolFeatures();
      let want = result.offeredProtocolFeatures & (options.protocolFeatures ?? SUPPORTED_PROTOCOL_FEATURES);
      // vhost-user.rst, "Inband notifications": needs both the back-end channel and REPLY_ACK.
      if (!hasBit(want, ProtocolFeature.BACKEND_REQ) || !hasBit(want, ProtocolFeature.REPLY_ACK)) {
        want &= ~bit(ProtocolFeature.INBAND_NOTIFICATIONS);
      }
      await this.setProtocolFeatures(want);
      result.protocolFeatures = want;
      if (this.hasProtocolFeature(ProtocolFeature.MQ)) result.queueNum = await this.getQueueNum();
      if (this.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS)) result.maxMemSlots = await this.getMaxMemSlots();
      if (this.hasProtocolFeature(ProtocolFeature.BACKEND_REQ) && options.backendChannel !== false) await this.setBackendReqFd();
    }
    await this.setOwner();
    return result;
  }

  // ------------------------------------------------------------ features

  /** GET_FEATURES: the virtio feature bits the back-end offers. */
  async getFeatures(): Promise<bigint> {
    return this.u64Reply(R.GET_FEATURES);
  }

  /** SET_FEATURES: the feature bits the driver accepts (a subset of the offer). */
  async setFeatures(features: bigint): Promise<void> {
    await this.request(R.SET_FEATURES, { payload: U64.encode(features), ordered: true });
    this.ackedFeatures = features;
  }

  /** GET_PROTOCOL_FEATURES (needs VHOST_USER_F_PROTOCOL_FEATURES in the offer). */
  async getProtocolFeatures(): Promise<bigint> {
    return this.u64Reply(R.GET_PROTOCOL_FEATURES);
  }

  /** SET_PROTOCOL_FEATURES: the protocol features this front-end will use. */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.request(R.SET_PROTOCOL_FEATURES, { payload: U64.encode(features) });
    this.ackedProtocolFeatures = features;
  }

  /** SET_OWNER: this connection owns the device (sent once, before the rings are set up). */
  async setOwner(): Promise<void> {
    await this.request(R.SET_OWNER);
  }

  /**
   * Deprecated by the spec in favour of RESET_DEVICE: "the front-end will no longer
   * own this connection (and will usually close it)". Sent without NEED_REPLY, as
   * QEMU does, since the reset wipes REPLY_ACK along with everything negotiated.
   * Back-ends may drop the connection afterwards (DPDK 22.11 does): reconnect to
   * start over.
   */
  async resetOwner(): Promise<void> {
    await this.request(R.RESET_OWNER, { noAck: true });
    this.ackedFeatures = null;
    this.ackedProtocolFeatures = 0n;
  }

  /**
   * RESET_DEVICE when negotiated, else RESET_OWNER (QEMU's fallback). With
   * RESET_DEVICE the back-end keeps the connection and the protocol features; the
   * device itself is reset, so SET_FEATURES and the rings must be set up again.
   * A GET_FEATURES round trip confirms the back-end survived the reset.
   */
  async resetDevice(): Promise<void> {
    if (!this.hasProtocolFeature(ProtocolFeature.RESET_DEVICE)) return this.resetOwner();
    await this.request(R.RESET_DEVICE, { noAck: true });
    this.ackedFeatures = null;
    await this.getFeatures();
  }

  /** GET_QUEUE_NUM (needs MQ): how many queues the back-end supports. */
  async getQueueNum(): Promise<number> {
    return Number(await this.u64Reply(R.GET_QUEUE_NUM));
  }

  /** GET_MAX_MEM_SLOTS (needs CONFIGURE_MEM_SLOTS): how many regions ADD_MEM_REG may add. */
  async getMaxMemSlots(): Promise<number> {
    const n = Number(await this.u64Reply(R.GET_MAX_MEM_SLOTS));
    this.maxMemSlots = n;
    return n;
  }

  /** SET_STATUS (needs STATUS): the device status byte ({@link DeviceStatus}). */
  async setStatus(status: number): Promise<void> {
    await this.request(R.SET_STATUS, { payload: U64.encode(BigInt(status)), ordered: true });
  }

  /** GET_STATUS (needs STATUS): the device status byte as the back-end holds it. */
  async getStatus(): Promise<number> {
    return Number(await this.u64Reply(R.GET_STATUS));
  }

  // ------------------------------------------------------------ memory

  /** Hands every region of `memory` (at most 8) to the back-end, one fd each. */
  async setMemTable(memory: GuestMemory | readonly GuestRegion[]): Promise<void> {
    const regions = 'regions' in memory ? memory.regions : memory;
    if (regions.length === 0 || regions.length > VHOST_MEMORY_BASELINE_NREGIONS) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `SET_MEM_TABLE takes 1..${VHOST_MEMORY_BASELINE_NREGIONS} regions, got ${regions.length}; use addMemReg beyond that`, { request: 'SET_MEM_TABLE' });
    }
    const payload = encodePayload(MemoryTable, { regions: regions.map(describeRegion) }, 'SET_MEM_TABLE');
    await this.request(R.SET_MEM_TABLE, { payload, fds: regions.map((r) => r.fd), ordered: true });
    this.memSlots.clear();
    for (const r of regions) this.memSlots.add(r);
  }

  /** CONFIGURE_MEM_SLOTS: one more region, up to the back-end's GET_MAX_MEM_SLOTS. */
  async addMemReg(region: GuestRegion): Promise<void> {
    this.requireProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS, 'ADD_MEM_REG');
    if (this.maxMemSlots !== null && this.memSlots.size >= this.maxMemSlots) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `the back-end has ${this.maxMemSlots} memory slots, all in use`, { request: 'ADD_MEM_REG' });
    }
    const payload = encodePayload(SingleMemoryRegion, describeRegion(region), 'ADD_MEM_REG');
    await this.request(R.ADD_MEM_REG, { payload, fds: [region.fd], ordered: true });
    this.memSlots.add(region);
  }

  /** REM_MEM_REG (CONFIGURE_MEM_SLOTS): the back-end unmaps `region`. */
  async remMemReg(region: GuestRegion): Promise<void> {
    const payload = encodePayload(SingleMemoryRegion, describeRegion(region), 'REM_MEM_REG');
    await this.request(R.REM_MEM_REG, { payload, ordered: true });
    this.memSlots.delete(region);
  }

  /** Shares the dirty log (LOG_SHMFD): `fd` holds `mmapSize` bytes from `mmapOffset`. */
  async setLogBase(fd: number, mmapSize: bigint, mmapOffset = 0n): Promise<void> {
    const payload = encodePayload(Log, { mmapSize, mmapOffset }, 'SET_LOG_BASE');
    if (this.hasProtocolFeature(ProtocolFeature.LOG_SHMFD)) {
      // The back-end replies once it has mapped the log; sizes differ (see requests.ts).
      await this.request(R.SET_LOG_BASE, { payload, fds: [fd], reply: U64, replyBodyIgnored: true });
    } else {
      await this.request(R.SET_LOG_BASE, { payload, fds: [fd], ordered: true });
    }
  }

  // ------------------------------------------------------------ vrings

  /** SET_VRING_NUM: ring `index` has `num` descriptors. */
  async setVringNum(index: number, num: number): Promise<void> {
    await this.request(R.SET_VRING_NUM, { payload: VringState.encode({ index, num }) });
  }

  /** SET_VRING_ADDR: where ring `addr.index` lives; also switches used-ring logging on or off on a running ring. */
  async setVringAddr(addr: VringAddrOptions): Promise<void> {
    const payload = encodePayload(
      VringAddr,
      {
        index: addr.index,
        flags: addr.flags ?? 0,
        descUserAddr: BigInt(addr.descUserAddr),
        usedUserAddr: BigInt(addr.usedUserAddr),
        availUserAddr: BigInt(addr.availUserAddr),
        logGuestAddr: BigInt(addr.logGuestAddr ?? 0),
      },
      'SET_VRING_ADDR',
    );
    await this.request(R.SET_VRING_ADDR, { payload, ordered: true });
  }

  /** For packed rings, build `num` with encodePackedVringBase(). */
  async setVringBase(index: number, num: number): Promise<void> {
    await this.request(R.SET_VRING_BASE, { payload: VringState.encode({ index, num }) });
  }

  /** Stops the ring and returns where the back-end got to (vhost-user.rst, "Starting and stopping rings"). */
  async getVringBase(index: number): Promise<VringBase> {
    const reply = await this.request(R.GET_VRING_BASE, { payload: VringState.encode({ index, num: 0 }), reply: VringState });
    const state = reply!.value as VringState;
    if (state.index !== index) {
      const error = new VhostUserError('VHOST_INVALID_PAYLOAD', `GET_VRING_BASE: asked for ring ${index}, the reply is for ring ${state.index}`, { request: 'GET_VRING_BASE' });
      this.channel.fail(error);
      throw error;
    }
    const packed = this.ackedFeatures !== null && hasBit(this.ackedFeatures, VirtioFeature.VIRTIO_F_RING_PACKED);
    return { index, num: state.num, packed: packed ? decodePackedVringBase(state.num) : null };
  }

  /** `fd` null sends NOFD: the back-end polls the ring instead. */
  async setVringKick(index: number, fd: number | null): Promise<void> {
    await this.vringFd(R.SET_VRING_KICK, index, fd);
  }

  /** `fd` null sends NOFD: the back-end does not signal completions (or uses VRING_CALL in-band). */
  async setVringCall(index: number, fd: number | null): Promise<void> {
    await this.vringFd(R.SET_VRING_CALL, index, fd);
  }

  /** SET_VRING_ERR: the eventfd the back-end signals on a ring error; `fd` null sends NOFD. */
  async setVringErr(index: number, fd: number | null): Promise<void> {
    await this.vringFd(R.SET_VRING_ERR, index, fd);
  }

  /** SET_VRING_ENABLE (with VHOST_USER_F_PROTOCOL_FEATURES): start or stop processing ring `index`. */
  async setVringEnable(index: number, enable: boolean): Promise<void> {
    await this.request(R.SET_VRING_ENABLE, { payload: VringState.encode({ index, num: enable ? 1 : 0 }), ordered: true });
  }

  /** In-band kick (INBAND_NOTIFICATIONS), for back-ends without a kick fd. */
  async vringKick(index: number): Promise<void> {
    await this.request(R.VRING_KICK, { payload: VringState.encode({ index, num: 0 }) });
  }

  private async vringFd(code: number, index: number, fd: number | null): Promise<void> {
    const payload = U64.encode(encodeVringFdIndex(index, fd === null));
    await this.request(code, { payload, fds: fd === null ? [] : [fd], ordered: true });
  }

  // ------------------------------------------------------------ device

  /** Reads `size` bytes of config space from `offset`. An empty reply is VHOST_BACKEND_FAILED. */
  async getConfig(offset: number, size: number, flags = 0): Promise<Uint8Array> {
    const payload = encodePayload(Config, { offset, size, flags, payload: new Uint8Array(size) }, 'GET_CONFIG');
    const reply = await this.request(R.GET_CONFIG, { payload, reply: Config, emptyReplyIsFailure: true });
    const config = reply!.value as Config;
    if (config.offset !== offset || config.size !== size) {
      const error = new VhostUserError('VHOST_BAD_REPLY_SIZE', `GET_CONFIG: asked for ${size} bytes at ${offset}, got ${config.size} at ${config.offset}`, { request: 'GET_CONFIG' });
      this.channel.fail(error);
      throw error;
    }
    return config.payload;
  }

  /** SET_CONFIG (needs CONFIG): writes `data` into config space at `offset`. */
  async setConfig(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    const payload = encodePayload(Config, { offset, size: data.length, flags, payload: data }, 'SET_CONFIG');
    await this.request(R.SET_CONFIG, { payload, ordered: true });
  }

  /** NET_SET_MTU (needs MTU): the MTU the driver will use. */
  async netSetMtu(mtu: number): Promise<void> {
    await this.request(R.NET_SET_MTU, { payload: U64.encode(BigInt(mtu)) });
  }

  /** Asks the back-end to broadcast a RARP for `mac` (after migration). */
  async sendRarp(mac: Uint8Array): Promise<void> {
    if (mac.length !== 6) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'a MAC address is 6 bytes', { request: 'SEND_RARP' });
    const payload = new Uint8Array(8);
    payload.set(mac, 0);
    await this.request(R.SEND_RARP, { payload });
  }

  /**
   * GET_INFLIGHT_FD: asks the back-end for an inflight area for `numQueues` rings
   * of `queueSize`. The returned fd is the caller's (keep it across reconnects,
   * close it with closeInflight). A back-end that allocates nothing (mmap size 0)
   * sends no fd: the result then has fd -1.
   */
  async getInflightFd(numQueues: number, queueSize: number): Promise<InflightArea> {
    const payload = encodePayload(Inflight, { mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize }, 'GET_INFLIGHT_FD');
    const reply = await this.request(R.GET_INFLIGHT_FD, { payload, reply: Inflight });
    const v = reply!.value as Inflight;
    const fd = reply!.fds[0] ?? -1;
    if ((fd < 0) !== (v.mmapSize === 0n)) {
      if (fd >= 0) closeFd(fd);
      const error = new VhostUserError('VHOST_INVALID_PAYLOAD', `GET_INFLIGHT_FD: mmap size ${v.mmapSize} ${fd < 0 ? 'without' : 'with'} an fd`, { request: 'GET_INFLIGHT_FD', rule: 'vhost-user.rst, "VHOST_USER_GET_INFLIGHT_FD": the reply carries the shared memory fd' });
      this.channel.fail(error);
      throw error;
    }
    return { fd, mmapSize: v.mmapSize, mmapOffset: v.mmapOffset, numQueues: v.numQueues || numQueues, queueSize: v.queueSize || queueSize };
  }

  /**
   * SET_DEVICE_STATE_FD (protocol feature DEVICE_STATE; vhost-user.rst,
   * "Migrating back-end state"): starts a transfer of the back-end's internal
   * state in `direction` ('save': the back-end writes it into `fd`; 'load': it
   * reads it from `fd`), in the only phase there is, STOPPED (every ring stopped).
   * `fd` is one end of a pipe; it is sent and stays the caller's. The back-end may
   * answer with an fd of its own to use instead: returned (the caller's to close),
   * else -1. A non-zero status is VHOST_BACKEND_FAILED.
   */
  async setDeviceStateFd(direction: 'save' | 'load', fd: number): Promise<number> {
    const name = 'SET_DEVICE_STATE_FD';
    const payload = encodePayload(DeviceStateTransfer, { direction: direction === 'save' ? TransferDirection.SAVE : TransferDirection.LOAD, phase: TransferPhase.STOPPED }, name);
    const reply = await this.request(R.SET_DEVICE_STATE_FD, { payload, fds: [fd], reply: U64 });
    const theirs = reply!.fds[0] ?? -1;
    let r;
    try {
      r = decodeDeviceStateFdReply(reply!.value as bigint, name);
    } catch (e) {
      if (theirs >= 0) closeFd(theirs);
      throw e;
    }
    // vhost-user.rst: "the back-end ... may set the invalid FD flag ... if it does not return an FD".
    if (r.status !== 0 || r.nofd !== (theirs < 0)) {
      if (theirs >= 0) closeFd(theirs);
      if (r.status !== 0) throw new VhostUserError('VHOST_BACKEND_FAILED', `${name}: the back-end refused the ${direction} transfer (status ${r.status})`, { request: name });
      throw new VhostUserError('VHOST_INVALID_PAYLOAD', `${name}: the invalid-FD flag ${r.nofd ? 'set with' : 'clear without'} an fd`, { request: name, rule: "vhost-user.rst, 'VHOST_USER_SET_DEVICE_STATE_FD'" });
    }
    return theirs;
  }

  /**
   * CHECK_DEVICE_STATE (DEVICE_STATE): after the pipe was closed, asks whether
   * the transfer succeeded; for a load, whether the state read was complete and
   * valid. A non-zero answer is VHOST_BACKEND_FAILED.
   */
  async checkDeviceState(): Promise<void> {
    const result = await this.u64Reply(R.CHECK_DEVICE_STATE);
    if (result !== 0n) throw new VhostUserError('VHOST_BACKEND_FAILED', `CHECK_DEVICE_STATE: the back-end reports the transfer failed (${result})`, { request: 'CHECK_DEVICE_STATE' });
  }

  /** SET_INFLIGHT_FD: hands an inflight area (from getInflightFd, maybe of an earlier connection) to the back-end. */
  async setInflightFd(area: InflightArea): Promise<void> {
    if (area.fd < 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'SET_INFLIGHT_FD needs the area\'s fd', { request: 'SET_INFLIGHT_FD' });
    const payload = encodePayload(Inflight, area, 'SET_INFLIGHT_FD');
    await this.request(R.SET_INFLIGHT_FD, { payload, fds: [area.fd], ordered: true });
  }

  /** Opens the back-end request channel: a socketpair whose far end goes to the back-end. */
  async setBackendReqFd(): Promise<void> {
    this.requireProtocolFeature(ProtocolFeature.BACKEND_REQ, 'SET_BACKEND_REQ_FD');
    const sv = new Int32Array(2);
    if (libc.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0, sv) !== 0) throw syscallError('socketpair');
    const [ours, theirs] = [sv[0]!, sv[1]!];
    const backend = new BackendChannel(new Connection(UnixStream.adopt(ours)), this.ackedProtocolFeatures, this.trace);
    try {
      await this.request(R.SET_BACKEND_REQ_FD, { fds: [theirs] });
    } catch (e) {
      backend.close();
      throw e;
    } finally {
      closeFd(theirs);
    }
    this.backend?.close();
    this.backend = backend;
    backend.on('config-change', () => this.emit('config-change'));
    backend.on('vring-call', (i) => this.emit('vring-call', i));
    backend.on('vring-err', (i) => this.emit('vring-err', i));
    backend.on('unsupported', (name) => this.emit('backend-unsupported', name));
    backend.on('host-notifier', (n) => {
      const previous = this.hostNotifiers.get(n.index);
      if (previous !== undefined) closeFd(previous);
      if (n.fd === null) this.hostNotifiers.delete(n.index);
      else this.hostNotifiers.set(n.index, n.fd);
      this.emit('host-notifier', n);
    });
    backend.on('broken', (e) => this.channel.fail(e));
  }

  // ------------------------------------------------------------ lifecycle

  /** Closes the connection, the back-end channel and every fd the client holds. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.fail(new VhostUserError('VHOST_CLIENT_CLOSED', 'client closed'));
    this.releaseResources();
  }

  private onBroken(error: VhostUserError): void {
    this.releaseResources();
    if (this.closed) return;
    this.brokenBy = error;
    this.emit('disconnect', error);
  }

  private releaseResources(): void {
    this.backend?.close();
    this.backend = null;
    for (const fd of this.hostNotifiers.values()) closeFd(fd);
    this.hostNotifiers.clear();
  }

  private requireProtocolFeature(bitNumber: number, request: string): void {
    if (!this.hasProtocolFeature(bitNumber)) {
      const name = Object.entries(ProtocolFeature).find(([, b]) => b === bitNumber)?.[0] ?? `bit ${bitNumber}`;
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', `${request} needs protocol feature ${name}, which was not negotiated`, { request });
    }
  }

  private async u64Reply(code: number): Promise<bigint> {
    const reply = await this.request(code, { reply: U64 });
    return reply!.value as bigint;
  }

  private async request(code: number, options: RequestOptions = {}): Promise<Reply | null> {
    const spec = requireFrontendRequestSpec(code);
    if (spec.requires !== undefined) this.requireProtocolFeature(spec.requires, spec.name);
    const replyAck = this.hasProtocolFeature(ProtocolFeature.REPLY_ACK);
    const reply = await this.channel.call(spec, {
      ...options,
      reply: options.reply ?? null,
      needReply: replyAck && !options.reply && !options.noAck,
    });
    if (options.ordered && !replyAck) await this.getFeatures();
    return reply;
  }
}

function describeRegion(r: GuestRegion): MemoryRegion {
  return {
    guestPhysAddr: BigInt(r.guestPhysAddr),
    memorySize: BigInt(r.size),
    userAddr: BigInt(r.userAddr),
    mmapOffset: BigInt(r.mmapOffset),
  };
}
