/**
 * The reference back-end: a strict, careful vhost-user back-end in TypeScript,
 * serving one connection after another on a listening socket. It exists so the
 * library, its CLI and its conformance tests have a back-end that needs no DPDK
 * or QEMU, and one that holds the front-end to the spec.
 *
 * Every message is checked against the request table (lib/protocol/requests.ts):
 * header flags (version 1, no REPLY bit), a known request code, the payload
 * through its codec (exact size, field rules), the fd count per the table's fd
 * rule, the protocol feature the request needs, ring indexes, ring sizes, ring
 * addresses that translate into mapped memory. Any violation closes the
 * connection (reported by a 'violation' event with a stable VhostErrorCode) and
 * the back-end waits for the next connection. Requests that are well-formed but
 * refused (SET_CONFIG) are answered with a non-zero REPLY_ACK when asked.
 *
 * Ring state (vhost-user.rst, 'Starting and stopping rings'): rings begin
 * stopped and disabled; SET_VRING_ENABLE enables (or all are enabled at
 * SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES); a ring starts at
 * SET_VRING_KICK (processing what is already available) and GET_VRING_BASE
 * stops it.
 *
 * Devices: 'net' is a loopback (a frame sent on TX ring 2i+1 comes back on RX
 * ring 2i); 'blk' serves a memfd or a file as a virtio-blk disk, and alone offers
 * INFLIGHT_SHMFD (inflight-area.ts): a blk back-end started on the same disk
 * resubmits what a killed one left in flight.
 *
 * This file owns the listener, the connection loop, the events and close();
 * a connection is a BackendSession (backend-session.ts), its rings Vrings
 * (vring-state.ts), the devices live in devices/.
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserError } from '../errors.js';
import { VirtioFeature, bit, type DeviceKind } from '../protocol/constants.js';
import { Connection } from '../transport/connection.js';
import { UnixListener } from '../transport/unix-listener.js';
import { BackendSession } from './backend-session.js';
import { FaultPlan, formatFault, type Fault } from './faults.js';
import { BlkDevice, BlkImage, type BlkStats } from './devices/blk.js';
import type { DeviceModel } from './devices/device.js';
import { NetLoopback, type NetStats } from './devices/net-loopback.js';
import { violationInfo, type ViolationInfo } from './violation.js';

export type { ViolationInfo } from './violation.js';
export { FAULT_NAMES, MESSAGE_FAULTS, RING_FAULTS, parseFault, formatFault, type Fault, type FaultName } from './faults.js';
export type { NetStats } from './devices/net-loopback.js';
export type { BlkStats } from './devices/blk.js';

/** How {@link ReferenceBackend.listen} sets up the back-end. */
export interface ReferenceBackendOptions {
  /** The device served: 'net' (a loopback: TX frames come back on RX) or 'blk' (a disk). */
  device: DeviceKind;
  /** Virtqueues offered (GET_QUEUE_NUM): net default 8 (4 queue pairs), blk default 1. */
  queueNum?: number;
  /** blk: serve this file (opened read-write; its size is the capacity). */
  blkImage?: string;
  /** blk without an image: a memfd of this many bytes (default 64 MiB). */
  blkSize?: number;
  /** blk: open the image read-only and offer VIRTIO_BLK_F_RO (writes are answered IOERR). */
  blkReadOnly?: boolean;
  /** blk: hold every request this many ms before serving it, so requests are caught in flight (default 0). */
  blkLatencyMs?: number;
  /** blk: offer INFLIGHT_SHMFD (default true). */
  blkInflight?: boolean;
  /** GET_MAX_MEM_SLOTS (default 32, as libvhost-user). */
  maxMemSlots?: number;
  /** net: MAC reported in config space (default 52:54:00:12:34:56). */
  mac?: Uint8Array;
  /** net: MTU in config space (default 1500). */
  mtu?: number;
  /**
   * net: false makes a faulty device for conformance tests, which acts on TX offload
   * headers without checking them (see NetLoopbackOptions.checkOffloads). Default true.
   */
  netCheckOffloads?: boolean;
  /** Faults to inject (faults.ts): each fires once, on its first match, unless `repeat`. */
  faults?: readonly Fault[];
  /** Pending accept wait before re-arming (ms); only for tests. */
  acceptTimeoutMs?: number;
}

/** Events of a {@link ReferenceBackend}. */
export interface ReferenceBackendEvents {
  /** A front-end connected; `id` numbers connections from 1. */
  connection: (id: number) => void;
  /** The connection ended: `reason` is undefined for an orderly disconnect by the front-end. */
  disconnect: (id: number, reason: VhostUserError | undefined) => void;
  /** The front-end broke a rule; the connection is closed right after. */
  violation: (info: ViolationInfo) => void;
  /** A well-formed request was refused (nack sent when REPLY_ACK asked for one). */
  refused: (info: ViolationInfo) => void;
  /** A fault was injected on connection `connection` (`text` as `--fault` takes it). */
  fault: (connection: number, fault: Fault, text: string) => void;
  /** An internal failure (listener error); the back-end keeps going when it can. */
  error: (error: VhostUserError) => void;
}

/** Transport feature bits offered by every device. */
const COMMON_FEATURES =
  bit(VirtioFeature.VIRTIO_F_VERSION_1) |
  bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(VirtioFeature.VIRTIO_RING_F_EVENT_IDX) |
  bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) |
  bit(VirtioFeature.VIRTIO_F_RING_PACKED) |
  bit(VirtioFeature.VHOST_F_LOG_ALL);

/**
 * The project's own vhost-user back-end, in this process: serves one front-end at a time on a
 * listening socket, strictly (a rule broken is a `violation`), with fault injection.
 */
export class ReferenceBackend extends EventEmitter<ReferenceBackendEvents> {
  /** The listening socket's path. */
  readonly path: string;
  /** The device served. */
  readonly device: DeviceKind;
  /** Virtqueues offered with GET_QUEUE_NUM. */
  readonly queueNum: number;
  /** Memory slots offered with GET_MAX_MEM_SLOTS. */
  readonly maxMemSlots: number;
  /** Virtio feature bits offered with GET_FEATURES. */
  readonly features: bigint;
  /** Net loopback counters (device 'net'). */
  readonly net: NetStats = { frames: 0, bytes: 0, txErrors: 0, rxTooSmall: 0, offloadDrops: 0, checksummed: 0, segmented: 0 };
  /** Disk counters (device 'blk'). */
  readonly blk: BlkStats = { reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, errors: 0 };
  /** Connections served so far (including the current one). */
  connections = 0;
  private readonly listener: UnixListener;
  private readonly image: BlkImage | null;
  private readonly model: DeviceModel;
  private readonly acceptTimeoutMs: number;
  /** The faults planned and which fired. */
  readonly faults: FaultPlan;
  private session: BackendSession | null = null;
  private closed = false;

  private constructor(path: string, options: ReferenceBackendOptions, image: BlkImage | null) {
    super();
    this.path = path;
    this.device = options.device;
    this.queueNum = options.queueNum ?? (options.device === 'net' ? 8 : 1);
    if (!Number.isInteger(this.queueNum) || this.queueNum < 1 || this.queueNum > 256 || (this.device === 'net' && this.queueNum % 2 !== 0)) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queueNum ${this.queueNum} must be in 1..256 (even for net)`);
    }
    this.maxMemSlots = options.maxMemSlots ?? 32;
    this.image = image;
    this.model =
      this.device === 'net'
        ? new NetLoopback(this.queueNum, options.mac ?? Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56), options.mtu ?? 1500, this.net, { checkOffloads: options.netCheckOffloads ?? true })
        : new BlkDevice(image!, this.queueNum, this.blk, { latencyMs: options.blkLatencyMs ?? 0, inflight: options.blkInflight ?? true });
    this.features = COMMON_FEATURES | this.model.features;
    this.acceptTimeoutMs = options.acceptTimeoutMs ?? 2 ** 31 - 1;
    this.faults = new FaultPlan(options.faults ?? [], (f, connection) => this.emit('fault', connection, f, formatFault(f)));
    this.listener = UnixListener.listen(path);
  }

  /** Listens on `path` and serves connections one after another until close(). */
  static listen(path: string, options: ReferenceBackendOptions): ReferenceBackend {
    if (options.device !== 'net' && options.device !== 'blk') {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `device must be 'net' or 'blk', not ${String(options.device)}`);
    }
    const image = options.device === 'blk' ? BlkImage.open(options) : null;
    let backend: ReferenceBackend;
    try {
      backend = new ReferenceBackend(path, options, image);
    } catch (e) {
      image?.close();
      throw e;
    }
    void backend.acceptLoop();
    return backend;
  }

  /** blk: capacity in bytes. */
  get capacity(): number {
    return this.image?.capacity ?? 0;
  }

  /** True while a front-end is connected. */
  get isServing(): boolean {
    return this.session !== null;
  }

  /** Config space of the device (GET_CONFIG). */
  configSpace(): Uint8Array {
    return this.model.configSpace();
  }

  /** Stops listening, closes the current connection and releases every fd, mapping and watcher. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.session?.close();
    this.session = null;
    this.listener.close();
    this.image?.close();
  }

  private async acceptLoop(): Promise<void> {
    while (!this.closed) {
      let stream;
      try {
        stream = await this.listener.accept(this.acceptTimeoutMs);
      } catch (e) {
        const err = e as VhostUserError;
        if (this.closed || err.code === 'VHOST_CLIENT_CLOSED') return;
        if (err.code === 'VHOST_CONNECT_TIMEOUT') continue;
        this.emit('error', err);
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      if (this.closed) {
        stream.close();
        return;
      }
      const id = ++this.connections;
      const conn = new Connection(stream);
      const session = new BackendSession(id, conn, {
        features: this.features,
        queueNum: this.queueNum,
        maxMemSlots: this.maxMemSlots,
        device: this.model,
        faults: this.faults,
        report: (kind, info) => (kind === 'violation' ? this.emit('violation', info) : this.emit('refused', info)),
      });
      this.session = session;
      const done = new Promise<void>((resolve) => {
        conn.on('close', (error) => {
          // Header-level violations are found by the framing layer (version, flags, size).
          if (error && error.code !== 'VHOST_DISCONNECTED' && !session.closed) {
            this.emit('violation', violationInfo(id, error));
          }
          session.close();
          this.emit('disconnect', id, error && error.code === 'VHOST_DISCONNECTED' ? undefined : error);
          resolve();
        });
      });
      conn.on('message', (m) => session.onMessage(m));
      this.emit('connection', id);
      await done;
      if (this.session === session) this.session = null;
    }
  }
}
