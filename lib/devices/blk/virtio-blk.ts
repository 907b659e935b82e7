/**
 * A virtio-blk driver (virtio 1.2 §5.2) for vhost-user-blk back-ends
 * (qemu-storage-daemon, SPDK, DPDK's vhost_blk), on the device layer
 * (VhostDevice) shared with VirtioNet: the layer negotiates, shares memory,
 * starts, stops and reconnects the rings; this file only decides the blk
 * features, reads the config, and puts one BlkQueue on every ring.
 *
 *   const blk = await VirtioBlk.open('/run/vhost-blk.sock', { queues: 2 });
 *   await blk.write(0, data);
 *   const back = await blk.read(0, data.length);
 *   blk.close();
 *
 * Requests in flight when the back-end dies: with the inflight area
 * (INFLIGHT_SHMFD, asked for whenever offered) the new back-end resubmits them
 * itself. Without it (qemu-storage-daemon 7.2) the driver does, or fails them
 * with VHOST_BLK_ABORTED, as option `inflightPolicy` says: the ring is reset,
 * what the dead back-end completed is taken first, and the rest goes in front
 * of the new back-end exactly as it was. Either way nothing completes twice.
 */
import { EventEmitter } from 'eventemitter3';
import type { VhostUserClient } from '../../client/vhost-user-client.js';
import { VhostUserError } from '../../errors.js';
import { bit, hasBit, ProtocolFeature, VirtioBlkFeature as F, VirtioFeature } from '../../protocol/constants.js';
import { VhostDevice, type DeviceReconnectReport, type RingKind, type VhostDeviceOptions } from '../vhost-device.js';
import { PackedVirtqueue } from '../../virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../virtqueue/split-queue.js';
import type { VirtqueueOptions } from '../../virtqueue/virtqueue.js';
import { BLK_CONFIG_SIZE, decodeBlkConfig, type BlkConfig } from './blk-config.js';
import { BlkBatch } from './blk-batch.js';
import { BlkQueue, type BlkCompletionMode, type BlkInflightPolicy, type BlkQueueCounters, type GuestBuffer } from './blk-queue.js';
import { blkLimits, type BlkLimits, type BlkRange } from './blk-request.js';

export interface VirtioBlkOptions extends VhostDeviceOptions {
  /** Request queues (rings); more than 1 needs VIRTIO_BLK_F_MQ and num_queues. Default 1. */
  queues?: number;
  /** Entries per ring. Default 256. */
  queueSize?: number;
  /** Completions by the call eventfd ('interrupt', default) or by polling. */
  mode?: BlkCompletionMode;
  /**
   * A request not completed after this many ms fails with VHOST_BLK_TIMEOUT; 0: never.
   * Default 30 000. (`timeoutMs` is the deadline for each vhost-user reply.)
   */
  requestTimeoutMs?: number;
  /**
   * Fail a request whose used length is not what its type implies (default true).
   * false counts it instead (BlkQueueCounters.usedLenViolations) and believes the
   * status byte, as Linux does; a length beyond the writable bytes is then clamped
   * by the ring instead of breaking it (unless `createQueue` is given).
   */
  strictUsedLen?: boolean;
  /** Bounce space per queue for the copying calls and batches. Default 4 MiB. */
  heapBytes?: number;
  /** Most data segments per request (indirect table size − 2). Default 128, and at most seg_max. */
  maxSegments?: number;
  /** Negotiate VIRTIO_RING_F_INDIRECT_DESC when offered (default true): a request takes one ring entry. */
  indirect?: boolean;
  /** After a reconnect to a back-end without an inflight area: resubmit (default) or fail the requests in flight. */
  inflightPolicy?: BlkInflightPolicy;
}

/** What a reconnect did, the layer's report plus what happened to requests in flight. */
export interface BlkReconnectReport extends DeviceReconnectReport {
  /** Requests put in front of the new back-end by this driver (no inflight area). */
  resubmitted: number;
  /** Requests failed with VHOST_BLK_ABORTED (inflightPolicy 'fail'). */
  failed: number;
  /** Whether the back-end got the inflight area and resubmits by itself. */
  inflight: boolean;
}

/** Events of a {@link VirtioBlk}. */
export interface VirtioBlkEvents {
  /** The back-end is gone for good: every request in flight failed with this error. */
  disconnect: (error: VhostUserError) => void;
  /** With `reconnect`: the back-end went away; requests wait. */
  reconnecting: (cause: VhostUserError) => void;
  /** With `reconnect`: a back-end serves the rings again. */
  reconnect: (report: BlkReconnectReport) => void;
}

/** Device feature bits this driver acknowledges when offered (§5.2.3). */
const WANTED =
  bit(F.VIRTIO_BLK_F_SIZE_MAX) |
  bit(F.VIRTIO_BLK_F_SEG_MAX) |
  bit(F.VIRTIO_BLK_F_BLK_SIZE) |
  bit(F.VIRTIO_BLK_F_FLUSH) |
  bit(F.VIRTIO_BLK_F_TOPOLOGY) |
  bit(F.VIRTIO_BLK_F_CONFIG_WCE) |
  bit(F.VIRTIO_BLK_F_MQ) |
  bit(F.VIRTIO_BLK_F_DISCARD) |
  bit(F.VIRTIO_BLK_F_WRITE_ZEROES) |
  bit(F.VIRTIO_BLK_F_RO);

/**
 * A virtio-blk driver (virtio 1.2 §5.2) over vhost-user, on the shared device layer: open it on a
 * back-end's socket with {@link VirtioBlk.open}, then read, write, flush, discard, write zeroes and
 * get the id through the promise API, or through {@link VirtioBlk.createBatch} where nothing may be
 * allocated per request. Requests outside the device's limits are refused before anything is sent.
 */
export class VirtioBlk extends EventEmitter<VirtioBlkEvents> {
  /** The device layer underneath (its client, memory, rings). */
  readonly device: VhostDevice;
  /** Features acknowledged with SET_FEATURES. */
  readonly features: bigint;
  /** The config space read with GET_CONFIG, decoded with the negotiated features. */
  readonly config: BlkConfig;
  /** What requests are checked against before they are sent. */
  readonly limits: BlkLimits;
  /** Ring layout. */
  readonly ring: RingKind;
  private readonly list: BlkQueue[];
  private pendingReport: { resubmitted: number; failed: number } = { resubmitted: 0, failed: 0 };
  private closed = false;

  private constructor(device: VhostDevice, config: BlkConfig, limits: BlkLimits, queues: BlkQueue[]) {
    super();
    this.device = device;
    this.features = device.features;
    this.config = config;
    this.limits = limits;
    this.ring = device.ring;
    this.list = queues;
    device.on('reconnecting', (cause) => this.emit('reconnecting', cause));
    device.on('reconnect', (report) => {
      const r = this.pendingReport;
      this.pendingReport = { resubmitted: 0, failed: 0 };
      this.emit('reconnect', { ...report, ...r, inflight: device.inflightShared });
    });
    device.on('disconnect', (error) => {
      for (const q of this.list) q.close(error);
      this.emit('disconnect', error);
    });
  }

  /**
   * Connects to a vhost-user-blk back-end on `target` (a socket path or a
   * connected client), negotiates, reads the config (the back-end must offer
   * the CONFIG protocol feature), sets the rings up and starts the device.
   */
  static async open(target: string | VhostUserClient, options: VirtioBlkOptions = {}): Promise<VirtioBlk> {
    // Lenient: a used length beyond the writable bytes is clamped and counted by the ring rather than breaking it.
    const createQueue =
      options.createQueue ??
      (options.strictUsedLen === false
        ? (kind: RingKind, o: VirtqueueOptions) => (kind === 'packed' ? new PackedVirtqueue({ ...o, clampUsedLen: true }) : new SplitVirtqueue({ ...o, clampUsedLen: true }))
        : undefined);
    const device = await VhostDevice.open(target, { ...options, createQueue, inflight: options.inflight ?? true });
    const queues: BlkQueue[] = [];
    try {
      return await VirtioBlk.setUp(device, options, queues);
    } catch (e) {
      for (const q of queues) q.close();
      device.close();
      throw e;
    }
  }

  private static async setUp(device: VhostDevice, options: VirtioBlkOptions, queues: BlkQueue[]): Promise<VirtioBlk> {
    const count = options.queues ?? 1;
    const size = options.queueSize ?? 256;
    if (!Number.isInteger(count) || count < 1) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queues must be 1 or more, not ${count}`);
    const wanted = WANTED | ((options.indirect ?? true) ? bit(VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC) : 0n);
    const features = device.selectFeatures({ wanted });
    if (!device.client.hasProtocolFeature(ProtocolFeature.CONFIG)) {
      throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'the back-end does not offer the CONFIG protocol feature: the disk size cannot be read');
    }
    // Before SET_FEATURES, as QEMU's vhost-user-blk realize does (vhost_dev_get_config after vhost_dev_init).
    const config = decodeBlkConfig(await device.client.getConfig(0, BLK_CONFIG_SIZE), features);
    const limits = blkLimits(config, features);
    if (count > 1) {
      if (!hasBit(features, F.VIRTIO_BLK_F_MQ)) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${count} queues asked for; the back-end does not offer VIRTIO_BLK_F_MQ`);
      if (config.numQueues !== null && count > config.numQueues) {
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${count} queues asked for; the device has num_queues ${config.numQueues}`);
      }
    }
    const indirect = hasBit(features, VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC);
    let segments = options.maxSegments ?? 128;
    if (limits.segMax > 0) segments = Math.min(segments, limits.segMax);
    if (!indirect) segments = Math.min(segments, size - 2);
    const heapBytes = options.heapBytes ?? 4 * 1024 * 1024;
    const area = BlkQueue.areaBytes(size, heapBytes);
    device.allocate({ count, size, indirectMax: indirect ? segments + 2 : 0, dataBytes: count * area });
    device.queues.forEach((dq, i) => {
      queues.push(
        new BlkQueue({
          memory: device.memory,
          vq: dq.vq,
          areaGpa: device.dataGpa + i * area,
          heapBytes,
          limits,
          kick: () => dq.kick.signal(),
          call: dq.call,
          mode: options.mode ?? 'interrupt',
          maxSegments: segments,
          timeoutMs: options.requestTimeoutMs,
          strictUsedLen: options.strictUsedLen,
        }),
      );
    });
    let blk: VirtioBlk | null = null;
    await device.start({
      resumeBase: (vq) => {
        const q = queues[vq.index]!;
        // The new back-end was given the inflight area and resubmits what it had; the ring resumes past the last completion.
        if (device.inflightShared) return vq.resumeBase();
        const r = q.rebind(options.inflightPolicy ?? 'resubmit');
        if (blk) {
          blk.pendingReport.resubmitted += r.resubmitted;
          blk.pendingReport.failed += r.failed;
        }
        q.publishNow();
        return r.base;
      },
    });
    blk = new VirtioBlk(device, config, limits, queues);
    return blk;
  }

  /** Number of request queues. */
  get queueCount(): number {
    return this.list.length;
  }

  /** Disk size in bytes. */
  get capacityBytes(): number {
    return this.config.capacityBytes;
  }

  /** VIRTIO_BLK_F_RO was negotiated. */
  get readOnly(): boolean {
    return this.limits.readOnly;
  }

  /** Whether the back-end was given an inflight area (INFLIGHT_SHMFD) at its last start. */
  get inflightShared(): boolean {
    return this.device.inflightShared;
  }

  /** Request queue `index` (its own promise API, batches, counters). */
  queue(index = 0): BlkQueue {
    const q = this.list[index];
    if (q === undefined) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `queue ${index} does not exist (${this.list.length} configured)`);
    return q;
  }

  /** Reads `length` bytes at byte `offset` on queue `queue`. */
  read(offset: number, length: number, queue = 0): Promise<Uint8Array> {
    return this.queue(queue).read(offset, length);
  }

  /** Writes `data` (or a scatter-gather list of parts) at byte `offset` on queue `queue`. */
  write(offset: number, data: Uint8Array | readonly Uint8Array[], queue = 0): Promise<void> {
    return this.queue(queue).write(offset, data);
  }

  /** Zero-copy read into guest buffers from queue(q).allocBuffer(). */
  readInto(offset: number, buffers: readonly GuestBuffer[], queue = 0): Promise<void> {
    return this.queue(queue).readInto(offset, buffers);
  }

  /** Zero-copy write from guest buffers from queue(q).allocBuffer(). */
  writeFrom(offset: number, buffers: readonly GuestBuffer[], queue = 0): Promise<void> {
    return this.queue(queue).writeFrom(offset, buffers);
  }

  /** VIRTIO_BLK_T_FLUSH (needs VIRTIO_BLK_F_FLUSH). */
  flush(queue = 0): Promise<void> {
    return this.queue(queue).flush();
  }

  /** VIRTIO_BLK_T_DISCARD (needs VIRTIO_BLK_F_DISCARD). */
  discard(ranges: BlkRange | readonly BlkRange[], queue = 0): Promise<void> {
    return this.queue(queue).discard(ranges);
  }

  /** VIRTIO_BLK_T_WRITE_ZEROES, with UNMAP when `unmap` (needs VIRTIO_BLK_F_WRITE_ZEROES). */
  writeZeroes(ranges: BlkRange | readonly BlkRange[], options: { unmap?: boolean; queue?: number } = {}): Promise<void> {
    return this.queue(options.queue ?? 0).writeZeroes(ranges, options);
  }

  /** VIRTIO_BLK_T_GET_ID: the device serial. */
  getId(queue = 0): Promise<string> {
    return this.queue(queue).getId();
  }

  /** Preallocated request buffers on queue `queue` for benchmarks (see BlkBatch). */
  createBatch(queue: number, count: number, bufferBytes: number): BlkBatch {
    return new BlkBatch(this.queue(queue), count, bufferBytes);
  }

  /** Counters summed over every queue. */
  totals(): BlkQueueCounters {
    const out = { ...this.list[0]!.counters };
    for (const q of this.list.slice(1)) for (const k of Object.keys(out) as (keyof BlkQueueCounters)[]) out[k] += q.counters[k];
    return out;
  }

  /** Fails what is in flight with VHOST_CLIENT_CLOSED, disconnects and frees memory, eventfds and the client. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.list) q.close();
    this.device.close();
  }
}
