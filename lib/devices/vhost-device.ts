/**
 * The generic vhost device under every driver: what QEMU's hw/virtio/vhost.c
 * does between the protocol (client/, QEMU's vhost-user.c) and a device
 * (net/, blk/: only their own config, requests and queues).
 *
 * It owns, for one device: the connection (and the next one after a loss),
 * feature negotiation from the device's wishes, the guest memory and its table
 * (SET_MEM_TABLE, or ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS), each
 * ring's NUM/ADDR/BASE/CALL/KICK/ENABLE, SET_STATUS, stopping with
 * GET_VRING_BASE, reconnect with replay, dirty logging, hand-over to another
 * back-end, and the inflight area (opt-in).
 *
 * A device drives it in the order QEMU does (vhost_dev_init, then the device's
 * own set-up, then vhost_dev_start):
 *
 *   const dev = await VhostDevice.open(path, options);       // connect + handshake
 *   dev.selectFeatures({ wanted, required });                 // from GET_FEATURES
 *   dev.allocate({ count, size, dataBytes });                 // memory + rings + eventfds
 *   // the device lays its buffers out from dev.dataGpa and may pre-fill rings
 *   await dev.start({ configure, ready, resumeBase });        // SET_FEATURES .. DRIVER_OK
 *
 * and closes it on any failure. Between the steps the device may send requests
 * of its own on dev.client (blk: GET_CONFIG to size its queues). The data path
 * never goes through this class: a device keeps direct references to
 * dev.queues[i].vq / .kick / .call.
 */
import { EventEmitter } from 'eventemitter3';
import { SUPPORTED_PROTOCOL_FEATURES, VhostUserClient, type InflightArea, type Negotiated, type VhostUserClientOptions } from '../client/vhost-user-client.js';
import { VhostUserError } from '../errors.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { bit, DeviceStatus, hasBit, ProtocolFeature, VirtioFeature } from '../protocol/constants.js';
import { EventFd } from '../transport/eventfd.js';
import type { UnixListener } from '../transport/unix-listener.js';
import type { ConnectOptions } from '../transport/unix-stream.js';
import type { Virtqueue, VirtqueueOptions } from '../virtqueue/virtqueue.js';
import { DirtyLogging } from './dirty-logging.js';
import { InflightKeeper } from './inflight.js';
import { Backoff, type ReconnectOptions } from './reconnect.js';
import { alignUp, defaultCreateQueue, PAGE, programRings, resumedCount, ringBytes, type DeviceQueue, type RingKind } from './vring-setup.js';

export type { DeviceQueue, RingKind } from './vring-setup.js';
export type { ReconnectOptions } from './reconnect.js';

/** Options of a {@link VhostDevice}; devices pass theirs through. */
export interface VhostDeviceOptions extends VhostUserClientOptions {
  /** How long to keep retrying the connect (when `open` is given a socket path). */
  connect?: ConnectOptions;
  /**
   * Survive the back-end going away: connect again (client mode, `open(path)`) or
   * accept again (server mode, `accept(listener)`), replay the device state and
   * resume the rings. `true` takes the defaults.
   */
  reconnect?: boolean | ReconnectOptions;
  /** Ring layout (default 'split'); 'packed' needs VIRTIO_F_RING_PACKED from the back-end. */
  ring?: RingKind;
  /** Negotiate VIRTIO_RING_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /**
   * Negotiate VIRTIO_F_IN_ORDER when offered, with split rings (default false): the
   * back-end then promises to use buffers in the order they were made available, and
   * the rings rely on it (virtio 1.2 §2.7.9). Packed rings never negotiate it here.
   */
  inOrder?: boolean;
  /** Replaces how virtqueues are built (fault injection); by default split or packed per `ring`. */
  createQueue?: (kind: RingKind, options: VirtqueueOptions) => Virtqueue;
  /**
   * How guest memory is shared: 'table' (SET_MEM_TABLE), 'slots' (one ADD_MEM_REG
   * per region, needs CONFIGURE_MEM_SLOTS), or 'auto' (default: slots when
   * CONFIGURE_MEM_SLOTS is negotiated, as QEMU's vhost_user_set_mem_table does).
   */
  memoryTable?: 'auto' | 'table' | 'slots';
  /**
   * Keep an inflight area (INFLIGHT_SHMFD, asked for on top of the protocol
   * features): GET_INFLIGHT_FD once, SET_INFLIGHT_FD at every start. Default false
   * (blk uses it; net does not, as in QEMU).
   */
  inflight?: boolean;
  /** Protocol features to accept if offered (default SUPPORTED_PROTOCOL_FEATURES; INFLIGHT_SHMFD is added by `inflight`). */
  protocolFeatures?: bigint;
}

/** A feature bit the device cannot run without. */
export interface FeatureRequirement {
  /** The feature bit number (VirtioFeature, VirtioNetFeature, VirtioBlkFeature...). */
  bit: number;
  /** The message of the VHOST_FEATURE_NOT_NEGOTIATED error when the back-end does not offer it. */
  message: string;
}

/** What a device would like negotiated (see {@link VhostDevice.selectFeatures}). */
export interface FeatureWishes {
  /** Device feature bits to acknowledge when offered. Transport bits the layer handles itself. */
  wanted: bigint;
  /** Bits without which the device cannot run; their absence is a typed error. */
  required?: readonly FeatureRequirement[];
}

/** The rings a device needs and the room it needs for its own buffers (see {@link VhostDevice.allocate}). */
export interface QueuePlan {
  /** Number of rings, indexes 0..count-1. At most GET_QUEUE_NUM when the back-end reports one. */
  count: number;
  /** Entries per ring. */
  size: number;
  /** Descriptors per indirect table when VIRTIO_RING_F_INDIRECT_DESC is negotiated (default 0: none). */
  indirectMax?: number;
  /** Bytes of guest memory for the device's buffers, from {@link VhostDevice.dataGpa}. */
  dataBytes: number;
}

/** Device-specific steps the layer runs at every start (first start, reconnect, hand-over). */
export interface VhostDeviceHooks {
  /** After SET_FEATURES, before the inflight area, memory and rings: device requests such as NET_SET_MTU. */
  configure?(client: VhostUserClient): Promise<void>;
  /** After the rings run, before DRIVER_OK; `restart` is false on the first start only. net: GET_CONFIG. */
  ready?(client: VhostUserClient, restart: boolean): Promise<void>;
  /**
   * Where ring `vq` resumes after the back-end vanished without GET_VRING_BASE.
   * Default: `vq.resumeBase()`, just past the last completion (in-order devices).
   * Runs after the inflight area was offered to the new back-end, so
   * {@link VhostDevice.inflightShared} says whether it resubmits by itself.
   */
  resumeBase?(vq: Virtqueue): number;
}

/** Where one ring (re)started. */
export interface RingStart {
  /** The ring index. */
  index: number;
  /** The position sent with SET_VRING_BASE. */
  base: number;
  /** Buffers between `base` and what the driver had made available: the back-end processes them (again, after a crash). */
  resumed: number;
}

/** What a reconnect found and did. */
export interface DeviceReconnectReport {
  /** Connections tried, the successful one included. */
  attempts: number;
  /** From noticing the loss to the device running again. */
  downMs: number;
  /** The error that ended the previous connection. */
  cause: VhostUserError;
  /** Every ring, in index order. */
  rings: RingStart[];
  /**
   * Whether the new back-end was given the inflight area (option `inflight`): it
   * then resubmits what was in flight itself; otherwise the device decides
   * (resubmit through `resumeBase`, or fail the requests).
   */
  inflightShared: boolean;
}

/** What {@link VhostDevice.handOver} did. */
export interface DeviceHandOverReport {
  /** Per ring, in index order: the position the old back-end reported with GET_VRING_BASE and the new one was given. */
  bases: number[];
  /** From the first GET_VRING_BASE to the new back-end running (the `afterStart` step included). */
  ms: number;
}

/** Events of a {@link VhostDevice}. */
export interface VhostDeviceEvents {
  /** The back-end is gone for good (or reconnecting gave up). */
  disconnect: (error: VhostUserError) => void;
  /** With `reconnect`: the back-end went away; attempts to get it back start now. */
  reconnecting: (cause: VhostUserError) => void;
  /** With `reconnect`: a back-end is serving the rings again. */
  reconnect: (report: DeviceReconnectReport) => void;
}

/** Gets a fresh connection to a back-end, within `timeoutMs`, unless `signal` aborts first. */
type Connector = (timeoutMs: number, signal: AbortSignal) => Promise<VhostUserClient>;

/** The status once the features are set (virtio 1.2 §3.1.1, steps 1-5). */
const FEATURES_OK_STATUS = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
/** The status a started device reports (virtio 1.2 §3.1.1, steps 1-8). */
const DRIVER_OK_STATUS = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK;
const HUGE_PAGE = 2 * 1024 * 1024;
/** Transport bits the layer decides on, whatever a device wishes. */
const LAYER_BITS =
  bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) | bit(VirtioFeature.VIRTIO_F_RING_PACKED) | bit(VirtioFeature.VIRTIO_F_IN_ORDER) | bit(VirtioFeature.VHOST_F_LOG_ALL);

/**
 * One vhost-user device as a driver sees it: connection, features, guest memory,
 * rings, and their life across stops, reconnects and hand-overs. See the file
 * comment for the order a device calls it in.
 */
export class VhostDevice extends EventEmitter<VhostDeviceEvents> {
  /** The handshake of the first connection (GET_FEATURES, protocol features, queue count, slots). */
  readonly negotiated: Negotiated;
  /** Ring layout. */
  readonly ring: RingKind;
  private current: VhostUserClient;
  private readonly options: VhostDeviceOptions;
  private readonly connector: Connector | null;
  private readonly protocolMask: bigint;
  /** Whether close() closes the client: always for our connections; a given client once started. */
  private ownsClient: boolean;
  private acked: bigint | null = null;
  private mem: GuestMemory | null = null;
  private readonly list: DeviceQueue[] = [];
  private dataStart = 0;
  private hooks: VhostDeviceHooks = {};
  /** Bases for the next start(): the initial ones, or those stop() got. */
  private pendingBases: number[] | null = null;
  private readonly keeper = new InflightKeeper();
  private shared = false;
  private readonly logging = new DirtyLogging();
  private started = false;
  private running = false;
  private closed = false;
  private reconnectCount = 0;
  /** The reconnect attempts' pacing; close() cancels it. */
  private readonly backoff = new Backoff();
  /** Aborts a connect or accept under way when close() is called. */
  private readonly closing = new AbortController();

  private constructor(client: VhostUserClient, negotiated: Negotiated, options: VhostDeviceOptions, connector: Connector | null, protocolMask: bigint, ownsClient: boolean) {
    super();
    this.current = client;
    this.negotiated = negotiated;
    this.options = options;
    this.connector = connector;
    this.protocolMask = protocolMask;
    this.ownsClient = ownsClient;
    this.ring = options.ring ?? 'split';
    this.watch(client);
  }

  /**
   * Connects to a back-end listening on `target` (or takes a connected client) and
   * performs the handshake (QEMU's vhost_dev_init): GET_FEATURES, protocol
   * features, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, the back-end channel, SET_OWNER.
   * On failure a connection opened here is closed; a given client is left open.
   */
  static async open(target: string | VhostUserClient, options: VhostDeviceOptions = {}): Promise<VhostDevice> {
    if (typeof target !== 'string') {
      if (options.reconnect) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'reconnect needs a socket path or a listener to get a new connection from, not a client');
      return VhostDevice.init(target, options, null, false);
    }
    const connector: Connector = (timeoutMs, signal) => VhostUserClient.connect(target, { ...options, connect: { ...options.connect, timeoutMs, signal } });
    return VhostDevice.init(await VhostUserClient.connect(target, options), options, connector, true);
  }

  /** Server mode: waits for a back-end to connect to `listener` (DPDK `client=1`); with `reconnect`, for the next one after it goes away. */
  static async accept(listener: UnixListener, options: VhostDeviceOptions & { acceptTimeoutMs?: number } = {}): Promise<VhostDevice> {
    const connector: Connector = (timeoutMs, signal) => VhostUserClient.accept(listener, { ...options, acceptTimeoutMs: timeoutMs, signal });
    return VhostDevice.init(await VhostUserClient.accept(listener, options), options, connector, true);
  }

  private static async init(client: VhostUserClient, options: VhostDeviceOptions, connector: Connector | null, ownsClient: boolean): Promise<VhostDevice> {
    const mask = (options.protocolFeatures ?? SUPPORTED_PROTOCOL_FEATURES) | (options.inflight ? bit(ProtocolFeature.INFLIGHT_SHMFD) : 0n);
    try {
      const negotiated = await client.negotiate({ protocolFeatures: mask });
      return new VhostDevice(client, negotiated, options, connector, mask, ownsClient);
    } catch (e) {
      if (ownsClient) client.close();
      throw e;
    }
  }

  /** The connection in use (a new one after each reconnect or hand-over). */
  get client(): VhostUserClient {
    return this.current;
  }

  /** Features the first back-end offered (GET_FEATURES). */
  get offered(): bigint {
    return this.negotiated.features;
  }

  /** Features acknowledged with SET_FEATURES (selectFeatures decides them). VHOST_F_LOG_ALL is never part of it. */
  get features(): bigint {
    if (this.acked === null) throw new VhostUserError('VHOST_INVALID_STATE', 'features are not selected yet (selectFeatures)');
    return this.acked;
  }

  /** Guest memory, once allocate() ran. */
  get memory(): GuestMemory {
    if (this.mem === null) throw new VhostUserError('VHOST_INVALID_STATE', 'memory is not allocated yet (allocate)');
    return this.mem;
  }

  /** The rings, index i at position i, once allocate() ran. */
  get queues(): readonly DeviceQueue[] {
    return this.list;
  }

  /** Where the device's own buffers start in guest memory (QueuePlan.dataBytes from here). */
  get dataGpa(): number {
    return this.dataStart;
  }

  /** Whether the rings are meant to run: from start() to stop() or close() (reconnects included). */
  get isRunning(): boolean {
    return this.running;
  }

  /** Reconnects completed. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /** The inflight area kept for the device (option `inflight`), or null when no back-end allocated one. */
  get inflight(): InflightArea | null {
    return this.keeper.area;
  }

  /** Whether the current back-end was given the inflight area (SET_INFLIGHT_FD) at its start. */
  get inflightShared(): boolean {
    return this.shared;
  }

  /** GET_INFLIGHT_FD requests sent so far (one per device once an area is held). */
  get inflightRequests(): number {
    return this.keeper.gets;
  }

  // ------------------------------------------------------------ set-up

  /**
   * Decides the features from what the back-end offered and what the device
   * wishes, and returns them (sent with SET_FEATURES at start). The layer adds
   * the transport bits: VIRTIO_F_VERSION_1 (required), VHOST_USER_F_PROTOCOL_FEATURES,
   * VIRTIO_RING_F_EVENT_IDX (option `eventIdx`), VIRTIO_F_RING_PACKED (required
   * with `ring: 'packed'`, never otherwise), VIRTIO_F_IN_ORDER (option `inOrder`,
   * split rings only). A requirement not offered is
   * VHOST_FEATURE_NOT_NEGOTIATED with the requirement's message.
   */
  selectFeatures(wishes: FeatureWishes): bigint {
    // The rings are built for the features (event index, indirect tables): they cannot change after allocate().
    if (this.mem !== null) throw new VhostUserError('VHOST_INVALID_STATE', 'features are fixed once the rings are allocated');
    const offered = this.offered;
    const required: FeatureRequirement[] = [{ bit: VirtioFeature.VIRTIO_F_VERSION_1, message: 'the back-end does not offer VIRTIO_F_VERSION_1; legacy devices are not supported' }];
    if (this.ring === 'packed') required.push({ bit: VirtioFeature.VIRTIO_F_RING_PACKED, message: 'packed rings asked for, but the back-end does not offer VIRTIO_F_RING_PACKED' });
    required.push(...(wishes.required ?? []));
    let wanted = (wishes.wanted & ~LAYER_BITS) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
    for (const r of required) {
      if (!hasBit(offered, r.bit)) throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', r.message);
      wanted |= bit(r.bit);
    }
    if (this.options.eventIdx ?? true) wanted |= bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    if (this.options.inOrder && this.ring === 'split') wanted |= bit(VirtioFeature.VIRTIO_F_IN_ORDER);
    this.acked = offered & wanted;
    return this.acked;
  }

  /**
   * Creates the guest memory (rings first, each on its own pages, then
   * `dataBytes` for the device from dataGpa, rounded up to 2 MiB), one virtqueue
   * per ring (split or packed per `ring`, EVENT_IDX and indirect tables as
   * negotiated) and its kick and call eventfds. Nothing is sent yet.
   */
  allocate(plan: QueuePlan): void {
    const features = this.features;
    if (this.mem !== null) throw new VhostUserError('VHOST_INVALID_STATE', 'memory and rings are already allocated');
    const { count, size } = plan;
    if (!Number.isInteger(count) || count < 1) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `a device needs 1 or more rings, not ${count}`);
    const max = this.negotiated.queueNum;
    if (max !== null && count > max) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${count} rings asked for; the back-end serves at most ${max}`);
    const indirectMax = hasBit(features, VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) ? (plan.indirectMax ?? 0) : 0;
    const perRing = ringBytes(this.ring, size, indirectMax);
    this.dataStart = perRing * count;
    this.mem = GuestMemory.create({ size: alignUp(this.dataStart + alignUp(plan.dataBytes, PAGE), HUGE_PAGE) });
    const eventIdx = hasBit(features, VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    const inOrder = hasBit(features, VirtioFeature.VIRTIO_F_IN_ORDER);
    const create = this.options.createQueue ?? defaultCreateQueue;
    for (let i = 0; i < count; i++) {
      const vq = create(this.ring, { memory: this.mem, index: i, size, ringGpa: i * perRing, eventIdx, indirectMax, inOrder });
      const kick = new EventFd();
      let call: EventFd;
      try {
        call = new EventFd();
      } catch (e) {
        kick.close();
        throw e;
      }
      this.list.push({ vq, kick, call });
    }
    // Where the device starts: before any buffer the device adds before start(), which it must see.
    this.pendingBases = this.list.map((q) => q.vq.vringBase);
  }

  /**
   * Starts the device on the current back-end (QEMU's vhost_dev_start): SET_FEATURES,
   * the device's `configure` step, the inflight area (option `inflight`), the
   * memory table, every ring (NUM, ADDR, BASE, CALL, KICK) from where it stands,
   * the dirty log if logging, SET_VRING_ENABLE, a kick on every ring (buffers
   * already there are seen), the device's `ready` step, then DRIVER_OK when the
   * back-end speaks STATUS. `hooks` are kept and run again at every restart;
   * a later start() (after stop()) may omit them. After start() succeeds, the
   * device owns its client.
   */
  async start(hooks?: VhostDeviceHooks): Promise<void> {
    this.checkOpen();
    if (this.running) throw new VhostUserError('VHOST_INVALID_STATE', 'the device is already running');
    if (this.mem === null) throw new VhostUserError('VHOST_INVALID_STATE', 'allocate() the rings before start()');
    if (hooks) this.hooks = hooks;
    const client = this.current;
    await this.startOn(client, this.pendingBases, { handshake: false, restart: this.started });
    this.pendingBases = null;
    this.started = true;
    this.running = true;
    this.ownsClient = true;
    // Lost while starting: the disconnect event went by before the device was running.
    if (client.isBroken) setImmediate(() => this.lost(client, client.error!));
  }

  /**
   * Stops the device (QEMU's vhost_dev_stop): GET_VRING_BASE on every ring (the
   * back-end stops it and reports where it got to; it must complete what it took
   * first), then SET_STATUS 0 when STATUS is negotiated. Returns the bases by ring
   * index; start() resumes from them. Dirty logging, if on, stays on.
   */
  async stop(): Promise<number[]> {
    this.checkOpen();
    if (!this.running) throw new VhostUserError('VHOST_INVALID_STATE', 'the device is not running');
    this.running = false;
    const client = this.current;
    const bases = await this.stopRings(client);
    if (client.hasProtocolFeature(ProtocolFeature.STATUS)) await client.setStatus(0);
    this.pendingBases = bases;
    return bases;
  }

  /** GET_VRING_BASE on every ring, in index order. */
  private async stopRings(client: VhostUserClient): Promise<number[]> {
    const bases: number[] = [];
    for (const q of this.list) bases.push((await client.getVringBase(q.vq.index)).num);
    return bases;
  }

  /**
   * The whole start sequence on `client`, rings from `bases` or, without them,
   * from the resume hook. With `handshake` (a new connection) the handshake is
   * done first and the back-end must still offer every feature the device runs
   * with; `restart` is what the device's `ready` step is told.
   */
  private async startOn(client: VhostUserClient, bases: readonly number[] | null, how: { handshake: boolean; restart: boolean }): Promise<RingStart[]> {
    const features = this.features;
    if (how.handshake) {
      const n = await client.negotiate({ protocolFeatures: this.protocolMask });
      const missing = features & ~n.features;
      if (missing !== 0n) {
        throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', `the back-end no longer offers features 0x${missing.toString(16)} the device runs with`, { request: 'GET_FEATURES' });
      }
      if (n.queueNum !== null && n.queueNum < this.list.length) {
        throw new VhostUserError('VHOST_INVALID_STATE', `the back-end now serves ${n.queueNum} rings; the device runs ${this.list.length}`, { request: 'GET_QUEUE_NUM' });
      }
    }
    const log = this.logging.active;
    await client.setFeatures(log ? features | bit(VirtioFeature.VHOST_F_LOG_ALL) : features);
    if (client.hasProtocolFeature(ProtocolFeature.STATUS)) {
      // virtio 1.2 §3.1.1 steps 5-6: set FEATURES_OK, then re-read the status: a device that
      // cannot run with these features clears the bit (DPDK does). QEMU 7.2 sets it here too
      // (vhost_user_set_features).
      await client.setStatus(FEATURES_OK_STATUS);
      const status = await client.getStatus();
      if (!(status & DeviceStatus.FEATURES_OK)) {
        throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', `the back-end cleared FEATURES_OK (status 0x${status.toString(16)}): it refuses features 0x${features.toString(16)}`, {
          request: 'SET_STATUS',
          rule: 'virtio 1.2 §3.1.1: "Re-read device status to ensure the FEATURES_OK bit is still set: otherwise, the device does not support our subset of features"',
        });
      }
    }
    await this.hooks.configure?.(client);
    // After SET_FEATURES: the area's layout depends on VIRTIO_F_RING_PACKED (vhost-user.rst, "Inflight I/O tracking").
    this.shared = this.options.inflight ? await this.keeper.share(client, this.list.length, this.list[0]!.vq.size) : false;
    // After the area: the resume hook can tell (inflightShared) whether this back-end resubmits by itself.
    const rings: RingStart[] = this.list.map(({ vq }, i) => {
      const base = bases?.[i] ?? (this.hooks.resumeBase ? this.hooks.resumeBase(vq) : vq.resumeBase());
      return { index: vq.index, base, resumed: resumedCount(vq, base) };
    });
    await this.shareMemory(client);
    await programRings(client, this.list, this.memory, rings.map((r) => r.base), log !== null);
    // As vhost_dev_start: the log before the rings are enabled, so no write goes unlogged.
    if (log) await client.setLogBase(log.fd, BigInt(log.size));
    if (hasBit(features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) {
      for (const q of this.list) await client.setVringEnable(q.vq.index, true);
    }
    for (const q of this.list) q.kick.signal();
    await this.hooks.ready?.(client, how.restart);
    if (client.hasProtocolFeature(ProtocolFeature.STATUS)) await client.setStatus(DRIVER_OK_STATUS);
    return rings;
  }

  /** SET_MEM_TABLE, or ADD_MEM_REG for each region the back-end does not have yet. */
  private async shareMemory(client: VhostUserClient): Promise<void> {
    const mode = this.options.memoryTable ?? 'auto';
    const slots = mode === 'slots' || (mode === 'auto' && client.hasProtocolFeature(ProtocolFeature.CONFIGURE_MEM_SLOTS));
    if (!slots) return client.setMemTable(this.memory);
    for (const r of this.memory.regions) if (!client.sharedRegions.includes(r)) await client.addMemReg(r);
  }

  // ------------------------------------------------------------ reconnect

  private watch(client: VhostUserClient): void {
    client.once('disconnect', (e) => this.lost(client, e));
  }

  private lost(client: VhostUserClient, e: VhostUserError): void {
    // Before the first start the caller sees the failure as start()'s rejection.
    if (this.closed || client !== this.current || !this.started) return;
    if (this.running && this.options.reconnect && this.connector) void this.reconnect(e);
    else this.emit('disconnect', e);
  }

  /**
   * Gets a back-end again and replays what the device had (QEMU's vhost-user
   * reconnect does the same: vhost_dev_start on a fresh vhost_dev): the
   * handshake, features, the device's steps, the inflight area, memory, then
   * every ring with a base from the resume hook (by default just past the last
   * completion the old back-end wrote). The data path keeps working meanwhile on
   * the same rings: a driver fills them until full and reaps what was completed.
   */
  private async reconnect(cause: VhostUserError): Promise<void> {
    const o = this.options.reconnect === true ? {} : (this.options.reconnect as ReconnectOptions);
    const t0 = Date.now();
    this.emit('reconnecting', cause);
    let rings: RingStart[] = [];
    const outcome = await this.backoff.run(
      o,
      async (timeLeftMs) => {
        const client = await this.connector!(timeLeftMs, this.closing.signal);
        try {
          if (this.closed) return;
          rings = await this.startOn(client, null, { handshake: true, restart: true });
          if (this.closed) return;
          this.current.close();
          this.current = client;
          this.watch(client);
          if (client.isBroken) throw client.error!;
        } catch (e) {
          client.close();
          throw e;
        } finally {
          if (this.closed) client.close();
        }
      },
      // A ring the old back-end corrupted cannot be resumed by any back-end.
      (e) => e.code.startsWith('VHOST_RING_'),
      cause,
    );
    if (this.closed || 'cancelled' in outcome) return;
    if (outcome.ok) {
      this.reconnectCount++;
      this.emit('reconnect', { attempts: outcome.attempts, downMs: Date.now() - t0, cause, rings, inflightShared: this.shared });
      return;
    }
    const last = outcome.error;
    const code = last.code.startsWith('VHOST_RING_') || last.code === 'VHOST_CONNECT_TIMEOUT' ? last.code : 'VHOST_DISCONNECTED';
    this.emit('disconnect', new VhostUserError(code, `reconnecting gave up after ${Date.now() - t0} ms: ${last.toLine()}`, { request: last.request, cause: last }));
  }

  // ------------------------------------------------------------ hand-over (migration)

  /**
   * Hands the rings over to another back-end: the vhost-user part of a live
   * migration, with both back-ends on this host. The current back-end stops each
   * ring and reports where it got to (GET_VRING_BASE, vhost-user.rst "Starting and
   * stopping rings"); the new one (a socket path, or a client already connected)
   * gets the same device: handshake, features, the device's steps, the inflight
   * area, the same memfd memory, and every ring from exactly that base, then
   * DRIVER_OK; then `afterStart` runs on it (net: SEND_RARP). Unlike a crash,
   * nothing is processed twice or lost. Dirty logging, if on, is stopped first;
   * the old connection is closed once the new one runs. On failure a connection
   * opened here is closed and the error thrown.
   */
  async handOver(target: string | VhostUserClient, afterStart?: (client: VhostUserClient) => Promise<void>): Promise<DeviceHandOverReport> {
    this.checkOpen();
    if (!this.running) throw new VhostUserError('VHOST_INVALID_STATE', 'only a running device can be handed over');
    const t0 = Date.now();
    const old = this.current;
    if (this.logging.active) await this.stopDirtyLog();
    const bases = await this.stopRings(old);
    const client = typeof target === 'string' ? await VhostUserClient.connect(target, this.options) : target;
    try {
      await this.startOn(client, bases, { handshake: true, restart: true });
      await afterStart?.(client);
      this.current = client;
      this.watch(client);
      old.close();
      return { bases, ms: Date.now() - t0 };
    } catch (e) {
      if (typeof target === 'string') client.close();
      throw e;
    }
  }

  // ------------------------------------------------------------ dirty logging (migration)

  /** Whether the back-end can log the pages it writes into shared memory: VHOST_F_LOG_ALL offered, LOG_SHMFD negotiated. */
  get canLogDirty(): boolean {
    return hasBit(this.offered, VirtioFeature.VHOST_F_LOG_ALL) && this.current.hasProtocolFeature(ProtocolFeature.LOG_SHMFD);
  }

  /** Whether dirty logging is on (startDirtyLog). */
  get isLoggingDirty(): boolean {
    return this.logging.active !== null;
  }

  /**
   * Starts dirty-page logging the way QEMU does when a migration begins
   * (vhost_dev_set_log): shares a log covering all of guest memory, one bit per
   * 4 KiB page, as a memfd (SET_LOG_BASE, LOG_SHMFD), sets VHOST_F_LOG_ALL with
   * SET_FEATURES, and switches every ring to logging where the device writes
   * completions (SET_VRING_ADDR with VHOST_VRING_F_LOG). The rings keep running;
   * vhost-user.rst, "Migration", allows both changes on running rings. Read the
   * log with syncDirtyLog(). A reconnect replays the logging too.
   */
  async startDirtyLog(): Promise<void> {
    this.checkOpen();
    if (this.logging.active) return;
    if (!this.canLogDirty) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'dirty logging needs VHOST_F_LOG_ALL offered and LOG_SHMFD negotiated', { request: 'SET_LOG_BASE' });
    }
    await this.logging.start(this.current, this);
  }

  /**
   * The guest pages (GPA / 4096) the back-end wrote since the last call, in
   * ascending order; their bits are cleared atomically, so a write racing with
   * the read is kept for the next call. Allocates: not for the data path.
   */
  syncDirtyLog(): number[] {
    return this.logging.sync();
  }

  /** Stops logging (rings unlogged, VHOST_F_LOG_ALL cleared), releases the log, and returns the pages dirtied since the last sync. */
  stopDirtyLog(): Promise<number[]> {
    return this.logging.stop(this.current, this);
  }

  // ------------------------------------------------------------ lifecycle

  /** Disconnects and releases memory, eventfds, the dirty log, the inflight area and the client (if owned). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.running = false;
    this.backoff.cancel();
    this.closing.abort();
    if (this.ownsClient) this.current.close();
    this.logging.close();
    this.keeper.close();
    for (const q of this.list) {
      q.kick.close();
      q.call.close();
    }
    this.mem?.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new VhostUserError('VHOST_CLIENT_CLOSED', 'the device is closed');
  }
}
