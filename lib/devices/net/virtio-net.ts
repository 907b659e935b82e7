/**
 * A virtio-net driver that runs in this process instead of a guest kernel: it
 * negotiates with a vhost-user net back-end, lays rings and packet buffers out
 * in memfd guest memory, and pushes real frames through them (virtio 1.2 §5.1).
 *
 * Queue pair i is RX ring 2i and TX ring 2i+1 (§5.1.2). Every buffer is one
 * descriptor: TX slots hold a zeroed 12-byte virtio_net_hdr followed by the frame,
 * RX slots are written whole by the device. The token of a buffer is its slot
 * number, so completions map back to slots with no lookup.
 *
 * The packet path allocates nothing: frames are copied into slots with
 * TypedArray.set, completions are reaped into preallocated arrays, received
 * frames are handed out as offsets into one reusable view, and counters live in a
 * Float64Array (large counts in object fields would be boxed).
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserClient, type VhostUserClientOptions, type VringAddrOptions } from '../../client/vhost-user-client.js';
import { VhostUserError } from '../../errors.js';
import { GuestMemory } from '../../memory/guest-memory.js';
import { bit, DeviceStatus, hasBit, ProtocolFeature, VHOST_VRING_F_LOG, VirtioFeature, VirtioNetFeature } from '../../protocol/constants.js';
import { DirtyLog } from '../../memory/dirty-log.js';
import { EventFd } from '../../transport/eventfd.js';
import type { UnixListener } from '../../transport/unix-listener.js';
import type { ConnectOptions } from '../../transport/unix-stream.js';
import { PackedVirtqueue } from '../../virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../virtqueue/split-queue.js';
import type { Virtqueue, VirtqueueOptions } from '../../virtqueue/virtqueue.js';
import { parseMac } from '../../net/frame-builder.js';
import { decodeNetConfig, NET_CONFIG_SIZE, type NetConfig } from './net-config.js';
import { HDR_NUM_BUFFERS, VIRTIO_NET_HDR_SIZE } from './virtio-net-hdr.js';

export type RingKind = 'split' | 'packed';

export interface VirtioNetOptions extends VhostUserClientOptions {
  /** Queue pairs to use (default 1); more need VIRTIO_NET_F_MQ and are capped by GET_QUEUE_NUM. */
  queuePairs?: number;
  /** Entries per ring (default 256). */
  queueSize?: number;
  /** Ring layout (default 'split'); 'packed' needs VIRTIO_F_RING_PACKED from the back-end. */
  ring?: RingKind;
  /** Negotiate VIRTIO_RING_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_NET_F_MRG_RXBUF when offered (default true). */
  mrgRxbuf?: boolean;
  /** Negotiate VIRTIO_NET_F_CSUM / GUEST_CSUM when offered (default false: frames carry full checksums). */
  csum?: boolean;
  /** Bytes per RX buffer, header included (default 2048). */
  rxBufferSize?: number;
  /** Bytes per TX slot, header included (default 2048): the largest frame is this minus 12. */
  txSlotSize?: number;
  /** Send NET_SET_MTU when the back-end offers MTU. */
  mtu?: number;
  /** Replaces how virtqueues are built (fault injection); by default split or packed per `ring`. */
  createQueue?: (kind: RingKind, options: VirtqueueOptions) => Virtqueue;
  /** How long to keep retrying the connect (when `open` is given a socket path). */
  connect?: ConnectOptions;
  /**
   * Survive the back-end going away: connect again (client mode, `open(path)`) or
   * accept again (server mode, `accept(listener)`), replay the device state and
   * resume the rings. `true` takes the defaults.
   */
  reconnect?: boolean | ReconnectOptions;
}

export interface ReconnectOptions {
  /** Give up (and emit `disconnect`) when no back-end is back within this time (default 30 000 ms). */
  timeoutMs?: number;
  /** First pause between attempts (default 50 ms), doubled after each failure. */
  initialDelayMs?: number;
  /** Longest pause between attempts (default 1000 ms). */
  maxDelayMs?: number;
}

/** What handOver() did. */
export interface HandOverReport {
  /** Ring positions the old back-end reported (GET_VRING_BASE) and the new one was given, per queue pair. */
  queues: { rxBase: number; txBase: number }[];
  /** Whether SEND_RARP went to the new back-end (RARP negotiated and a MAC known). */
  rarp: boolean;
  /** From the first GET_VRING_BASE to the new back-end running. */
  ms: number;
}

/** What a reconnect found and did, per queue pair. */
export interface ReconnectReport {
  /** Connections tried, the successful one included. */
  attempts: number;
  /** From noticing the loss to the device running again. */
  downMs: number;
  /** The error that ended the previous connection. */
  cause: VhostUserError;
  queues: {
    /** TX buffers the new back-end processes again (made available, never completed by the old one). */
    txResumed: number;
    /** RX buffers handed to the new back-end again. */
    rxResumed: number;
    /** Ring positions sent with SET_VRING_BASE. */
    txBase: number;
    rxBase: number;
  }[];
}

/** A burst of received frames: `count` frames at buffer[offsets[i] .. + lengths[i]). */
export class RxBurst {
  buffer: Uint8Array = new Uint8Array(0);
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  count = 0;
  constructor(readonly capacity = 64) {
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }
  /** A copy of frame i (allocates: for tests and tools, not the packet path). */
  frame(i: number): Uint8Array {
    const o = this.offsets[i]!;
    return this.buffer.slice(o, o + this.lengths[i]!);
  }
}

/** Counter slots in each queue pair's Float64Array. */
export const NetCounter = {
  txPackets: 0,
  txBytes: 1,
  txDrops: 2,
  rxPackets: 3,
  rxBytes: 4,
  rxDrops: 5,
  kicks: 6,
  interrupts: 7,
  rxErrors: 8,
} as const;
const COUNTERS = 9;

export type NetCounters = { -readonly [K in keyof typeof NetCounter]: number };

interface QueuePair {
  rx: Virtqueue;
  tx: Virtqueue;
  rxKick: EventFd;
  txKick: EventFd;
  rxCall: EventFd;
  txCall: EventFd;
  /** TX pool: slot s at txPool + s * txSlotSize. */
  txPoolGpa: number;
  txBytes: Uint8Array;
  /** Per slot: the frame area after its virtio_net_hdr (maxFrameSize bytes), for sendInPlace(). */
  txFrames: Uint8Array[];
  txFree: Uint16Array;
  txFreeTop: number;
  rxPoolGpa: number;
  /** RX pool view; merged frames are assembled in its tail (mergeOffset). */
  rxBytes: Uint8Array;
  mergeOffset: number;
  /** Slots handed out in the last burst, re-posted on the next receiveBurst(). */
  rxLent: Uint16Array;
  rxLentCount: number;
  counters: Float64Array;
}

export interface VirtioNetEvents {
  /** A burst arrived (interrupt mode, see startInterrupts()). The burst is valid during the call only. */
  frames: (queue: number, burst: RxBurst) => void;
  /** The back-end is gone for good (or reconnecting gave up). */
  disconnect: (error: VhostUserError) => void;
  /** With `reconnect`: the back-end went away; attempts to get it back start now. */
  reconnecting: (cause: VhostUserError) => void;
  /** With `reconnect`: a back-end is serving the rings again. */
  reconnect: (report: ReconnectReport) => void;
}

/** Gets a fresh connection to a back-end, within `timeoutMs`, unless `signal` aborts first. */
type Connector = (timeoutMs: number, signal: AbortSignal) => Promise<VhostUserClient>;

const PAGE = 4096;
const MERGE_AREA = 65536;

export class VirtioNet extends EventEmitter<VirtioNetEvents> {
  private current: VhostUserClient;
  readonly memory: GuestMemory;
  /** Features acknowledged with SET_FEATURES. */
  readonly features: bigint;
  readonly queuePairs: number;
  readonly queueSize: number;
  readonly ring: RingKind;
  /** Config space when the back-end offers CONFIG, else null. */
  readonly config: NetConfig | null;
  private readonly pairs: QueuePair[];
  private readonly rxBufferSize: number;
  private readonly txSlotSize: number;
  private readonly mrgRxbuf: boolean;
  private readonly reapTokens: Uint32Array;
  private readonly reapLengths: Uint32Array;
  private readonly options: VirtioNetOptions;
  private readonly connector: Connector | null;
  /** Features the back-end offered (GET_FEATURES). */
  private offered: bigint;
  /** The dirty log shared with the back-end while logging (startDirtyLog). */
  private dirtyLog: DirtyLog | null = null;
  private closed = false;
  /** Ends the pause between reconnect attempts (close() calls it). */
  private stopWaiting: (() => void) | null = null;
  /** Aborts a connect or accept under way when close() is called. */
  private readonly closing = new AbortController();
  /** Reconnects completed. */
  reconnects = 0;

  private constructor(init: {
    client: VhostUserClient;
    memory: GuestMemory;
    features: bigint;
    pairs: QueuePair[];
    queueSize: number;
    ring: RingKind;
    rxBufferSize: number;
    txSlotSize: number;
    config: NetConfig | null;
    options: VirtioNetOptions;
    connector: Connector | null;
    offered: bigint;
  }) {
    super();
    this.offered = init.offered;
    this.current = init.client;
    this.options = init.options;
    this.connector = init.connector;
    this.memory = init.memory;
    this.features = init.features;
    this.pairs = init.pairs;
    this.queuePairs = init.pairs.length;
    this.queueSize = init.queueSize;
    this.ring = init.ring;
    this.rxBufferSize = init.rxBufferSize;
    this.txSlotSize = init.txSlotSize;
    this.config = init.config;
    this.mrgRxbuf = hasBit(init.features, VirtioNetFeature.VIRTIO_NET_F_MRG_RXBUF);
    this.reapTokens = new Uint32Array(init.queueSize);
    this.reapLengths = new Uint32Array(init.queueSize);
    this.watch(this.current);
  }

  /** The connection in use (a new one after each reconnect). */
  get client(): VhostUserClient {
    return this.current;
  }

  /**
   * Connects (or takes a connected client), negotiates, shares memory, sets up
   * and enables every queue pair, fills the RX rings, and sets DRIVER_OK when the
   * back-end speaks STATUS. On failure everything opened here is closed again.
   */
  static async open(target: string | VhostUserClient, options: VirtioNetOptions = {}): Promise<VirtioNet> {
    if (typeof target !== 'string') {
      if (options.reconnect) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'reconnect needs a socket path or a listener to get a new connection from, not a client');
      return VirtioNet.start(target, options, null, false);
    }
    const connector: Connector = (timeoutMs, signal) => VhostUserClient.connect(target, { ...options, connect: { ...options.connect, timeoutMs, signal } });
    const client = await VhostUserClient.connect(target, options);
    return VirtioNet.start(client, options, connector, true);
  }

  /** Server mode: waits for a back-end to connect to `listener` (DPDK `client=1`); with `reconnect`, for the next one after it goes away. */
  static async accept(listener: UnixListener, options: VirtioNetOptions & { acceptTimeoutMs?: number } = {}): Promise<VirtioNet> {
    const connector: Connector = (timeoutMs, signal) => VhostUserClient.accept(listener, { ...options, acceptTimeoutMs: timeoutMs, signal });
    const client = await VhostUserClient.accept(listener, options);
    return VirtioNet.start(client, options, connector, true);
  }

  private static async start(client: VhostUserClient, options: VirtioNetOptions, connector: Connector | null, ownsClient: boolean): Promise<VirtioNet> {
    const opened: { close(): void }[] = [];
    try {
      return await VirtioNet.setUp(client, options, opened, connector);
    } catch (e) {
      for (const r of opened.reverse()) r.close();
      if (ownsClient) client.close();
      throw e;
    }
  }

  private static async setUp(client: VhostUserClient, options: VirtioNetOptions, opened: { close(): void }[], connector: Connector | null): Promise<VirtioNet> {
    const negotiated = await client.negotiate();
    const offered = negotiated.features;
    const ring = options.ring ?? 'split';
    const queueSize = options.queueSize ?? 256;
    const rxBufferSize = options.rxBufferSize ?? 2048;
    const txSlotSize = options.txSlotSize ?? 2048;
    if (!hasBit(offered, VirtioFeature.VIRTIO_F_VERSION_1)) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'the back-end does not offer VIRTIO_F_VERSION_1; legacy devices are not supported');
    }
    if (ring === 'packed' && !hasBit(offered, VirtioFeature.VIRTIO_F_RING_PACKED)) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'packed rings asked for, but the back-end does not offer VIRTIO_F_RING_PACKED');
    }
    let wanted =
      bit(VirtioFeature.VIRTIO_F_VERSION_1) |
      bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
      bit(VirtioNetFeature.VIRTIO_NET_F_MAC) |
      bit(VirtioNetFeature.VIRTIO_NET_F_MTU) |
      bit(VirtioNetFeature.VIRTIO_NET_F_STATUS);
    if (options.eventIdx ?? true) wanted |= bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    if (options.mrgRxbuf ?? true) wanted |= bit(VirtioNetFeature.VIRTIO_NET_F_MRG_RXBUF);
    if (options.csum) wanted |= bit(VirtioNetFeature.VIRTIO_NET_F_CSUM) | bit(VirtioNetFeature.VIRTIO_NET_F_GUEST_CSUM);
    if (ring === 'packed') wanted |= bit(VirtioFeature.VIRTIO_F_RING_PACKED);
    const wantPairs = options.queuePairs ?? 1;
    if (wantPairs > 1) wanted |= bit(VirtioNetFeature.VIRTIO_NET_F_MQ);
    const features = offered & wanted;
    const maxPairs = hasBit(features, VirtioNetFeature.VIRTIO_NET_F_MQ) && negotiated.queueNum !== null ? Math.floor(negotiated.queueNum / 2) || 1 : 1;
    if (wantPairs > maxPairs) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${wantPairs} queue pairs asked for; the back-end serves at most ${maxPairs}`);
    }
    await client.setFeatures(features);
    if (options.mtu !== undefined && client.hasProtocolFeature(ProtocolFeature.MTU) && hasBit(features, VirtioNetFeature.VIRTIO_NET_F_MTU)) {
      await client.netSetMtu(options.mtu);
    }

    const eventIdx = hasBit(features, VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
    const createQueue = options.createQueue ?? defaultCreateQueue;
    const footprint = ring === 'packed' ? PackedVirtqueue.footprint(queueSize) : SplitVirtqueue.footprint(queueSize);
    const ringBytes = alignUp(footprint, PAGE) * 2 + PAGE;
    const pairBytes = ringBytes + alignUp(queueSize * txSlotSize, PAGE) + alignUp(queueSize * rxBufferSize + MERGE_AREA, PAGE);
    const memory = GuestMemory.create({ size: alignUp(pairBytes * wantPairs, 2 * 1024 * 1024) });
    opened.push(memory);
    await client.setMemTable(memory);

    const pairs: QueuePair[] = [];
    for (let p = 0; p < wantPairs; p++) {
      const base = p * pairBytes;
      const rxRingGpa = base;
      const txRingGpa = base + ringBytes / 2;
      const txPoolGpa = base + ringBytes;
      const rxPoolGpa = txPoolGpa + alignUp(queueSize * txSlotSize, PAGE);
      const mk = (index: number, ringGpa: number) => createQueue(ring, { memory, index, size: queueSize, ringGpa, eventIdx });
      const rx = mk(2 * p, rxRingGpa);
      const tx = mk(2 * p + 1, txRingGpa);
      const fds = [new EventFd(), new EventFd(), new EventFd(), new EventFd()] as const;
      opened.push(...fds);
      const txFree = new Uint16Array(queueSize);
      for (let s = 0; s < queueSize; s++) txFree[s] = s;
      const rxPoolLength = queueSize * rxBufferSize + MERGE_AREA;
      pairs.push({
        rx,
        tx,
        rxKick: fds[0],
        txKick: fds[1],
        rxCall: fds[2],
        txCall: fds[3],
        txPoolGpa,
        txBytes: memory.bytes(txPoolGpa, queueSize * txSlotSize),
        txFrames: Array.from({ length: queueSize }, (_, s) => memory.bytes(txPoolGpa + s * txSlotSize + VIRTIO_NET_HDR_SIZE, txSlotSize - VIRTIO_NET_HDR_SIZE)),
        txFree,
        txFreeTop: queueSize,
        rxPoolGpa,
        rxBytes: memory.bytes(rxPoolGpa, rxPoolLength),
        mergeOffset: queueSize * rxBufferSize,
        rxLent: new Uint16Array(queueSize),
        rxLentCount: 0,
        counters: new Float64Array(COUNTERS),
      });
    }
    // Where the device starts: before the RX buffers filled in next, which it must see.
    const bases = new Map(pairs.flatMap((p) => [[p.rx, p.rx.vringBase] as const, [p.tx, p.tx.vringBase] as const]));
    for (const pair of pairs) {
      for (let s = 0; s < queueSize; s++) pair.rx.addBuffer(pair.rxPoolGpa + s * rxBufferSize, rxBufferSize, true, s);
      pair.rx.publish();
    }
    await startRings(client, pairs, memory, features, (vq) => bases.get(vq)!);
    let config: NetConfig | null = null;
    if (client.hasProtocolFeature(ProtocolFeature.CONFIG)) {
      config = decodeNetConfig(await client.getConfig(0, NET_CONFIG_SIZE), features);
    }
    if (client.hasProtocolFeature(ProtocolFeature.STATUS)) await client.setStatus(DRIVER_OK_STATUS);
    return new VirtioNet({ client, memory, features, pairs, queueSize, ring, rxBufferSize, txSlotSize, config, options, connector, offered });
  }

  // ------------------------------------------------------------ reconnect

  private watch(client: VhostUserClient): void {
    client.once('disconnect', (e) => {
      if (this.closed || client !== this.current) return;
      if (this.options.reconnect && this.connector) void this.reconnect(e);
      else this.emit('disconnect', e);
    });
  }

  /**
   * Gets a back-end again and replays what the device had (QEMU's vhost-user
   * reconnect does the same: vhost_dev_start on a fresh vhost_dev): features,
   * protocol features, memory table, then every ring with its size, addresses,
   * eventfds and a base resuming after the last completion the old back-end
   * wrote (Virtqueue.resumeBase). The packet path keeps working meanwhile:
   * sendBurst fills the ring until it is full, receiveBurst returns what was
   * completed before the loss.
   */
  private async reconnect(cause: VhostUserError): Promise<void> {
    const o = this.options.reconnect === true ? {} : (this.options.reconnect as ReconnectOptions);
    const t0 = Date.now();
    const deadline = t0 + (o.timeoutMs ?? 30_000);
    let delay = o.initialDelayMs ?? 50;
    let last: VhostUserError = cause;
    this.emit('reconnecting', cause);
    for (let attempts = 1; !this.closed; attempts++) {
      let client: VhostUserClient | null = null;
      try {
        client = await this.connector!(Math.max(1, deadline - Date.now()), this.closing.signal);
        if (this.closed) return client.close();
        const queues = await this.replay(client);
        if (this.closed) return client.close();
        this.current.close();
        this.current = client;
        this.watch(client);
        if (client.isBroken) throw client.error!;
        this.reconnects++;
        this.emit('reconnect', { attempts, downMs: Date.now() - t0, cause, queues });
        return;
      } catch (e) {
        client?.close();
        last = e instanceof VhostUserError ? e : new VhostUserError('VHOST_INVALID_STATE', String(e), { cause: e });
        // A ring the old back-end corrupted cannot be resumed by any back-end.
        if (last.code.startsWith('VHOST_RING_')) break;
      }
      if (this.closed) return;
      if (Date.now() + delay >= deadline) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => (this.stopWaiting = null, resolve()), delay);
        this.stopWaiting = () => (clearTimeout(timer), resolve());
      });
      delay = Math.min(delay * 2, o.maxDelayMs ?? 1000);
    }
    if (this.closed) return;
    const code = last.code.startsWith('VHOST_RING_') || last.code === 'VHOST_CONNECT_TIMEOUT' ? last.code : 'VHOST_DISCONNECTED';
    this.emit('disconnect', new VhostUserError(code, `reconnecting gave up after ${Date.now() - t0} ms: ${last.toLine()}`, { request: last.request, cause: last }));
  }

  // ------------------------------------------------------------ dirty logging (migration)

  /** Whether the back-end can log the pages it writes into shared memory: VHOST_F_LOG_ALL offered, LOG_SHMFD negotiated. */
  get canLogDirty(): boolean {
    return hasBit(this.offered, VirtioFeature.VHOST_F_LOG_ALL) && this.current.hasProtocolFeature(ProtocolFeature.LOG_SHMFD);
  }

  /** Whether dirty logging is on (startDirtyLog). */
  get isLoggingDirty(): boolean {
    return this.dirtyLog !== null;
  }

  /**
   * Starts dirty-page logging the way QEMU does when a migration begins
   * (vhost_dev_set_log): shares a log covering all of guest memory, one bit per
   * 4 KiB page, as a memfd (SET_LOG_BASE, LOG_SHMFD), sets VHOST_F_LOG_ALL with
   * SET_FEATURES, and switches every ring to logging its used ring (SET_VRING_ADDR
   * with VHOST_VRING_F_LOG and log_guest_addr = the used ring's GPA). The rings keep
   * running; vhost-user.rst, "Migration", allows both changes on running rings.
   * Read the log with syncDirtyLog(). A reconnect replays the logging too.
   */
  async startDirtyLog(): Promise<void> {
    if (this.dirtyLog) return;
    if (!this.canLogDirty) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'dirty logging needs VHOST_F_LOG_ALL offered and LOG_SHMFD negotiated', { request: 'SET_LOG_BASE' });
    }
    this.dirtyLog = DirtyLog.create(Math.max(...this.memory.regions.map((r) => r.guestPhysAddr + r.size)));
    try {
      await this.applyDirtyLog(this.current, true);
    } catch (e) {
      this.releaseDirtyLog();
      throw e;
    }
  }

  /**
   * The guest pages (GPA / 4096) the back-end wrote since the last call, in
   * ascending order; their bits are cleared atomically, so a write racing with
   * the read is kept for the next call. Allocates: not for the packet path.
   */
  syncDirtyLog(): number[] {
    if (!this.dirtyLog) throw new VhostUserError('VHOST_INVALID_STATE', 'dirty logging is not on (startDirtyLog)');
    return this.dirtyLog.sync();
  }

  /** Stops logging (rings unlogged, VHOST_F_LOG_ALL cleared), releases the log, and returns the pages dirtied since the last sync. */
  async stopDirtyLog(): Promise<number[]> {
    if (!this.dirtyLog) return [];
    await this.applyDirtyLog(this.current, false);
    const pages = this.syncDirtyLog();
    this.releaseDirtyLog();
    return pages;
  }

  /** Switches logging on `client` on (log base, LOG_ALL, logged rings) or off (the reverse). */
  private async applyDirtyLog(client: VhostUserClient, on: boolean): Promise<void> {
    const log = this.dirtyLog!;
    if (on) await client.setLogBase(log.fd, BigInt(log.size));
    await client.setFeatures(on ? this.features | bit(VirtioFeature.VHOST_F_LOG_ALL) : this.features);
    for (const pair of this.pairs) {
      for (const vq of [pair.rx, pair.tx]) await client.setVringAddr(ringAddr(this.memory, vq, on));
    }
  }

  private releaseDirtyLog(): void {
    this.dirtyLog?.close();
    this.dirtyLog = null;
  }

  // ------------------------------------------------------------ hand-over (migration)

  /**
   * Hands the rings over to another back-end: the vhost-user part of a live
   * migration, with both back-ends on this host. The current back-end stops each
   * ring and reports where it got to (GET_VRING_BASE, vhost-user.rst "Starting and
   * stopping rings"); the new one (a socket path, or a client already connected)
   * gets the same device: features, protocol features, the same memfd memory, and
   * every ring from exactly that base, then DRIVER_OK; finally SEND_RARP announces
   * the guest's MAC when RARP is negotiated. Unlike a crash, nothing is processed
   * twice or lost. The old connection is closed; dirty logging, if on, is stopped
   * first. The old back-end must complete what it took before answering
   * GET_VRING_BASE, as the spec asks.
   */
  async handOver(target: string | VhostUserClient, options: { mac?: Uint8Array } = {}): Promise<HandOverReport> {
    const t0 = Date.now();
    const old = this.current;
    if (this.dirtyLog) await this.stopDirtyLog();
    const bases = new Map<Virtqueue, number>();
    for (const pair of this.pairs) {
      for (const vq of [pair.rx, pair.tx]) bases.set(vq, (await old.getVringBase(vq.index)).num);
    }
    const client = typeof target === 'string' ? await VhostUserClient.connect(target, this.options) : target;
    try {
      await this.replay(client, bases);
      const mac = options.mac ?? (this.config?.mac ? parseMac(this.config.mac) : null);
      const rarp = mac !== null && client.hasProtocolFeature(ProtocolFeature.RARP);
      if (rarp) await client.sendRarp(mac);
      this.current = client;
      this.watch(client);
      old.close();
      return { queues: this.pairs.map((p) => ({ rxBase: bases.get(p.rx)!, txBase: bases.get(p.tx)! })), rarp, ms: Date.now() - t0 };
    } catch (e) {
      if (typeof target === 'string') client.close();
      throw e;
    }
  }

  /**
   * Sets the device up on a fresh connection, every ring from `bases` (a
   * hand-over) or, by default, resuming after the last completion the previous
   * back-end wrote (a reconnect); returns the per-pair report.
   */
  private async replay(client: VhostUserClient, given?: ReadonlyMap<Virtqueue, number>): Promise<ReconnectReport['queues']> {
    const negotiated = await client.negotiate();
    const missing = this.features & ~negotiated.features;
    if (missing !== 0n) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', `the back-end no longer offers features 0x${missing.toString(16)} the device runs with`, { request: 'GET_FEATURES' });
    }
    await client.setFeatures(this.features);
    const mtu = this.options.mtu;
    if (mtu !== undefined && client.hasProtocolFeature(ProtocolFeature.MTU) && hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_MTU)) await client.netSetMtu(mtu);
    await client.setMemTable(this.memory);
    const report: ReconnectReport['queues'] = [];
    const bases = new Map<Virtqueue, number>();
    for (const pair of this.pairs) {
      const txBase = given?.get(pair.tx) ?? pair.tx.resumeBase();
      const rxBase = given?.get(pair.rx) ?? pair.rx.resumeBase();
      bases.set(pair.tx, txBase).set(pair.rx, rxBase);
      report.push({ txBase, rxBase, txResumed: resumed(pair.tx, txBase), rxResumed: resumed(pair.rx, rxBase) });
    }
    await startRings(client, this.pairs, this.memory, this.features, (vq) => bases.get(vq)!);
    if (this.dirtyLog) await this.applyDirtyLog(client, true);
    for (const pair of this.pairs) pair.txKick.signal();
    if (client.hasProtocolFeature(ProtocolFeature.STATUS)) await client.setStatus(DRIVER_OK_STATUS);
    return report;
  }

  /** The largest frame sendBurst() accepts. */
  get maxFrameSize(): number {
    return this.txSlotSize - VIRTIO_NET_HDR_SIZE;
  }

  /** Link state from config space; true when the back-end does not report one (§5.1.4). */
  get linkUp(): boolean {
    return this.config?.status?.linkUp ?? true;
  }

  /**
   * Copies up to `count` frames into TX buffers of `queue`, exposes them and kicks
   * if the back-end asks for it. Returns how many were taken; the rest did not fit
   * (ring full) and are the caller's to retry. Frames longer than maxFrameSize are
   * dropped and counted.
   */
  sendBurst(frames: readonly Uint8Array[], count = frames.length, queue = 0): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    const slotSize = this.txSlotSize;
    const max = slotSize - VIRTIO_NET_HDR_SIZE;
    const c = pair.counters;
    let sent = 0;
    for (let i = 0; i < count; i++) {
      if (pair.txFreeTop === 0) break;
      const frame = frames[i]!;
      const len = frame.length;
      if (len > max) {
        c[NetCounter.txDrops]!++;
        sent++;
        continue;
      }
      const slot = pair.txFree[--pair.txFreeTop]!;
      const offset = slot * slotSize;
      pair.txBytes.set(frame, offset + VIRTIO_NET_HDR_SIZE);
      pair.tx.addBuffer(pair.txPoolGpa + offset, VIRTIO_NET_HDR_SIZE + len, false, slot);
      c[NetCounter.txPackets]!++;
      c[NetCounter.txBytes]! += len;
      sent++;
    }
    if (pair.tx.publish()) {
      pair.txKick.signal();
      c[NetCounter.kicks]!++;
    }
    return sent;
  }

  /**
   * Zero-copy TX: for up to `count` free TX slots of `queue`, calls
   * `fill(frame, i)` with the slot's frame area (maxFrameSize bytes of guest
   * memory) and transmits the number of bytes it returns. The area still holds
   * what was last written to that slot, so a sender whose frames share a payload
   * may rewrite only the headers, as DPDK's txonly does with its mbufs. Returns
   * how many frames were sent; fewer than `count` when the ring is full. A length
   * outside 0..maxFrameSize is VHOST_INVALID_ARGUMENT (frames filled before it are sent).
   */
  sendInPlace(count: number, fill: (frame: Uint8Array, index: number) => number, queue = 0): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    const max = this.txSlotSize - VIRTIO_NET_HDR_SIZE;
    const c = pair.counters;
    let sent = 0;
    try {
      for (; sent < count && pair.txFreeTop > 0; sent++) {
        const slot = pair.txFree[pair.txFreeTop - 1]!;
        const len = fill(pair.txFrames[slot]!, sent);
        if (!(Number.isInteger(len) && len >= 0 && len <= max)) {
          throw new VhostUserError('VHOST_INVALID_ARGUMENT', `sendInPlace: fill returned length ${len}; a frame is 0..${max} bytes`);
        }
        pair.txFreeTop--;
        pair.tx.addBuffer(pair.txPoolGpa + slot * this.txSlotSize, VIRTIO_NET_HDR_SIZE + len, false, slot);
        c[NetCounter.txPackets]!++;
        c[NetCounter.txBytes]! += len;
      }
    } finally {
      if (pair.tx.publish()) {
        pair.txKick.signal();
        c[NetCounter.kicks]!++;
      }
    }
    return sent;
  }

  /** TX buffers still held by the back-end on `queue`. */
  txInFlight(queue = 0): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    return pair.tx.outstanding;
  }

  private reclaimTx(pair: QueuePair): void {
    const tokens = this.reapTokens;
    for (let n = pair.tx.reap(tokens, this.reapLengths, tokens.length); n > 0; n = pair.tx.reap(tokens, this.reapLengths, tokens.length)) {
      for (let i = 0; i < n; i++) pair.txFree[pair.txFreeTop++] = tokens[i]!;
    }
  }

  /**
   * Fills `burst` with up to burst.capacity received frames (virtio_net_hdr
   * stripped, mergeable buffers joined) and returns how many. The frames stay
   * valid until the next receiveBurst() on the same queue, which re-posts their
   * buffers to the device.
   */
  receiveBurst(queue: number, burst: RxBurst): number {
    const pair = this.pair(queue);
    const rx = pair.rx;
    const size = this.rxBufferSize;
    for (let i = 0; i < pair.rxLentCount; i++) {
      const s = pair.rxLent[i]!;
      rx.addBuffer(pair.rxPoolGpa + s * size, size, true, s);
    }
    pair.rxLentCount = 0;
    const tokens = this.reapTokens;
    const lengths = this.reapLengths;
    const c = pair.counters;
    burst.buffer = pair.rxBytes;
    let out = 0;
    let mergeUsed = 0;
    const n = rx.reap(tokens, lengths, burst.capacity);
    for (let i = 0; i < n; i++) {
      const slot = tokens[i]!;
      const len = lengths[i]!;
      pair.rxLent[pair.rxLentCount++] = slot;
      const offset = slot * size;
      if (len < VIRTIO_NET_HDR_SIZE) {
        c[NetCounter.rxErrors]!++;
        continue;
      }
      const buffers = this.mrgRxbuf ? pair.rxBytes[offset + HDR_NUM_BUFFERS]! | (pair.rxBytes[offset + HDR_NUM_BUFFERS + 1]! << 8) : 1;
      if (buffers <= 1) {
        burst.offsets[out] = offset + VIRTIO_NET_HDR_SIZE;
        burst.lengths[out] = len - VIRTIO_NET_HDR_SIZE;
      } else {
        // §5.1.6.4: the frame continues in the next buffers-1 used buffers; join them in the merge area.
        if (i + buffers > n) {
          // The rest has not been reaped in this burst: re-read it next time would reorder; drop and count.
          c[NetCounter.rxErrors]!++;
          continue;
        }
        const start = pair.mergeOffset + mergeUsed;
        let total = len - VIRTIO_NET_HDR_SIZE;
        if (mergeUsed + total > MERGE_AREA) {
          c[NetCounter.rxDrops]!++;
          i += buffers - 1;
          continue;
        }
        pair.rxBytes.copyWithin(start, offset + VIRTIO_NET_HDR_SIZE, offset + len);
        for (let k = 1; k < buffers; k++) {
          const s2 = tokens[++i]!;
          const l2 = lengths[i]!;
          pair.rxLent[pair.rxLentCount++] = s2;
          if (mergeUsed + total + l2 > MERGE_AREA) {
            total = -1;
            continue;
          }
          pair.rxBytes.copyWithin(start + total, s2 * size, s2 * size + l2);
          total += l2;
        }
        if (total < 0) {
          c[NetCounter.rxDrops]!++;
          continue;
        }
        burst.offsets[out] = start;
        burst.lengths[out] = total;
        mergeUsed += total;
      }
      c[NetCounter.rxPackets]!++;
      c[NetCounter.rxBytes]! += burst.lengths[out]!;
      out++;
    }
    burst.count = out;
    if (rx.publish()) {
      pair.rxKick.signal();
      c[NetCounter.kicks]!++;
    }
    return out;
  }

  /**
   * Interrupt mode: the back-end signals the call eventfd of each RX ring and
   * frames are delivered as `frames` events, `burst` being reused. Polling stays
   * available; stopInterrupts() returns to pure polling.
   */
  startInterrupts(burstCapacity = 64): void {
    this.pairs.forEach((pair, q) => {
      const burst = new RxBurst(burstCapacity);
      const drain = () => {
        for (;;) {
          while (this.receiveBurst(q, burst) > 0) this.emit('frames', q, burst);
          if (!pair.rx.enableInterrupts()) return;
        }
      };
      pair.rxCall.watch(() => {
        pair.counters[NetCounter.interrupts]!++;
        drain();
      });
      drain();
    });
  }

  stopInterrupts(): void {
    for (const pair of this.pairs) {
      pair.rxCall.unwatch();
      pair.rx.disableInterrupts();
    }
  }

  /** A snapshot of the counters of `queue` (allocates: not for the packet path). */
  counters(queue = 0): NetCounters {
    const c = this.pair(queue).counters;
    const out = {} as NetCounters;
    for (const [name, slot] of Object.entries(NetCounter)) out[name as keyof NetCounters] = c[slot]!;
    return out;
  }

  /** Counters summed over all queue pairs. */
  totals(): NetCounters {
    const out = this.counters(0);
    for (let q = 1; q < this.queuePairs; q++) {
      const c = this.counters(q);
      for (const k of Object.keys(out) as (keyof NetCounters)[]) out[k] += c[k];
    }
    return out;
  }

  /** Where a pair's packet buffers live in guest memory (GPA and length): TX slots, RX buffers. For migration experiments (which pages are which). */
  bufferAreas(queue = 0): { tx: { gpa: number; length: number }; rx: { gpa: number; length: number } } {
    const p = this.pair(queue);
    return { tx: { gpa: p.txPoolGpa, length: p.txBytes.length }, rx: { gpa: p.rxPoolGpa, length: p.rxBytes.length } };
  }

  /** The virtqueues of a pair, for inspection and fault-injection tests. */
  queues(queue = 0): { rx: Virtqueue; tx: Virtqueue } {
    const p = this.pair(queue);
    return { rx: p.rx, tx: p.tx };
  }

  /** Disconnects and releases memory, eventfds and the client. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopWaiting?.();
    this.closing.abort();
    this.client.close();
    this.releaseDirtyLog();
    for (const p of this.pairs) for (const f of [p.rxKick, p.txKick, p.rxCall, p.txCall]) f.close();
    this.memory.close();
  }

  private pair(queue: number): QueuePair {
    const p = this.pairs[queue];
    if (p === undefined) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queue pair ${queue} does not exist (${this.queuePairs} configured)`);
    return p;
  }
}

const DRIVER_OK_STATUS = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK;

/**
 * Programs every ring of every pair (size, addresses, `base`, call and kick
 * eventfds), enables them when PROTOCOL_FEATURES was negotiated, and kicks the RX
 * rings so the back-end sees the buffers already there.
 */
async function startRings(client: VhostUserClient, pairs: readonly QueuePair[], memory: GuestMemory, features: bigint, base: (vq: Virtqueue) => number): Promise<void> {
  for (const pair of pairs) {
    for (const [vq, kick, call] of [
      [pair.rx, pair.rxKick, pair.rxCall],
      [pair.tx, pair.txKick, pair.txCall],
    ] as const) {
      await client.setVringNum(vq.index, vq.size);
      await client.setVringAddr(ringAddr(memory, vq, false));
      await client.setVringBase(vq.index, base(vq));
      await client.setVringCall(vq.index, call.fd);
      await client.setVringKick(vq.index, kick.fd);
    }
  }
  if (hasBit(features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) {
    for (const pair of pairs) {
      await client.setVringEnable(pair.rx.index, true);
      await client.setVringEnable(pair.tx.index, true);
    }
  }
  for (const pair of pairs) pair.rxKick.signal();
}

/**
 * SET_VRING_ADDR for `vq`; `logged`: VHOST_VRING_F_LOG with log_guest_addr where
 * the device writes completions: the used ring (split, as QEMU sets it), the
 * descriptor ring (packed, whose used entries overwrite descriptors; DPDK logs
 * packed completions at log_guest_addr + slot * 16).
 */
function ringAddr(memory: GuestMemory, vq: Virtqueue, logged: boolean): VringAddrOptions {
  const a = vq.addresses;
  return {
    index: vq.index,
    descUserAddr: memory.userAddr(a.desc),
    availUserAddr: memory.userAddr(a.driver),
    usedUserAddr: memory.userAddr(a.device),
    ...(logged ? { flags: VHOST_VRING_F_LOG, logGuestAddr: vq.packed ? a.desc : a.device } : {}),
  };
}

/** Buffers between the resume position and what the driver has published: processed again by the new device. */
function resumed(vq: Virtqueue, base: number): number {
  if (!vq.packed) return (vq.vringBase - base) & 0xffff;
  const size = vq.size;
  const pos = (b: number) => (b & 0x7fff) + (((b >>> 15) & 1) === 1 ? size : 0);
  return (pos(vq.vringBase) - pos(base) + 2 * size) % (2 * size);
}

function defaultCreateQueue(kind: RingKind, options: VirtqueueOptions): Virtqueue {
  return kind === 'packed' ? new PackedVirtqueue(options) : new SplitVirtqueue(options);
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
