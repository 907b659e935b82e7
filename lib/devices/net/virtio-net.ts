/**
 * A virtio-net driver that runs in this process instead of a guest kernel: it
 * negotiates with a vhost-user net back-end, lays rings and packet buffers out
 * in memfd guest memory, and pushes real frames through them (virtio 1.2 §5.1).
 *
 * Only what is net lives here: the feature wishes (MAC, MTU, STATUS, MRG_RXBUF,
 * CSUM, MQ), queue pairs, packet buffers, the virtio_net_hdr, NET_SET_MTU, the
 * config space and SEND_RARP after a hand-over. Negotiation, memory, ring set-up,
 * reconnect, dirty logging and hand-over are the device layer's (VhostDevice,
 * ../vhost-device.ts, as QEMU's net/vhost-user.c sits on hw/virtio/vhost.c).
 *
 * Queue pair i is RX ring 2i and TX ring 2i+1 (§5.1.2). Every buffer is one
 * descriptor: TX slots hold a zeroed 12-byte virtio_net_hdr followed by the frame,
 * RX slots are written whole by the device. The token of a buffer is its slot
 * number, so completions map back to slots with no lookup.
 *
 * The packet path allocates nothing and never goes through the device layer: it
 * uses the virtqueues and eventfds directly. Frames are copied into slots with
 * TypedArray.set, completions are reaped into preallocated arrays, received
 * frames are handed out as offsets into one reusable view, and counters live in a
 * Float64Array (large counts in object fields would be boxed).
 */
import { EventEmitter } from 'eventemitter3';
import type { VhostUserClient, VhostUserClientOptions } from '../../client/vhost-user-client.js';
import { VhostUserError } from '../../errors.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { bit, hasBit, ProtocolFeature, VirtioNetFeature } from '../../protocol/constants.js';
import type { EventFd } from '../../transport/eventfd.js';
import type { UnixListener } from '../../transport/unix-listener.js';
import type { ConnectOptions } from '../../transport/unix-stream.js';
import type { Virtqueue, VirtqueueOptions } from '../../virtqueue/virtqueue.js';
import { parseMac } from '../../net/frame-builder.js';
import { VhostDevice, type DeviceReconnectReport, type HandOverSteps, type ReconnectOptions, type RingKind, type VhostDeviceOptions } from '../vhost-device.js';
import { alignUp, PAGE } from '../vring-setup.js';
import { completePartialChecksum } from '../../net/checksum.js';
import { decodeNetConfig, NET_CONFIG_SIZE, type NetConfig } from './net-config.js';
import type { TxOffloads } from './tx-offloads.js';
import {
  HDR_CSUM_OFFSET,
  HDR_CSUM_START,
  HDR_GSO_SIZE,
  HDR_GSO_TYPE,
  HDR_HDR_LEN,
  HDR_NUM_BUFFERS,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_HDR_SIZE,
} from './virtio-net-hdr.js';

export type { RingKind, ReconnectOptions } from '../vhost-device.js';

export interface VirtioNetOptions extends VhostUserClientOptions {
  /** Queue pairs to use (default 1); more need VIRTIO_NET_F_MQ and are capped by GET_QUEUE_NUM. */
  queuePairs?: number;
  /** Entries per ring (default 256). */
  queueSize?: number;
  /** Ring layout (default 'split'); 'packed' needs VIRTIO_F_RING_PACKED from the back-end. */
  ring?: RingKind;
  /** Negotiate VIRTIO_RING_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /**
   * Negotiate VIRTIO_F_IN_ORDER when offered, with split rings (default true, as
   * DPDK's virtio-user does): TX completions are then counted from used.idx without
   * reading the used entries (virtio 1.2 §2.7.9).
   */
  inOrder?: boolean;
  /** Negotiate VIRTIO_NET_F_MRG_RXBUF when offered (default true). */
  mrgRxbuf?: boolean;
  /**
   * Negotiate VIRTIO_NET_F_CSUM / GUEST_CSUM when offered (default false: frames
   * carry full checksums). With CSUM a frame may leave its TCP/UDP checksum to
   * the device ({@link TxOffloads}); with GUEST_CSUM received frames may carry a
   * partial checksum (NEEDS_CSUM) or be marked DATA_VALID: see {@link RxBurst.flags}
   * and {@link RxBurst.completeChecksum}.
   */
  csum?: boolean;
  /**
   * Negotiate VIRTIO_NET_F_HOST_TSO4 / HOST_TSO6 when offered, with CSUM (their
   * prerequisite, virtio 1.2 §5.1.3.1): TCP frames up to 64 KiB that the device
   * segments (gso_type TCPV4 / TCPV6). TX slots then default to 65 612 bytes.
   */
  tso?: boolean;
  /** Negotiate VIRTIO_NET_F_HOST_USO when offered, with CSUM: UDP frames the device segments (gso_type UDP_L4). */
  uso?: boolean;
  /**
   * Negotiate VIRTIO_NET_F_GUEST_TSO4 / GUEST_TSO6 when offered, with GUEST_CSUM
   * and MRG_RXBUF (a 64 KiB frame then arrives across RX buffers, §5.1.6.3.1):
   * received TCP frames may be up to 64 KiB with GSO fields in {@link RxBurst}.
   */
  guestTso?: boolean;
  /** Bytes per RX buffer, header included (default 2048). */
  rxBufferSize?: number;
  /** Bytes per TX slot, header included (default 2048): the largest frame is this minus 12. */
  txSlotSize?: number;
  /** Guest memory of at least this many bytes (see VhostDeviceOptions.memorySize). */
  memorySize?: number;
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

/** What handOver() did. */
export interface HandOverReport {
  /** Ring positions the old back-end reported (GET_VRING_BASE) and the new one was given, per queue pair. */
  queues: {
    /** Base of the pair's RX ring (receiveq, vring 2N). */
    rxBase: number;
    /** Base of the pair's TX ring (transmitq, vring 2N + 1). */
    txBase: number;
  }[];
  /** Whether SEND_RARP went to the new back-end (RARP negotiated and a MAC known). */
  rarp: boolean;
  /** From the first GET_VRING_BASE to the new back-end running. */
  ms: number;
  /** The old back-end's connection when `keepOld` was asked for (the caller closes it), else null. */
  old: VhostUserClient | null;
}

/** Options of {@link VirtioNet.handOver}. */
export interface NetHandOverOptions {
  /** The MAC to announce with SEND_RARP (default: the config space's). */
  mac?: Uint8Array;
  /** Runs after GET_VRING_BASE on the old back-end, logging still on (see HandOverSteps.afterStop). */
  afterStop?: HandOverSteps['afterStop'];
  /** Runs on the new back-end before its memory and rings (see HandOverSteps.beforeStart). */
  beforeStart?: HandOverSteps['beforeStart'];
  /** Leave the old connection open and return it (see HandOverSteps.keepOld). */
  keepOld?: boolean;
}

/** What a reconnect found and did, per queue pair. */
export interface ReconnectReport {
  /** Connections tried, the successful one included. */
  attempts: number;
  /** From noticing the loss to the device running again. */
  downMs: number;
  /** The error that ended the previous connection. */
  cause: VhostUserError;
  /** Per queue pair, in order. */
  queues: {
    /** TX buffers the new back-end processes again (made available, never completed by the old one). */
    txResumed: number;
    /** RX buffers handed to the new back-end again. */
    rxResumed: number;
    /** TX ring position sent with SET_VRING_BASE. */
    txBase: number;
    /** RX ring position sent with SET_VRING_BASE. */
    rxBase: number;
  }[];
}

/**
 * A burst of received frames: `count` frames at buffer[offsets[i] .. + lengths[i]),
 * with the offload fields of each frame's virtio_net_hdr (virtio 1.2 §5.1.6.4).
 */
export class RxBurst {
  /** The memory the frames are in (guest memory, or the merge area for frames joined from several buffers). */
  buffer: Uint8Array = new Uint8Array(0);
  /** Frame i starts at buffer[offsets[i]] (virtio_net_hdr already skipped). */
  readonly offsets: Uint32Array;
  /** Frame i's length in bytes. */
  readonly lengths: Uint32Array;
  /**
   * Frame i's header `flags`: VIRTIO_NET_HDR_F_NEEDS_CSUM (its TCP/UDP checksum
   * field holds only the pseudo-header sum: complete it with completeChecksum(i)),
   * VIRTIO_NET_HDR_F_DATA_VALID (the device validated it). Always 0 without GUEST_CSUM.
   */
  readonly flags: Uint8Array;
  /** Frame i's `gso_type` (GUEST_TSO4/6: VIRTIO_NET_HDR_GSO_TCPV4/6 for a frame larger than the MTU). */
  readonly gsoTypes: Uint8Array;
  /** Frame i's `gso_size` (segment payload size of a GSO frame). */
  readonly gsoSizes: Uint16Array;
  /** Frame i's `hdr_len`. */
  readonly hdrLens: Uint16Array;
  /** Frame i's `csum_start` (NEEDS_CSUM), from the frame's first byte. */
  readonly csumStarts: Uint16Array;
  /** Frame i's `csum_offset` (NEEDS_CSUM). */
  readonly csumOffsets: Uint16Array;
  /** Frames filled by the last receiveBurst(). */
  count = 0;
  /** @param capacity most frames one receiveBurst() fills. */
  constructor(
    /** Most frames one receiveBurst() fills. */
    readonly capacity = 64,
  ) {
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.gsoTypes = new Uint8Array(capacity);
    this.gsoSizes = new Uint16Array(capacity);
    this.hdrLens = new Uint16Array(capacity);
    this.csumStarts = new Uint16Array(capacity);
    this.csumOffsets = new Uint16Array(capacity);
  }

  /**
   * Completes frame i's partial checksum when it arrived with NEEDS_CSUM (virtio
   * 1.2 §5.1.6.4: the sum over [csum_start, end) stored at csum_start + csum_offset),
   * in place, and marks it DATA_VALID. Returns true when the frame now has a full
   * checksum (also when it needed none), false when its csum fields lie outside
   * the frame (nothing is written).
   */
  completeChecksum(i: number): boolean {
    const f = this.flags[i]!;
    if ((f & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return true;
    if (!completePartialChecksum(this.buffer, this.offsets[i]!, this.lengths[i]!, this.csumStarts[i]!, this.csumOffsets[i]!)) return false;
    this.flags[i] = (f & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) | VIRTIO_NET_HDR_F_DATA_VALID;
    return true;
  }
  /** A copy of frame i (allocates: for tests and tools, not the packet path). */
  frame(i: number): Uint8Array {
    const o = this.offsets[i]!;
    return this.buffer.slice(o, o + this.lengths[i]!);
  }
}

/** A range of guest memory. */
export interface GuestArea {
  /** Guest physical address of the first byte. */
  gpa: number;
  /** Bytes in the range. */
  length: number;
}

/** Counter slots in each queue pair's Float64Array. */
export const NetCounter = {
  /** Frames made available on TX. */
  txPackets: 0,
  /** Their bytes, virtio_net_hdr excluded. */
  txBytes: 1,
  /** Frames refused on TX (longer than maxFrameSize). */
  txDrops: 2,
  /** Frames received. */
  rxPackets: 3,
  /** Their bytes, virtio_net_hdr excluded. */
  rxBytes: 4,
  /** Received frames dropped: a merged frame too big for the merge area, or lengths that do not add up. */
  rxDrops: 5,
  /** Kick eventfd signals (only when the device asked). */
  kicks: 6,
  /** Call eventfd wake-ups (interrupt mode). */
  interrupts: 7,
  /** RX completions dropped as malformed: shorter than virtio_net_hdr, or a merged frame whose buffers were not all used in the burst. */
  rxErrors: 8,
} as const;
const COUNTERS = 9;

/** A snapshot of one queue pair's counters, by name (see {@link NetCounter}). */
export type NetCounters = { -readonly [K in keyof typeof NetCounter]: number };

interface QueuePair {
  rx: Virtqueue;
  tx: Virtqueue;
  rxKick: EventFd;
  txKick: EventFd;
  rxCall: EventFd;
  txCall: EventFd;
  /** TX pool: slot s at txPool + s * txStride (see {@link txSlotStride}). */
  txPoolGpa: number;
  txBytes: Uint8Array;
  /** Per slot: the frame area after its virtio_net_hdr (maxFrameSize bytes), for sendInPlace(). */
  txFrames: Uint8Array[];
  /**
   * Free TX slots, first in first out (`txFreeCount` from `txFreeHead`, mod the
   * queue size), as the ring's free descriptors are: with in-order completions a
   * descriptor then always carries the same slot, and its words are not rewritten.
   */
  txFree: Uint16Array;
  txFreeHead: number;
  txFreeCount: number;
  rxPoolGpa: number;
  /** RX pool view; merged frames are assembled in its tail (mergeOffset). */
  rxBytes: Uint8Array;
  mergeOffset: number;
  /** Slots handed out in the last burst, re-posted on the next receiveBurst(). */
  rxLent: Uint16Array;
  rxLentCount: number;
  /** Used RX buffers reaped but not yet handed out (a merged frame that did not fit this burst), in used order. */
  rxPendTokens: Uint32Array;
  rxPendLengths: Uint32Array;
  rxPendCount: number;
  /** Buffers the first pending frame spans (0: none waiting): the next reap takes at least that many. */
  rxPendNeed: number;
  /** A TX slot header may hold offload fields from an earlier frame: headers are then always written. */
  txHdrDirty: boolean;
  counters: Float64Array;
  /** Resolves the pending waitTxSpace(), if any (the TX call eventfd's one watcher calls it). */
  txWaiter: ((ok: boolean) => void) | null;
  /** Whether the TX call eventfd is being watched (a watcher is set up once and kept). */
  txWatched: boolean;
}

/** Events of a {@link VirtioNet}. */
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

/** Room for two of the largest frames a device may merge (64 KiB of IPv6 payload and headers) per burst. */
const MERGE_AREA = 2 * 65664;
/** With GUEST_TSO: room for four 64 KiB frames joined from mergeable buffers per burst. */
const MERGE_AREA_GSO = 4 * 65664;
/** The largest frame a GSO transmit may be: IPv6 header + 64 KiB payload, Ethernet with one VLAN tag. */
const GSO_FRAME_MAX = 14 + 4 + 40 + 65535;

/**
 * A virtio-net driver (virtio 1.2 §5.1) over vhost-user, on the shared device layer: open it on
 * a back-end's socket (or accept a back-end that connects), then send and receive bursts of
 * frames on its queue pairs without allocating per frame.
 */
export class VirtioNet extends EventEmitter<VirtioNetEvents> {
  /** The device layer under this driver: connection, memory, rings, reconnect, dirty log, hand-over. */
  readonly device: VhostDevice;
  /** The guest memory shared with the back-end (rings, TX slots, RX buffers). */
  readonly memory: GuestMemory;
  /** Features acknowledged with SET_FEATURES. */
  readonly features: bigint;
  /** Queue pairs in use (RX vring 2N, TX vring 2N + 1). */
  readonly queuePairs: number;
  /** Entries per ring. */
  readonly queueSize: number;
  /** Split or packed rings. */
  readonly ring: RingKind;
  /** Config space when the back-end offers CONFIG, else null. */
  readonly config: NetConfig | null;
  private readonly pairs: QueuePair[];
  private readonly rxBufferSize: number;
  private readonly txSlotSize: number;
  private readonly txStride: number;
  private readonly mrgRxbuf: boolean;
  private readonly mergeArea: number;
  /** RX headers carry offload fields (GUEST_CSUM negotiated). */
  private readonly rxOffloads: boolean;
  /** What a TX header may ask for: NEEDS_CSUM (CSUM), each gso_type by its HOST_ feature. */
  private readonly txCsum: boolean;
  private readonly txGsoTypes: number;
  private readonly reapTokens: Uint32Array;
  private readonly reapLengths: Uint32Array;
  private closed = false;
  private interrupting = false;

  private constructor(init: { device: VhostDevice; pairs: QueuePair[]; rxBufferSize: number; txSlotSize: number; mergeArea: number; config: NetConfig | null }) {
    super();
    const device = init.device;
    this.device = device;
    this.memory = device.memory;
    this.features = device.features;
    this.pairs = init.pairs;
    this.queuePairs = init.pairs.length;
    this.queueSize = device.queues[0]!.vq.size;
    this.ring = device.ring;
    this.rxBufferSize = init.rxBufferSize;
    this.txSlotSize = init.txSlotSize;
    this.txStride = txSlotStride(init.txSlotSize);
    this.config = init.config;
    this.mrgRxbuf = hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_MRG_RXBUF);
    this.mergeArea = init.mergeArea;
    this.rxOffloads = hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_GUEST_CSUM);
    this.txCsum = hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_CSUM);
    let gso = 0;
    if (hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_HOST_TSO4)) gso |= 1 << VIRTIO_NET_HDR_GSO_TCPV4;
    if (hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_HOST_TSO6)) gso |= 1 << VIRTIO_NET_HDR_GSO_TCPV6;
    if (hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_HOST_USO)) gso |= 1 << VIRTIO_NET_HDR_GSO_UDP_L4;
    this.txGsoTypes = gso;
    this.reapTokens = new Uint32Array(this.queueSize);
    this.reapLengths = new Uint32Array(this.queueSize);
    device.on('disconnect', (e) => this.emit('disconnect', e));
    device.on('reconnecting', (e) => this.emit('reconnecting', e));
    device.on('reconnect', (r) => this.emit('reconnect', this.pairReport(r)));
  }

  /** The connection in use (a new one after each reconnect). */
  get client(): VhostUserClient {
    return this.device.client;
  }

  /** Reconnects completed. */
  get reconnects(): number {
    return this.device.reconnects;
  }

  /**
   * Connects (or takes a connected client), negotiates, shares memory, sets up
   * and enables every queue pair, fills the RX rings, and sets DRIVER_OK when the
   * back-end speaks STATUS. On failure everything opened here is closed again.
   */
  static async open(target: string | VhostUserClient, options: VirtioNetOptions = {}): Promise<VirtioNet> {
    return VirtioNet.setUp(await VhostDevice.open(target, deviceOptions(options)), options);
  }

  /** Server mode: waits for a back-end to connect to `listener` (DPDK `client=1`); with `reconnect`, for the next one after it goes away. */
  static async accept(listener: UnixListener, options: VirtioNetOptions & { acceptTimeoutMs?: number } = {}): Promise<VirtioNet> {
    return VirtioNet.setUp(await VhostDevice.accept(listener, { ...deviceOptions(options), acceptTimeoutMs: options.acceptTimeoutMs }), options);
  }

  private static async setUp(device: VhostDevice, options: VirtioNetOptions): Promise<VirtioNet> {
    try {
      return await VirtioNet.build(device, options);
    } catch (e) {
      device.close();
      throw e;
    }
  }

  private static async build(device: VhostDevice, options: VirtioNetOptions): Promise<VirtioNet> {
    const queueSize = options.queueSize ?? 256;
    const rxBufferSize = options.rxBufferSize ?? 2048;
    const hostGso = options.tso === true || options.uso === true;
    const txSlotSize = options.txSlotSize ?? (hostGso ? VIRTIO_NET_HDR_SIZE + GSO_FRAME_MAX : 2048);
    const wantPairs = options.queuePairs ?? 1;
    const offered = device.offered;
    const F = VirtioNetFeature;
    let wanted = bit(F.VIRTIO_NET_F_MAC) | bit(F.VIRTIO_NET_F_MTU) | bit(F.VIRTIO_NET_F_STATUS);
    const mrg = (options.mrgRxbuf ?? true) && hasBit(offered, F.VIRTIO_NET_F_MRG_RXBUF);
    if (mrg) wanted |= bit(F.VIRTIO_NET_F_MRG_RXBUF);
    if (options.csum) wanted |= bit(F.VIRTIO_NET_F_CSUM) | bit(F.VIRTIO_NET_F_GUEST_CSUM);
    // §5.1.3.1: HOST_TSO4/6 and HOST_USO require CSUM, GUEST_TSO4/6 require GUEST_CSUM; a
    // feature is acknowledged only with its prerequisite.
    if (hasBit(offered, F.VIRTIO_NET_F_CSUM)) {
      if (hostGso) wanted |= bit(F.VIRTIO_NET_F_CSUM);
      if (options.tso) wanted |= bit(F.VIRTIO_NET_F_HOST_TSO4) | bit(F.VIRTIO_NET_F_HOST_TSO6);
      if (options.uso) wanted |= bit(F.VIRTIO_NET_F_HOST_USO);
    }
    // §5.1.6.3.1: without MRG_RXBUF a GUEST_TSO driver must post 65 562-byte buffers; these
    // are only negotiated when the frame can span buffers or the buffers are that large.
    const bigRx = mrg || rxBufferSize >= VIRTIO_NET_HDR_SIZE + GSO_FRAME_MAX;
    if (options.guestTso && bigRx && hasBit(offered, F.VIRTIO_NET_F_GUEST_CSUM)) {
      wanted |= bit(F.VIRTIO_NET_F_GUEST_CSUM) | bit(F.VIRTIO_NET_F_GUEST_TSO4) | bit(F.VIRTIO_NET_F_GUEST_TSO6);
    }
    if (wantPairs > 1) wanted |= bit(F.VIRTIO_NET_F_MQ);
    const features = device.selectFeatures({ wanted });
    const guestGso = hasBit(features, F.VIRTIO_NET_F_GUEST_TSO4) || hasBit(features, F.VIRTIO_NET_F_GUEST_TSO6);
    const mergeArea = guestGso && mrg ? MERGE_AREA_GSO : MERGE_AREA;
    const queueNum = device.negotiated.queueNum;
    // §5.1.2: queue pairs beyond the first need VIRTIO_NET_F_MQ.
    const maxPairs = hasBit(features, VirtioNetFeature.VIRTIO_NET_F_MQ) && queueNum !== null ? Math.floor(queueNum / 2) || 1 : 1;
    if (wantPairs > maxPairs) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${wantPairs} queue pairs asked for; the back-end serves at most ${maxPairs}`);
    }
    const txStride = txSlotStride(txSlotSize);
    const txPoolBytes = alignUp(queueSize * txStride, PAGE);
    const rxPoolLength = queueSize * rxBufferSize + mergeArea;
    const pairBytes = txPoolBytes + alignUp(rxPoolLength, PAGE);
    device.allocate({ count: 2 * wantPairs, size: queueSize, dataBytes: pairBytes * wantPairs });
    const memory = device.memory;
    const pairs: QueuePair[] = [];
    for (let p = 0; p < wantPairs; p++) {
      const rxq = device.queues[2 * p]!;
      const txq = device.queues[2 * p + 1]!;
      const txPoolGpa = device.dataGpa + p * pairBytes;
      const rxPoolGpa = txPoolGpa + txPoolBytes;
      const txFree = new Uint16Array(queueSize);
      for (let s = 0; s < queueSize; s++) txFree[s] = s;
      pairs.push({
        rx: rxq.vq,
        tx: txq.vq,
        rxKick: rxq.kick,
        txKick: txq.kick,
        rxCall: rxq.call,
        txCall: txq.call,
        txPoolGpa,
        txBytes: memory.bytes(txPoolGpa, queueSize * txStride),
        txFrames: Array.from({ length: queueSize }, (_, s) => memory.bytes(txPoolGpa + s * txStride + VIRTIO_NET_HDR_SIZE, txSlotSize - VIRTIO_NET_HDR_SIZE)),
        txFree,
        txFreeHead: 0,
        txFreeCount: queueSize,
        rxPoolGpa,
        rxBytes: memory.bytes(rxPoolGpa, rxPoolLength),
        mergeOffset: queueSize * rxBufferSize,
        rxLent: new Uint16Array(queueSize),
        rxLentCount: 0,
        rxPendTokens: new Uint32Array(queueSize),
        rxPendLengths: new Uint32Array(queueSize),
        rxPendCount: 0,
        rxPendNeed: 0,
        txHdrDirty: false,
        counters: new Float64Array(COUNTERS),
        txWaiter: null,
        txWatched: false,
      });
    }
    // RX buffers go in before the start: the back-end sees them at its first kick.
    for (const pair of pairs) {
      for (let s = 0; s < queueSize; s++) pair.rx.addBuffer(pair.rxPoolGpa + s * rxBufferSize, rxBufferSize, true, s);
      pair.rx.publish();
    }
    let config: NetConfig | null = null;
    const mtu = options.mtu;
    await device.start({
      configure: async (client) => {
        if (mtu !== undefined && client.hasProtocolFeature(ProtocolFeature.MTU) && hasBit(features, VirtioNetFeature.VIRTIO_NET_F_MTU)) await client.netSetMtu(mtu);
      },
      ready: async (client, restart) => {
        if (!restart && client.hasProtocolFeature(ProtocolFeature.CONFIG)) config = decodeNetConfig(await client.getConfig(0, NET_CONFIG_SIZE), features);
      },
    });
    return new VirtioNet({ device, pairs, rxBufferSize, txSlotSize, mergeArea, config });
  }

  /** The layer's per-ring report as per-pair numbers (RX ring 2i, TX ring 2i+1). */
  private pairReport(r: DeviceReconnectReport): ReconnectReport {
    const queues = this.pairs.map((_, p) => {
      const rx = r.rings[2 * p]!;
      const tx = r.rings[2 * p + 1]!;
      return { txBase: tx.base, rxBase: rx.base, txResumed: tx.resumed, rxResumed: rx.resumed };
    });
    return { attempts: r.attempts, downMs: r.downMs, cause: r.cause, queues };
  }

  // ------------------------------------------------------------ dirty logging (migration): the layer's

  /** Whether the back-end can log the pages it writes into shared memory: VHOST_F_LOG_ALL offered, LOG_SHMFD negotiated. */
  get canLogDirty(): boolean {
    return this.device.canLogDirty;
  }

  /** Whether dirty logging is on (startDirtyLog). */
  get isLoggingDirty(): boolean {
    return this.device.isLoggingDirty;
  }

  /** See {@link VhostDevice.startDirtyLog}: logging of every page the back-end writes, until stopDirtyLog(). */
  startDirtyLog(): Promise<void> {
    return this.device.startDirtyLog();
  }

  /** The guest pages (GPA / 4096) the back-end wrote since the last call, ascending; see {@link VhostDevice.syncDirtyLog}. */
  syncDirtyLog(): number[] {
    return this.device.syncDirtyLog();
  }

  /** Stops logging, releases the log, and returns the pages dirtied since the last sync. */
  stopDirtyLog(): Promise<number[]> {
    return this.device.stopDirtyLog();
  }

  // ------------------------------------------------------------ hand-over (migration)

  /**
   * Hands the rings over to another back-end: the vhost-user part of a live
   * migration, with both back-ends on this host (see {@link VhostDevice.handOver}:
   * GET_VRING_BASE on the old one, the same device on the new one from exactly
   * those bases, then DRIVER_OK). Then SEND_RARP announces the guest's MAC (from
   * `options.mac`, else the config space) when RARP is negotiated. Unlike a
   * crash, nothing is processed twice or lost. The old connection is closed;
   * dirty logging, if on, is stopped first.
   */
  async handOver(target: string | VhostUserClient, options: NetHandOverOptions = {}): Promise<HandOverReport> {
    let rarp = false;
    const report = await this.device.handOver(target, {
      afterStop: options.afterStop,
      beforeStart: options.beforeStart,
      keepOld: options.keepOld,
      afterStart: async (client) => {
        const mac = options.mac ?? (this.config?.mac ? parseMac(this.config.mac) : null);
        // QEMU (vhost_user_migration_done) announces only when the guest cannot do it
        // itself: SEND_RARP needs protocol feature RARP, and not with GUEST_ANNOUNCE
        // negotiated (virtio 1.2 §5.1.6.5.4: the driver then sends the gratuitous packets).
        rarp = mac !== null && client.hasProtocolFeature(ProtocolFeature.RARP) && !hasBit(this.features, VirtioNetFeature.VIRTIO_NET_F_GUEST_ANNOUNCE);
        if (rarp) await client.sendRarp(mac!);
      },
    });
    return { queues: this.pairs.map((_, p) => ({ rxBase: report.bases[2 * p]!, txBase: report.bases[2 * p + 1]! })), rarp, ms: report.ms, old: report.old };
  }

  /** The offloads negotiated (virtio 1.2 §5.1.3), by what they let each side do. */
  get offloads(): {
    /** CSUM: TX frames may carry NEEDS_CSUM. */
    csum: boolean;
    /** GUEST_CSUM: RX frames may carry NEEDS_CSUM or DATA_VALID. */
    guestCsum: boolean;
    /** HOST_TSO4: TX gso_type TCPV4. */
    tso4: boolean;
    /** HOST_TSO6: TX gso_type TCPV6. */
    tso6: boolean;
    /** HOST_USO: TX gso_type UDP_L4. */
    uso: boolean;
    /** GUEST_TSO4: RX TCPV4 frames up to 64 KiB. */
    guestTso4: boolean;
    /** GUEST_TSO6: RX TCPV6 frames up to 64 KiB. */
    guestTso6: boolean;
  } {
    const f = this.features;
    const F = VirtioNetFeature;
    return {
      csum: hasBit(f, F.VIRTIO_NET_F_CSUM),
      guestCsum: hasBit(f, F.VIRTIO_NET_F_GUEST_CSUM),
      tso4: hasBit(f, F.VIRTIO_NET_F_HOST_TSO4),
      tso6: hasBit(f, F.VIRTIO_NET_F_HOST_TSO6),
      uso: hasBit(f, F.VIRTIO_NET_F_HOST_USO),
      guestTso4: hasBit(f, F.VIRTIO_NET_F_GUEST_TSO4),
      guestTso6: hasBit(f, F.VIRTIO_NET_F_GUEST_TSO6),
    };
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
   * dropped and counted. With `offloads`, frame i's virtio_net_hdr carries entry i
   * (checksum and segmentation offload, virtio 1.2 §5.1.6.2); an entry asking for
   * a feature that was not negotiated is VHOST_INVALID_ARGUMENT (the frames before
   * it are sent).
   */
  sendBurst(frames: readonly Uint8Array[], count = frames.length, queue = 0, offloads?: TxOffloads): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    const stride = this.txStride;
    const max = this.txSlotSize - VIRTIO_NET_HDR_SIZE;
    const c = pair.counters;
    const ringSize = this.queueSize;
    const bytes = pair.txBytes;
    if (offloads !== undefined) pair.txHdrDirty = true;
    const writeHdr = pair.txHdrDirty;
    let sent = 0;
    try {
      for (let i = 0; i < count; i++) {
        if (pair.txFreeCount === 0) break;
        const frame = frames[i]!;
        const len = frame.length;
        if (len > max) {
          c[NetCounter.txDrops]!++;
          sent++;
          continue;
        }
        const slot = pair.txFree[pair.txFreeHead]!;
        const offset = slot * stride;
        if (writeHdr) this.writeTxHeader(bytes, offset, offloads, i);
        if (++pair.txFreeHead === ringSize) pair.txFreeHead = 0;
        pair.txFreeCount--;
        bytes.set(frame, offset + VIRTIO_NET_HDR_SIZE);
        pair.tx.addBuffer(pair.txPoolGpa + offset, VIRTIO_NET_HDR_SIZE + len, false, slot);
        c[NetCounter.txPackets]!++;
        c[NetCounter.txBytes]! += len;
        sent++;
      }
    } finally {
      if (pair.tx.publish()) {
        pair.txKick.signal();
        c[NetCounter.kicks]!++;
      }
    }
    return sent;
  }

  /**
   * Writes the first 10 bytes of a TX slot's virtio_net_hdr from offload entry `i`
   * (zero without `offloads`); num_buffers stays 0 (§5.1.6.2.1). Refuses what the
   * driver may not send (§5.1.6.2.1): NEEDS_CSUM without CSUM, a gso_type without its
   * HOST_ feature, GSO without NEEDS_CSUM or with gso_size 0, any other flag.
   */
  private writeTxHeader(bytes: Uint8Array, offset: number, offloads: TxOffloads | undefined, i: number): void {
    if (offloads === undefined) {
      bytes.fill(0, offset, offset + HDR_NUM_BUFFERS);
      return;
    }
    const flags = offloads.flags[i]!;
    const gso = offloads.gsoTypes[i]!;
    const gsoSize = offloads.gsoSizes[i]!;
    if (flags !== 0 && (flags !== VIRTIO_NET_HDR_F_NEEDS_CSUM || !this.txCsum)) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `offload entry ${i}: flags ${flags} ${this.txCsum ? 'may only be NEEDS_CSUM' : 'need VIRTIO_NET_F_CSUM, which is not negotiated'}`);
    }
    if (gso !== VIRTIO_NET_HDR_GSO_NONE) {
      if (gso > 7 || (this.txGsoTypes & (1 << gso)) === 0) {
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `offload entry ${i}: gso_type ${gso} needs a HOST_TSO4/TSO6/USO feature that is not negotiated`);
      }
      if (flags === 0 || gsoSize === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `offload entry ${i}: a GSO frame needs NEEDS_CSUM and a gso_size (virtio 1.2 §5.1.6.2.1)`);
    }
    bytes[offset] = flags;
    bytes[offset + HDR_GSO_TYPE] = gso;
    const hl = offloads.hdrLens[i]!;
    const cs = offloads.csumStarts[i]!;
    const co = offloads.csumOffsets[i]!;
    bytes[offset + HDR_HDR_LEN] = hl & 0xff;
    bytes[offset + HDR_HDR_LEN + 1] = hl >>> 8;
    bytes[offset + HDR_GSO_SIZE] = gsoSize & 0xff;
    bytes[offset + HDR_GSO_SIZE + 1] = gsoSize >>> 8;
    bytes[offset + HDR_CSUM_START] = cs & 0xff;
    bytes[offset + HDR_CSUM_START + 1] = cs >>> 8;
    bytes[offset + HDR_CSUM_OFFSET] = co & 0xff;
    bytes[offset + HDR_CSUM_OFFSET + 1] = co >>> 8;
  }

  /**
   * Zero-copy TX: for up to `count` free TX slots of `queue`, calls
   * `fill(frame, i)` with the slot's frame area (maxFrameSize bytes of guest
   * memory) and transmits the number of bytes it returns. The area still holds
   * what was last written to that slot, so a sender whose frames share a payload
   * may rewrite only the headers, as DPDK's txonly does with its mbufs. Returns
   * how many frames were sent; fewer than `count` when the ring is full. A length
   * outside 0..maxFrameSize is VHOST_INVALID_ARGUMENT (frames filled before it are sent).
   * With `offloads`, `fill` may set entry i, which goes into frame i's header as in sendBurst().
   */
  sendInPlace(count: number, fill: (frame: Uint8Array, index: number) => number, queue = 0, offloads?: TxOffloads): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    const max = this.txSlotSize - VIRTIO_NET_HDR_SIZE;
    const c = pair.counters;
    const ringSize = this.queueSize;
    if (offloads !== undefined) pair.txHdrDirty = true;
    const writeHdr = pair.txHdrDirty;
    let sent = 0;
    try {
      for (; sent < count && pair.txFreeCount > 0; sent++) {
        const slot = pair.txFree[pair.txFreeHead]!;
        const len = fill(pair.txFrames[slot]!, sent);
        if (!(Number.isInteger(len) && len >= 0 && len <= max)) {
          throw new VhostUserError('VHOST_INVALID_ARGUMENT', `sendInPlace: fill returned length ${len}; a frame is 0..${max} bytes`);
        }
        if (writeHdr) this.writeTxHeader(pair.txBytes, slot * this.txStride, offloads, sent);
        if (++pair.txFreeHead === ringSize) pair.txFreeHead = 0;
        pair.txFreeCount--;
        pair.tx.addBuffer(pair.txPoolGpa + slot * this.txStride, VIRTIO_NET_HDR_SIZE + len, false, slot);
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

  /**
   * Sleeps until at least `free` TX slots of `queue` are free again (resolves true, at once if
   * they are), or `timeoutMs` passes (false). An unpaced sender calls it when sendBurst() took
   * nothing instead of spinning: where the sender, the back-end and a receiver share a few
   * cores, a sender spinning on a full ring takes the CPU time the receiver needs to keep its
   * RX ring refilled, and the switch drops what does not fit. The back-end is asked for one
   * call once enough buffers are used (used_event with VIRTIO_RING_F_EVENT_IDX, §2.7.10.2).
   */
  waitTxSpace(queue: number, free: number, timeoutMs: number): Promise<boolean> {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    const need = Math.min(free, this.queueSize) - pair.txFreeCount;
    if (need <= 0 || this.closed) return Promise.resolve(true);
    if (pair.txWaiter) return Promise.reject(new VhostUserError('VHOST_BUSY', `a waitTxSpace() is already pending on queue pair ${queue}`));
    const tx = pair.tx;
    if (tx.enableInterruptsAfter(Math.min(need, tx.outstanding))) {
      tx.disableInterrupts();
      return Promise.resolve(true);
    }
    if (!pair.txWatched) {
      pair.txWatched = true;
      pair.txCall.watch(() => {
        pair.counters[NetCounter.interrupts]!++;
        pair.txWaiter?.(true);
      });
    }
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        pair.txWaiter = null;
        tx.disableInterrupts();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      pair.txWaiter = done;
    });
  }

  /** TX buffers still held by the back-end on `queue`. */
  txInFlight(queue = 0): number {
    const pair = this.pair(queue);
    this.reclaimTx(pair);
    return pair.tx.outstanding;
  }

  /**
   * Takes back the TX slots the device is done with: one read of used.idx, and at
   * most one reap (the token arrays hold a whole ring, so one reap takes everything
   * completed); slots go back at the tail of the free list in completion order.
   */
  private reclaimTx(pair: QueuePair): void {
    const tokens = this.reapTokens;
    const n = pair.tx.reap(tokens, this.reapLengths, tokens.length);
    if (n === 0) return;
    const ringSize = this.queueSize;
    let at = pair.txFreeHead + pair.txFreeCount;
    if (at >= ringSize) at -= ringSize;
    for (let i = 0; i < n; i++) {
      pair.txFree[at] = tokens[i]!;
      if (++at === ringSize) at = 0;
    }
    pair.txFreeCount += n;
  }

  /**
   * Fills `burst` with up to burst.capacity received frames (virtio_net_hdr
   * stripped, mergeable buffers joined, the header's offload fields in the
   * burst's arrays) and returns how many. The frames stay valid until the next
   * receiveBurst() on the same queue, which re-posts their buffers to the device.
   *
   * Used buffers are reaped a whole ring at a time; those of a frame that does not
   * fit this burst (burst full, merge area full) stay reaped and are handed out,
   * in order, by the next call, so a frame spanning many buffers (a 64 KiB GUEST_TSO
   * frame spans 33 of 2 KiB) is never cut by the burst size.
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
    const tokens = pair.rxPendTokens;
    const lengths = pair.rxPendLengths;
    const c = pair.counters;
    const bytes = pair.rxBytes;
    const mergeArea = this.mergeArea;
    burst.buffer = bytes;
    let out = 0;
    let mergeUsed = 0;
    // Top up the pending window behind what earlier calls left there: a burst's worth, or
    // as many as the frame waiting at its head spans. (Reaping no more keeps the window,
    // and what is moved to its front after the burst, a burst long.)
    let n = pair.rxPendCount;
    const want = Math.min(tokens.length, Math.max(burst.capacity, pair.rxPendNeed));
    pair.rxPendNeed = 0;
    if (n === 0) n = rx.reap(tokens, lengths, want);
    else if (n < want) {
      const got = rx.reap(this.reapTokens, this.reapLengths, want - n);
      for (let k = 0; k < got; k++) {
        tokens[n + k] = this.reapTokens[k]!;
        lengths[n + k] = this.reapLengths[k]!;
      }
      n += got;
    }
    let i = 0;
    while (i < n && out < burst.capacity) {
      const slot = tokens[i]!;
      const len = lengths[i]!;
      const offset = slot * size;
      if (len < VIRTIO_NET_HDR_SIZE) {
        pair.rxLent[pair.rxLentCount++] = slot;
        c[NetCounter.rxErrors]!++;
        i++;
        continue;
      }
      const buffers = this.mrgRxbuf ? bytes[offset + HDR_NUM_BUFFERS]! | (bytes[offset + HDR_NUM_BUFFERS + 1]! << 8) : 1;
      if (buffers <= 1) {
        burst.offsets[out] = offset + VIRTIO_NET_HDR_SIZE;
        burst.lengths[out] = len - VIRTIO_NET_HDR_SIZE;
        pair.rxLent[pair.rxLentCount++] = slot;
        i++;
      } else {
        // §5.1.6.4: the frame continues in the next buffers-1 used buffers; join them in the merge area.
        if (i + buffers > n) {
          if (buffers > this.queueSize || (i === 0 && n === tokens.length)) {
            // More buffers than the ring holds, or the whole ring reaped and still short: never completes.
            for (; i < n; i++) pair.rxLent[pair.rxLentCount++] = tokens[i]!;
            c[NetCounter.rxErrors]!++;
          } else pair.rxPendNeed = buffers; // the rest is reaped and handed out by a later call
          break;
        }
        let total = len - VIRTIO_NET_HDR_SIZE;
        for (let k = 1; k < buffers; k++) total += lengths[i + k]!;
        if (total > mergeArea) {
          // Can never fit: drop it, with its buffers.
          for (let k = 0; k < buffers; k++) pair.rxLent[pair.rxLentCount++] = tokens[i + k]!;
          i += buffers;
          c[NetCounter.rxDrops]!++;
          continue;
        }
        if (mergeUsed + total > mergeArea) {
          pair.rxPendNeed = buffers; // next call, with an empty merge area
          break;
        }
        const start = pair.mergeOffset + mergeUsed;
        bytes.copyWithin(start, offset + VIRTIO_NET_HDR_SIZE, offset + len);
        let at = start + len - VIRTIO_NET_HDR_SIZE;
        pair.rxLent[pair.rxLentCount++] = slot;
        for (let k = 1; k < buffers; k++) {
          const s2 = tokens[i + k]!;
          const l2 = lengths[i + k]!;
          pair.rxLent[pair.rxLentCount++] = s2;
          bytes.copyWithin(at, s2 * size, s2 * size + l2);
          at += l2;
        }
        i += buffers;
        burst.offsets[out] = start;
        burst.lengths[out] = total;
        mergeUsed += total;
      }
      if (this.rxOffloads) {
        burst.flags[out] = bytes[offset]!;
        burst.gsoTypes[out] = bytes[offset + HDR_GSO_TYPE]!;
        burst.hdrLens[out] = bytes[offset + HDR_HDR_LEN]! | (bytes[offset + HDR_HDR_LEN + 1]! << 8);
        burst.gsoSizes[out] = bytes[offset + HDR_GSO_SIZE]! | (bytes[offset + HDR_GSO_SIZE + 1]! << 8);
        burst.csumStarts[out] = bytes[offset + HDR_CSUM_START]! | (bytes[offset + HDR_CSUM_START + 1]! << 8);
        burst.csumOffsets[out] = bytes[offset + HDR_CSUM_OFFSET]! | (bytes[offset + HDR_CSUM_OFFSET + 1]! << 8);
      } else {
        burst.flags[out] = 0;
        burst.gsoTypes[out] = 0;
      }
      c[NetCounter.rxPackets]!++;
      c[NetCounter.rxBytes]! += burst.lengths[out]!;
      out++;
    }
    if (i > 0) {
      tokens.copyWithin(0, i, n);
      lengths.copyWithin(0, i, n);
    }
    pair.rxPendCount = n - i;
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
    this.interrupting = true;
    this.pairs.forEach((pair, q) => {
      const burst = new RxBurst(burstCapacity);
      const drain = () => {
        for (;;) {
          // A 'frames' listener may call stopInterrupts(): the loop ends there, with traffic still flowing.
          while (this.interrupting && this.receiveBurst(q, burst) > 0) this.emit('frames', q, burst);
          if (!this.interrupting) return;
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

  /** Back to polling: calls are no longer watched and the device is asked not to send them. */
  stopInterrupts(): void {
    this.interrupting = false;
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
  bufferAreas(queue = 0): {
    /** The TX slots. */
    tx: GuestArea;
    /** The RX buffers and, at their end, the merge area. */
    rx: GuestArea;
    /** Bytes per RX buffer: buffer s is at rx.gpa + s * rxBufferSize. */
    rxBufferSize: number;
    /** Where the driver joins merged frames (its own writes), the tail of `rx`. */
    merge: GuestArea;
  } {
    const p = this.pair(queue);
    return {
      tx: { gpa: p.txPoolGpa, length: p.txBytes.length },
      rx: { gpa: p.rxPoolGpa, length: p.rxBytes.length },
      rxBufferSize: this.rxBufferSize,
      merge: { gpa: p.rxPoolGpa + p.mergeOffset, length: p.rxBytes.length - p.mergeOffset },
    };
  }

  /** The virtqueues of a pair, for inspection and fault-injection tests. */
  queues(queue = 0): {
    /** The receiveq. */
    rx: Virtqueue;
    /** The transmitq. */
    tx: Virtqueue;
  } {
    const p = this.pair(queue);
    return { rx: p.rx, tx: p.tx };
  }

  /** Disconnects and releases memory, eventfds and the client. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const pair of this.pairs) pair.txWaiter?.(false);
    this.device.close();
  }

  private pair(queue: number): QueuePair {
    const p = this.pairs[queue];
    if (p === undefined) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queue pair ${queue} does not exist (${this.queuePairs} configured)`);
    return p;
  }
}

/**
 * Distance between TX slots: the slot size in whole cache lines, made an odd number
 * of lines. At a power-of-two stride such as 2048 bytes the first lines of all slots
 * fall into a few cache sets (1/32 of them at 2 KiB), and the back-end core, which
 * reads the header and frame lines of every slot in turn, evicts them from its own
 * L1 and L2 while a burst is still being copied; an odd stride spreads them over
 * every set. The extra line per slot is never used.
 */
export function txSlotStride(txSlotSize: number): number {
  const lines = Math.ceil(txSlotSize / 64);
  return 64 * (lines % 2 === 1 ? lines : lines + 1);
}

/** The layer's options from the net ones: everything but the net fields; SET_MEM_TABLE as before the layer existed. */
function deviceOptions(o: VirtioNetOptions): VhostDeviceOptions {
  const { queuePairs: _qp, queueSize: _qs, mrgRxbuf: _m, csum: _c, tso: _tso, uso: _uso, guestTso: _gt, rxBufferSize: _r, txSlotSize: _t, mtu: _mtu, ...rest } = o;
  return { ...rest, memoryTable: 'table', inOrder: o.inOrder ?? true };
}
