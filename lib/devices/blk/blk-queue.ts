/**
 * The requests of one virtio-blk virtqueue (virtio 1.2 §5.2.6): encoding them
 * into descriptor chains, tracking each until the device returns it, checking
 * what the device returned, and handing the result to whoever asked.
 *
 * Slots. The queue has one request slot per ring entry, and the slot number is
 * the token the virtqueue gives back. Each slot owns, in guest memory, a 16-byte
 * header, a 1-byte status and 32 bytes of scratch (the 20 bytes of a GET_ID
 * answer or one DISCARD/WRITE_ZEROES segment), preallocated when the queue is
 * made, so a request in flight never allocates guest memory for its framing.
 * The chain of each slot is also kept in private arrays: after a reconnect to a
 * back-end without inflight tracking the request can be put in front of the new
 * device exactly as it was.
 *
 * Two ways in. The promise API (read, write, flush, discard, writeZeroes,
 * getId) takes data from JS or from caller-owned guest buffers and resolves
 * with the result; it may wait for a free slot or bounce space, allocates small
 * JS objects per request, and coalesces the publishes of one tick into one
 * kick. The batch API ({@link BlkBatch}) works on buffers it preallocated in
 * guest memory and reports completions into a caller-owned result array: it
 * allocates nothing per request, for benchmarks (blk-batch.ts).
 *
 * Completions arrive by polling (`poll()`, or a setImmediate loop while promise
 * requests are outstanding in 'poll' mode) or by the call eventfd ('interrupt'
 * mode): after draining, notifications are re-enabled and the used ring read
 * once more before sleeping (§2.7.10; a completion that lands in between would
 * otherwise wait forever, a hang seen with libvhost-user).
 *
 * Used length. The device reports how many bytes it wrote: data + 1 for IN,
 * 21 for GET_ID, 1 for everything else. By default a different length fails the
 * request (VHOST_BLK_USED_LEN) and a length beyond the chain's writable bytes
 * breaks the ring. With `strictUsedLen: false` both are counted
 * (`counters.usedLenViolations`, the ring's `usedLenClamped`) and the status byte
 * is believed, as Linux's virtio-blk does: it ignores the used length.
 *
 * Timeouts. A request not completed within `timeoutMs` is reported as
 * VHOST_BLK_TIMEOUT, so no caller waits forever. Its slot, its bounce buffer
 * and, for the batch API, its batch buffer stay owned by the device: the device
 * may still write into them. They are reused only when the device does complete
 * the request (counted in `counters.lateCompletions`, result dropped) or the
 * queue is rebound to a new ring or closed.
 */
import { performance } from 'node:perf_hooks';
import { VhostUserError } from '../../errors.js';
import { GuestHeap } from '../../memory/guest-heap.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { EventFd } from '../../transport/eventfd.js';
import type { Virtqueue } from '../../virtqueue/virtqueue.js';
import type { BlkBatch } from './blk-batch.js';
import { SECTOR_SIZE } from './blk-config.js';
import {
  BLK_DISCARD_SEGMENT_SIZE,
  BLK_REQ_HEADER_SIZE,
  BlkRequestError,
  checkRanges,
  checkTransfer,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  type BlkLimits,
  type BlkRange,
} from './blk-request.js';

/** How completions are noticed: the call eventfd, or polling. */
export type BlkCompletionMode = 'interrupt' | 'poll';

/** What the queue does with requests in flight when its ring is replaced (see {@link BlkQueue.rebind}). */
export type BlkInflightPolicy = 'resubmit' | 'fail';

/** How a {@link BlkQueue} is built (VirtioBlk builds one per virtqueue). */
export interface BlkQueueOptions {
  /** The guest memory the ring, headers, status bytes and bounce buffers live in. */
  memory: GuestMemory;
  /** The virtqueue requests go through. */
  vq: Virtqueue;
  /** Where the queue's own guest area starts: {@link BlkQueue.areaBytes} bytes from here, 64-byte aligned. */
  areaGpa: number;
  /** Bytes of bounce space for the promise API and batch buffers (part of the area). Default 4 MiB. */
  heapBytes?: number;
  /** The device's limits (from its config and features): checked before a request is sent. */
  limits: BlkLimits;
  /** Signals the ring's kick eventfd. */
  kick: () => void;
  /** The ring's call eventfd; without it only polling is possible. */
  call?: EventFd | null;
  /** Default 'interrupt' when `call` is given, else 'poll'. */
  mode?: BlkCompletionMode;
  /** Most data segments per request the ring can carry (indirect table size − 2, or ring size − 2). Default min(128, size − 2). */
  maxSegments?: number;
  /** A request not completed after this many ms fails with VHOST_BLK_TIMEOUT; 0: never. Default 30 000. */
  timeoutMs?: number;
  /** Default true: see the file comment, "Used length". */
  strictUsedLen?: boolean;
}

/** A range of guest memory. */
export interface BlkArea {
  /** Guest physical address of the first byte. */
  gpa: number;
  /** Bytes. */
  length: number;
}

/** Where a queue's request parts live (see {@link BlkQueue.areas}). */
export interface BlkQueueAreas {
  /** Request headers, one per slot (driver-written). */
  headers: BlkArea;
  /** Auxiliary slots, 32 bytes each. */
  aux: BlkArea;
  /** Status bytes, one per slot (device-written). */
  status: BlkArea;
  /** Bounce space (allocBuffer). */
  heap: BlkArea;
}

/** A buffer in guest memory: what the zero-copy scatter-gather calls take. */
export interface GuestBuffer {
  /** Guest physical address of the first byte. */
  gpa: number;
  /** Bytes in the buffer. */
  length: number;
  /** A view of the bytes (valid until the buffer is freed). */
  bytes: Uint8Array;
}

/** Counters of one queue. */
export interface BlkQueueCounters {
  /** Requests made available to the device. */
  submitted: number;
  /** Requests the device completed (OK or not). */
  completed: number;
  /** Requests completed with a status other than OK, or failed on their used length or status byte. */
  failed: number;
  /** Kick eventfd signals (only when the device asked for them: EVENT_IDX or NO_NOTIFY). */
  kicks: number;
  /** Call eventfd wake-ups. */
  interrupts: number;
  /** Used lengths that were not what the request type implies (only counted with strictUsedLen false). */
  usedLenViolations: number;
  /** Requests failed with VHOST_BLK_TIMEOUT. */
  timeouts: number;
  /** Requests completed after they timed out: their result was dropped. */
  lateCompletions: number;
  /** Requests put in front of a new ring by rebind('resubmit'). */
  resubmitted: number;
}

/** Batch result codes below 0 (0, 1, 2 are the device's VIRTIO_BLK_S_* status). */
/** The used length was not the one the request type implies (strictUsedLen). */
export const BLK_RESULT_USED_LEN = -1;
/** The status byte held a value other than OK, IOERR or UNSUPP. */
export const BLK_RESULT_BAD_STATUS = -2;
/** Not completed within the queue's timeout. */
export const BLK_RESULT_TIMEOUT = -3;
/** In flight when the back-end died, and failed by rebind('fail'). */
export const BLK_RESULT_ABORTED = -4;

const FREE = 0;
const PROMISE = 1;
const BATCH = 2;
/** Timed out, still owned by the device. */
const ABANDONED = 3;

/** A batch request's deadline before expire() first saw it (see submitBatch). */
const UNSTAMPED = -1;

/** Scratch per slot: GET_ID's 20 bytes or one discard segment. */
const AUX_SIZE = 32;
/** Written before a request goes out, so a status the device never wrote is seen. */
const STATUS_UNSET = 0xff;
const ALIGN = 64;
/** @internal Bounce buffers (and batch buffers) start on a page. */
export const BOUNCE_ALIGN = 4096;

/** A promise request waiting for, or holding, a slot. */
interface Job {
  type: number;
  sector: number;
  length: number;
  /** Data segments: offsets into the bounce buffer when `bounceLen` > 0, else GPAs. */
  segs: number[];
  lens: number[];
  bounceLen: number;
  bounce: number;
  /** DISCARD/WRITE_ZEROES segments to encode, null otherwise. */
  ranges: readonly BlkRange[] | null;
  unmap: boolean;
  table: number;
  /** Copies data into the bounce buffer before sending. */
  fill: ((bytes: Uint8Array) => void) | null;
  /** Produces the resolved value from the completed slot. */
  finish: (queue: BlkQueue, job: Job, slot: number) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  deadline: number;
}

/**
 * The virtio-blk requests of one virtqueue (virtio 1.2 §5.2.6): per-slot headers and status
 * bytes in guest memory, a tracker of what is in flight, the promise API, completions by polling
 * or the call eventfd, timeouts, and recovery after a lost back-end ({@link rebind}).
 */
export class BlkQueue {
  /** Ring entries: the most requests in flight. */
  readonly size: number;
  /** The guest memory the queue's buffers live in. */
  readonly memory: GuestMemory;
  /** Most data segments in one request (the ring's and seg_max's limit). */
  readonly maxSegments: number;
  /** The device's limits, checked before a request is sent. */
  readonly limits: BlkLimits;
  /** This queue's counters (live). */
  readonly counters: BlkQueueCounters = {
    submitted: 0,
    completed: 0,
    failed: 0,
    kicks: 0,
    interrupts: 0,
    usedLenViolations: 0,
    timeouts: 0,
    lateCompletions: 0,
    resubmitted: 0,
  };

  private vqRef: Virtqueue;
  private readonly heap: GuestHeap;
  private readonly kick: () => void;
  private readonly call: EventFd | null;
  private modeValue: BlkCompletionMode;
  private readonly timeoutMs: number;
  private readonly strict: boolean;

  private readonly headerGpa: number;
  private readonly auxGpa: number;
  private readonly statusGpa: number;
  private readonly headers: DataView;
  private readonly aux: Uint8Array;
  private readonly status: Uint8Array;

  private readonly freeSlots: Uint16Array;
  private freeTop: number;
  private readonly state: Uint8Array;
  private readonly types: Uint8Array;
  private readonly expected: Uint32Array;
  private readonly deadlines: Float64Array;
  private readonly jobs: (Job | null)[];
  private readonly batchIndex: Int32Array;
  /** The chain of each slot: `maxChain` entries per slot, `chainCount`/`chainReadable` per slot. */
  private readonly maxChain: number;
  private readonly chainGpa: Float64Array;
  private readonly chainLen: Uint32Array;
  private readonly chainCount: Uint16Array;
  private readonly chainReadable: Uint16Array;
  private readonly scratchGpa: Float64Array;
  private readonly scratchLen: Uint32Array;
  /** Reap scratch. */
  private readonly reapTokens: Uint32Array;
  private readonly reapLens: Uint32Array;

  private readonly waiting: Job[] = [];
  private promiseOutstanding = 0;
  private publishScheduled = false;
  private pollScheduled = false;
  private timer: NodeJS.Timeout | null = null;
  private brokenBy: VhostUserError | null = null;
  private closed = false;
  private batch: BlkBatch | null = null;
  /** The (type, length) of batch requests that passed checkTransfer (see submitBatch). */
  private fastType = -1;
  private fastLength = -1;
  private readonly capacityBytes: number;

  /** Guest bytes a queue of `size` slots needs, given its heap size. */
  static areaBytes(size: number, heapBytes = 4 * 1024 * 1024): number {
    return alignUp(size * (BLK_REQ_HEADER_SIZE + AUX_SIZE + 1), BOUNCE_ALIGN) + heapBytes;
  }

  constructor(options: BlkQueueOptions) {
    const { memory, vq } = options;
    this.memory = memory;
    this.vqRef = vq;
    this.size = vq.size;
    this.limits = options.limits;
    this.kick = options.kick;
    this.call = options.call ?? null;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.strict = options.strictUsedLen ?? true;
    this.capacityBytes = this.limits.capacity * SECTOR_SIZE;
    const ringCap = Math.max(1, options.maxSegments ?? Math.min(128, vq.size - 2));
    this.maxSegments = this.limits.segMax > 0 ? Math.min(this.limits.segMax, ringCap) : ringCap;
    this.maxChain = this.maxSegments + 2;
    const size = this.size;
    if (options.areaGpa % ALIGN !== 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `blk queue area 0x${options.areaGpa.toString(16)} is not ${ALIGN}-byte aligned`);
    this.headerGpa = options.areaGpa;
    this.auxGpa = this.headerGpa + size * BLK_REQ_HEADER_SIZE;
    this.statusGpa = this.auxGpa + size * AUX_SIZE;
    const heapGpa = options.areaGpa + alignUp(size * (BLK_REQ_HEADER_SIZE + AUX_SIZE + 1), BOUNCE_ALIGN);
    this.heap = new GuestHeap(heapGpa, options.heapBytes ?? 4 * 1024 * 1024);
    memory.regionOf(options.areaGpa, BlkQueue.areaBytes(size, this.heap.size));
    this.headers = memory.dataView(this.headerGpa, size * BLK_REQ_HEADER_SIZE);
    this.aux = memory.bytes(this.auxGpa, size * AUX_SIZE);
    this.status = memory.bytes(this.statusGpa, size);

    this.freeSlots = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.freeSlots[i] = size - 1 - i;
    this.freeTop = size;
    this.state = new Uint8Array(size);
    this.types = new Uint8Array(size);
    this.expected = new Uint32Array(size);
    this.deadlines = new Float64Array(size);
    this.jobs = new Array<Job | null>(size).fill(null);
    this.batchIndex = new Int32Array(size).fill(-1);
    this.chainGpa = new Float64Array(size * this.maxChain);
    this.chainLen = new Uint32Array(size * this.maxChain);
    this.chainCount = new Uint16Array(size);
    this.chainReadable = new Uint16Array(size);
    this.scratchGpa = new Float64Array(this.maxChain);
    this.scratchLen = new Uint32Array(this.maxChain);
    this.reapTokens = new Uint32Array(size);
    this.reapLens = new Uint32Array(size);

    this.modeValue = options.mode ?? (this.call ? 'interrupt' : 'poll');
    this.applyMode();
  }

  /** The virtqueue requests go through (replaced by {@link rebind}). */
  get vq(): Virtqueue {
    return this.vqRef;
  }

  /** How completions are noticed now: 'interrupt' (call eventfd on the event loop) or 'poll' (poll()). */
  get mode(): BlkCompletionMode {
    return this.modeValue;
  }

  /** Requests handed to the device and not yet returned (timed-out ones included). */
  get inFlight(): number {
    return this.size - this.freeTop;
  }

  /** Promise requests waiting for a slot or bounce space. */
  get queued(): number {
    return this.waiting.length;
  }

  /** The error that broke the queue (its ring broke, or it was closed), or null. */
  get error(): VhostUserError | null {
    return this.brokenBy;
  }

  /** Switches between the call eventfd and polling. */
  setMode(mode: BlkCompletionMode): void {
    if (mode === 'interrupt' && this.call === null) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'interrupt mode needs a call eventfd');
    this.modeValue = mode;
    this.applyMode();
  }

  // ------------------------------------------------------------ promise API

  /** Reads `length` bytes at byte `offset` into a new array (through bounce space; split into size_max segments). */
  read(offset: number, length: number): Promise<Uint8Array> {
    return this.readv(offset, this.splitBySizeMax(length));
  }

  /** Reads into consecutive segments of the given lengths (one descriptor each) and returns them. */
  readv(offset: number, segmentLengths: readonly number[]): Promise<Uint8Array> {
    return this.start(() => {
      const { segs, total, largest } = layout(segmentLengths);
      checkTransfer(this.limits, VIRTIO_BLK_T_IN, offset, total, segs.length, largest, this.maxSegments);
      return this.job(VIRTIO_BLK_T_IN, offset, total, segs, [...segmentLengths], total, null, finishRead);
    });
  }

  /** Writes `data` at byte `offset`. An array is a scatter-gather list: one descriptor per element; one array is split into size_max segments. */
  write(offset: number, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const parts = data instanceof Uint8Array ? this.splitData(data) : data;
    return this.start(() => {
      const { segs, total, largest } = layout(parts.map((p) => p.length));
      checkTransfer(this.limits, VIRTIO_BLK_T_OUT, offset, total, segs.length, largest, this.maxSegments);
      const fill = (bytes: Uint8Array) => {
        let at = 0;
        for (const p of parts) {
          bytes.set(p, at);
          at += p.length;
        }
      };
      return this.job(VIRTIO_BLK_T_OUT, offset, total, segs, parts.map((p) => p.length), total, fill, finishNothing);
    });
  }

  /** Zero-copy read into caller-owned guest buffers (one descriptor each). */
  readInto(offset: number, buffers: readonly GuestBuffer[]): Promise<void> {
    return this.startDirect(VIRTIO_BLK_T_IN, offset, buffers);
  }

  /** Zero-copy write from caller-owned guest buffers (one descriptor each). */
  writeFrom(offset: number, buffers: readonly GuestBuffer[]): Promise<void> {
    return this.startDirect(VIRTIO_BLK_T_OUT, offset, buffers);
  }

  /** VIRTIO_BLK_T_FLUSH: resolves once everything completed before it is durable (needs VIRTIO_BLK_F_FLUSH). */
  flush(): Promise<void> {
    return this.start(() => {
      if (!this.limits.flush) {
        throw new BlkRequestError('VHOST_FEATURE_NOT_NEGOTIATED', VIRTIO_BLK_T_FLUSH, 0, 0, 'VIRTIO_BLK_F_FLUSH was not negotiated', 'virtio 1.2 §5.2.6.2');
      }
      return this.job(VIRTIO_BLK_T_FLUSH, 0, 0, [], [], 0, null, finishNothing);
    });
  }

  /** VIRTIO_BLK_T_DISCARD of one or more byte ranges (needs VIRTIO_BLK_F_DISCARD). */
  discard(ranges: BlkRange | readonly BlkRange[]): Promise<void> {
    return this.startRanges(VIRTIO_BLK_T_DISCARD, ranges, false);
  }

  /** VIRTIO_BLK_T_WRITE_ZEROES of one or more byte ranges; `unmap` lets the device deallocate them (needs VIRTIO_BLK_F_WRITE_ZEROES). */
  writeZeroes(ranges: BlkRange | readonly BlkRange[], options: { unmap?: boolean } = {}): Promise<void> {
    return this.startRanges(VIRTIO_BLK_T_WRITE_ZEROES, ranges, options.unmap ?? false);
  }

  /** VIRTIO_BLK_T_GET_ID: the device's serial, up to 20 bytes, without trailing NULs. */
  getId(): Promise<string> {
    return this.start(() =>
      this.job(VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, [], [], 0, null, (q, _j, slot) => {
        const raw = q.aux.subarray(slot * AUX_SIZE, slot * AUX_SIZE + VIRTIO_BLK_ID_BYTES);
        const end = raw.indexOf(0);
        return new TextDecoder('latin1').decode(end < 0 ? raw : raw.subarray(0, end));
      }),
    );
  }

  /**
   * Where this queue's request parts live in guest memory (for migration tools
   * that must know who writes what): the 16-byte request headers (driver), the
   * auxiliary slots (discard tables written by the driver; GET_ID answers by the
   * device), the status bytes (device), and the bounce space.
   */
  areas(): BlkQueueAreas {
    const n = this.status.length;
    return {
      headers: { gpa: this.headerGpa, length: n * BLK_REQ_HEADER_SIZE },
      aux: { gpa: this.auxGpa, length: n * AUX_SIZE },
      status: { gpa: this.statusGpa, length: n },
      heap: { gpa: this.heap.base, length: this.heap.size },
    };
  }

  /** A buffer in this queue's bounce space for readInto/writeFrom; throws VHOST_BUSY when the space is exhausted. */
  allocBuffer(length: number): GuestBuffer {
    const gpa = this.heap.alloc(length, BOUNCE_ALIGN);
    if (gpa < 0) throw new VhostUserError('VHOST_BUSY', `no ${length} bytes free in the blk queue's bounce space (${this.heap.freeBytes} free)`);
    return { gpa, length, bytes: this.memory.bytes(gpa, length) };
  }

  /** Returns a buffer from allocBuffer(). The caller must not free one a request in flight still uses. */
  freeBuffer(buffer: GuestBuffer): void {
    this.heap.free(buffer.gpa);
  }

  // ------------------------------------------------------------ completions

  /** Takes every completion waiting in the used ring and dispatches it; returns how many. */
  poll(): number {
    if (this.brokenBy !== null) return 0;
    let total = 0;
    for (;;) {
      let n: number;
      const clamped = this.vqRef.usedLenClamped;
      try {
        n = this.vqRef.reap(this.reapTokens, this.reapLens, this.size);
        // A length the ring clamped to the writable bytes is a violation the length check below no longer sees.
        this.counters.usedLenViolations += this.vqRef.usedLenClamped - clamped;
      } catch (e) {
        this.breakWith(e instanceof VhostUserError ? e : new VhostUserError('VHOST_RING_BROKEN', String(e), { cause: e }));
        return total;
      }
      if (n === 0) break;
      for (let i = 0; i < n; i++) this.complete(this.reapTokens[i]!, this.reapLens[i]!);
      total += n;
    }
    if (total > 0 && this.waiting.length > 0) this.startWaiting();
    return total;
  }

  /**
   * Starts the ring over after its device was lost (a reconnect to a back-end
   * without inflight tracking). What the old ring shows as completed is taken
   * first. Then the ring is reset in place (Virtqueue.reset), or `replacement`
   * is used instead, and the requests still in flight are either put in front
   * of it again exactly as they were ('resubmit') or failed with
   * VHOST_BLK_ABORTED ('fail'); timed-out ones are released either way, as no
   * device owns them any longer. Nothing is published: the caller publishes
   * (publishNow) before it starts the ring. Returns the ring position the new
   * device must start from (its SET_VRING_BASE) and the counts.
   */
  rebind(
    policy: BlkInflightPolicy,
    replacement?: Virtqueue,
  ): {
    /** The ring position the new back-end starts from (SET_VRING_BASE). */
    base: number;
    /** Requests put on the new ring again. */
    resubmitted: number;
    /** Requests failed with VHOST_BLK_ABORTED. */
    failed: number;
  } {
    if (replacement !== undefined && replacement.size !== this.size) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `new ring of ${replacement.size} entries for a blk queue of ${this.size}`);
    }
    if (this.brokenBy === null) this.poll();
    const old = this.vqRef;
    if (replacement === undefined) old.reset();
    else this.vqRef = replacement;
    const vq = this.vqRef;
    const base = vq.vringBase;
    let resubmitted = 0;
    let failed = 0;
    for (let slot = 0; slot < this.size; slot++) {
      const st = this.state[slot];
      if (st === FREE) continue;
      if (st === ABANDONED) {
        this.release(slot);
        continue;
      }
      if (policy === 'resubmit' && this.brokenBy === null) {
        this.status[slot] = STATUS_UNSET;
        const base = slot * this.maxChain;
        if (!this.addSlotChain(vq, slot, base, this.chainCount[slot]!, this.chainReadable[slot]!)) {
          throw new VhostUserError('VHOST_INVALID_STATE', `the new ring has no room for the request in slot ${slot}`);
        }
        resubmitted++;
      } else {
        const job = this.jobs[slot];
        const sector = job?.sector ?? this.headerSector(slot);
        this.finishWith(slot, BLK_RESULT_ABORTED, () => new BlkRequestError('VHOST_BLK_ABORTED', this.types[slot]!, sector, job?.length ?? 0, `the back-end went away with the request in flight (ring ${old.index})`));
        failed++;
      }
    }
    this.counters.resubmitted += resubmitted;
    this.applyMode();
    return { base, resubmitted, failed };
  }

  /** Publishes what was added and kicks when the device asks for it. Called by the caller after rebind() once the ring is started. */
  publishNow(): void {
    this.publishScheduled = false;
    if (this.brokenBy !== null) return;
    try {
      if (this.vqRef.publish()) {
        this.counters.kicks++;
        this.kick();
      }
    } catch (e) {
      this.breakWith(e as VhostUserError);
    }
  }

  /** Fails everything in flight or waiting with `error` and refuses new requests. Does not free the ring. Idempotent. */
  close(error = new VhostUserError('VHOST_CLIENT_CLOSED', 'the blk queue was closed')): void {
    if (this.closed) return;
    this.closed = true;
    this.call?.unwatch();
    this.breakWith(error);
  }

  // ------------------------------------------------------------ internals

  private applyMode(): void {
    if (this.closed) return;
    if (this.modeValue === 'interrupt' && this.call !== null) {
      this.call.watch(() => {
        this.counters.interrupts++;
        this.drain();
      });
      this.drain();
    } else {
      this.call?.unwatch();
      if (this.brokenBy === null) this.vqRef.disableInterrupts();
      this.schedulePoll();
    }
  }

  /** Interrupt mode: drain, re-enable, and re-check before sleeping (§2.7.10). */
  private drain(): void {
    for (;;) {
      this.poll();
      if (this.brokenBy !== null) return;
      if (!this.vqRef.enableInterrupts()) return;
    }
  }

  private schedulePoll(): void {
    if (this.pollScheduled || this.modeValue !== 'poll' || this.promiseOutstanding === 0 || this.brokenBy !== null) return;
    this.pollScheduled = true;
    setImmediate(() => {
      this.pollScheduled = false;
      this.poll();
      this.schedulePoll();
    });
  }

  private schedulePublish(): void {
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    queueMicrotask(() => this.publishNow());
  }

  /** Runs the checks of `make` synchronously (a limit violation rejects before anything is sent), then starts or queues the job. */
  private start<T>(make: () => Job): Promise<T> {
    if (this.brokenBy !== null) return Promise.reject(this.brokenBy);
    let job: Job;
    try {
      job = make();
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    if (job.bounceLen > this.heap.size) {
      return Promise.reject(new BlkRequestError('VHOST_INVALID_ARGUMENT', job.type, job.sector, job.length, `needs ${job.bounceLen} bytes of bounce space; the queue has ${this.heap.size}`));
    }
    const p = new Promise<T>((resolve, reject) => {
      job.resolve = resolve as (v: unknown) => void;
      job.reject = reject;
    });
    this.promiseOutstanding++;
    job.deadline = this.timeoutMs > 0 ? performance.now() + this.timeoutMs : Infinity;
    try {
      if (this.waiting.length > 0 || !this.tryStart(job)) this.waiting.push(job);
    } catch (e) {
      this.promiseOutstanding--;
      job.reject(e);
      return p;
    }
    this.armTimer();
    this.schedulePoll();
    return p;
  }

  private job(type: number, offset: number, length: number, segs: number[], lens: number[], bounceLen: number, fill: Job['fill'], finish: Job['finish']): Job {
    return {
      type,
      sector: Math.floor(offset / SECTOR_SIZE),
      length,
      segs,
      lens,
      bounceLen,
      bounce: -1,
      ranges: null,
      unmap: false,
      table: -1,
      fill,
      finish,
      resolve: noop,
      reject: noop,
      deadline: Infinity,
    };
  }

  private startDirect(type: number, offset: number, buffers: readonly GuestBuffer[]): Promise<void> {
    return this.start(() => {
      let total = 0;
      let largest = 0;
      for (const b of buffers) {
        this.memory.regionOf(b.gpa, b.length);
        total += b.length;
        if (b.length > largest) largest = b.length;
      }
      checkTransfer(this.limits, type, offset, total, buffers.length, largest, this.maxSegments);
      return this.job(type, offset, total, buffers.map((b) => b.gpa), buffers.map((b) => b.length), 0, null, finishNothing);
    });
  }

  private startRanges(type: number, ranges: BlkRange | readonly BlkRange[], unmap: boolean): Promise<void> {
    const list: readonly BlkRange[] = Array.isArray(ranges) ? (ranges as readonly BlkRange[]) : [ranges as BlkRange];
    return this.start(() => {
      checkRanges(this.limits, type, list);
      const j = this.job(type, list[0]!.offset, list.reduce((a, r) => a + r.length, 0), [], [], 0, null, finishNothing);
      j.ranges = list;
      j.unmap = unmap;
      return j;
    });
  }

  /** Puts a job in the ring; false when a slot, bounce space or descriptors are missing (it waits then). */
  private tryStart(job: Job): boolean {
    if (this.freeTop === 0) return false;
    if (job.bounceLen > 0 && job.bounce < 0) {
      job.bounce = this.heap.alloc(job.bounceLen, BOUNCE_ALIGN);
      if (job.bounce < 0) return false;
      // A read's bounce space is cleared first: a device that reports success without writing
      // (qemu-storage-daemon's null-co does) must not hand back what an earlier request left there.
      if (job.fill !== null) job.fill(this.memory.bytes(job.bounce, job.bounceLen));
      else this.memory.bytes(job.bounce, job.bounceLen).fill(0);
    }
    const slot = this.freeSlots[this.freeTop - 1]!;
    const type = job.type;
    const base = slot * this.maxChain;
    let n = 0;
    this.chainGpa[base] = this.headerGpa + slot * BLK_REQ_HEADER_SIZE;
    this.chainLen[base] = BLK_REQ_HEADER_SIZE;
    n++;
    let written = 1;
    if (job.ranges !== null) {
      const count = job.ranges.length;
      let tableGpa = this.auxGpa + slot * AUX_SIZE;
      if (count * BLK_DISCARD_SEGMENT_SIZE > AUX_SIZE) {
        if (job.table < 0) job.table = this.heap.alloc(count * BLK_DISCARD_SEGMENT_SIZE, 16);
        if (job.table < 0) return false;
        tableGpa = job.table;
      }
      const dv = this.memory.dataView(tableGpa, count * BLK_DISCARD_SEGMENT_SIZE);
      for (let i = 0; i < count; i++) {
        const r = job.ranges[i]!;
        dv.setBigUint64(i * 16, BigInt(r.offset / SECTOR_SIZE), true);
        dv.setUint32(i * 16 + 8, r.length / SECTOR_SIZE, true);
        dv.setUint32(i * 16 + 12, job.unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0, true);
      }
      this.chainGpa[base + n] = tableGpa;
      this.chainLen[base + n] = count * BLK_DISCARD_SEGMENT_SIZE;
      n++;
    } else if (type === VIRTIO_BLK_T_GET_ID) {
      this.aux.fill(0, slot * AUX_SIZE, slot * AUX_SIZE + VIRTIO_BLK_ID_BYTES);
      this.chainGpa[base + n] = this.auxGpa + slot * AUX_SIZE;
      this.chainLen[base + n] = VIRTIO_BLK_ID_BYTES;
      n++;
      written += VIRTIO_BLK_ID_BYTES;
    } else {
      const off = job.bounceLen > 0 ? job.bounce : 0;
      for (let i = 0; i < job.segs.length; i++) {
        this.chainGpa[base + n] = off + job.segs[i]!;
        this.chainLen[base + n] = job.lens[i]!;
        n++;
      }
      if (type === VIRTIO_BLK_T_IN) written += job.length;
    }
    const readable = type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_GET_ID ? 1 : n;
    this.chainGpa[base + n] = this.statusGpa + slot;
    this.chainLen[base + n] = 1;
    n++;
    if (!this.enqueue(slot, type, job.sector, base, n, readable, written)) return false;
    this.freeTop--;
    this.state[slot] = PROMISE;
    this.jobs[slot] = job;
    this.deadlines[slot] = job.deadline;
    this.schedulePublish();
    return true;
  }

  /** Writes the header and adds the chain already in the slot's arrays. */
  private enqueue(slot: number, type: number, sector: number, base: number, n: number, readable: number, written: number): boolean {
    const h = slot * BLK_REQ_HEADER_SIZE;
    // §5.2.6: sector is used by IN and OUT only, 0 for every other type. Two u32 stores: no BigInt per request.
    const sec = type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_OUT ? sector : 0;
    this.headers.setUint32(h, type, true);
    this.headers.setUint32(h + 4, 0, true);
    this.headers.setUint32(h + 8, sec >>> 0, true);
    this.headers.setUint32(h + 12, Math.floor(sec / 0x100000000), true);
    this.status[slot] = STATUS_UNSET;
    let ok: boolean;
    try {
      ok = this.addSlotChain(this.vqRef, slot, base, n, readable);
    } catch (e) {
      this.breakWith(e as VhostUserError);
      throw e;
    }
    if (!ok) return false;
    this.types[slot] = type;
    this.chainCount[slot] = n;
    this.chainReadable[slot] = readable;
    this.expected[slot] = written;
    this.counters.submitted++;
    return true;
  }

  /** Adds the chain stored for `slot` (copied to scratch: addChain reads from index 0). */
  private addSlotChain(vq: Virtqueue, slot: number, base: number, n: number, readable: number): boolean {
    for (let i = 0; i < n; i++) {
      this.scratchGpa[i] = this.chainGpa[base + i]!;
      this.scratchLen[i] = this.chainLen[base + i]!;
    }
    return vq.addChain(this.scratchGpa, this.scratchLen, n, readable, slot);
  }

  private headerSector(slot: number): number {
    const h = slot * BLK_REQ_HEADER_SIZE;
    return this.headers.getUint32(h + 8, true) + this.headers.getUint32(h + 12, true) * 0x100000000;
  }

  private startWaiting(): void {
    while (this.waiting.length > 0 && this.brokenBy === null) {
      if (!this.tryStart(this.waiting[0]!)) return;
      this.waiting.shift();
    }
  }

  /** One used entry for `slot` with `len` bytes written. */
  private complete(slot: number, len: number): void {
    const st = this.state[slot];
    if (st === ABANDONED) {
      this.counters.lateCompletions++;
      this.release(slot);
      return;
    }
    this.counters.completed++;
    let result: number = this.status[slot]!;
    if (len !== this.expected[slot]) {
      if (this.strict) result = BLK_RESULT_USED_LEN;
      else this.counters.usedLenViolations++;
    }
    if (result !== BLK_RESULT_USED_LEN && result !== VIRTIO_BLK_S_OK && result !== VIRTIO_BLK_S_IOERR && result !== VIRTIO_BLK_S_UNSUPP) result = BLK_RESULT_BAD_STATUS;
    if (result !== VIRTIO_BLK_S_OK) this.counters.failed++;
    if (st === BATCH) {
      // The batch path: a few typed-array stores, no closure, no object.
      const i = this.batchIndex[slot]!;
      const b = this.batch;
      this.release(slot);
      b?.record(i, result);
      return;
    }
    this.finishWith(slot, result, result === VIRTIO_BLK_S_OK ? noError : this.resultError(slot, result, len));
  }

  /** Hands a final result to the promise or batch owning `slot` and frees it. */
  private finishWith(slot: number, result: number, error: VhostUserError | (() => VhostUserError)): void {
    const st = this.state[slot];
    if (st === BATCH) {
      const b = this.batch;
      const i = this.batchIndex[slot]!;
      this.release(slot);
      b?.record(i, result);
      return;
    }
    const job = this.jobs[slot]!;
    let value: unknown;
    let err: unknown = null;
    if (result === VIRTIO_BLK_S_OK) {
      try {
        value = job.finish(this, job, slot);
      } catch (e) {
        err = e;
      }
    } else {
      err = typeof error === 'function' ? error() : error;
    }
    this.release(slot);
    if (--this.promiseOutstanding === 0 && this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (err !== null) job.reject(err);
    else job.resolve(value);
  }

  private resultError(slot: number, result: number, len: number): VhostUserError {
    const job = this.jobs[slot];
    const type = this.types[slot]!;
    const sector = job?.sector ?? this.headerSector(slot);
    const length = job?.length ?? 0;
    switch (result) {
      case BLK_RESULT_USED_LEN:
        return new BlkRequestError('VHOST_BLK_USED_LEN', type, sector, length, `used len ${len}; the device must report ${this.expected[slot]} bytes written (status ${this.status[slot]})`, 'virtio 1.2 §2.7.8.1: len is the number of bytes written');
      case VIRTIO_BLK_S_IOERR:
        return new BlkRequestError('VHOST_BLK_IOERR', type, sector, length, 'the device answered VIRTIO_BLK_S_IOERR', 'virtio 1.2 §5.2.6');
      case VIRTIO_BLK_S_UNSUPP:
        return new BlkRequestError('VHOST_BLK_UNSUPP', type, sector, length, 'the device answered VIRTIO_BLK_S_UNSUPP', 'virtio 1.2 §5.2.6');
      default:
        return new BlkRequestError('VHOST_BLK_BAD_STATUS', type, sector, length, `status byte ${this.status[slot]} is not a VIRTIO_BLK_S_* value`, 'virtio 1.2 §5.2.6');
    }
  }

  /** Frees a slot and whatever bounce space its job held. */
  private release(slot: number): void {
    const job = this.jobs[slot];
    if (job !== null && job !== undefined) {
      if (job.bounce >= 0) this.heap.free(job.bounce);
      if (job.table >= 0) this.heap.free(job.table);
      job.bounce = -1;
      job.table = -1;
      this.jobs[slot] = null;
    }
    const b = this.batchIndex[slot]!;
    if (b >= 0) {
      this.batch?.release(b);
      this.batchIndex[slot] = -1;
    }
    this.state[slot] = FREE;
    this.freeSlots[this.freeTop++] = slot;
  }

  private armTimer(): void {
    if (this.timer !== null || this.timeoutMs <= 0 || this.promiseOutstanding === 0 || this.brokenBy !== null) return;
    let earliest = Infinity;
    for (let s = 0; s < this.size; s++) if (this.state[s] === PROMISE && this.deadlines[s]! < earliest) earliest = this.deadlines[s]!;
    for (const j of this.waiting) if (j.deadline < earliest) earliest = j.deadline;
    if (earliest === Infinity) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.expire(performance.now());
      this.armTimer();
    }, Math.max(1, earliest - performance.now()));
  }

  /** @internal Fails promise requests (in flight or waiting) and batch requests whose deadline passed (the timer and BlkBatch.poll call it). */
  expire(now: number): void {
    // What already completed is not a timeout.
    this.poll();
    for (let s = 0; s < this.size; s++) {
      const st = this.state[s];
      if (st !== PROMISE && st !== BATCH) continue;
      if (this.deadlines[s] === UNSTAMPED) {
        this.deadlines[s] = now + this.timeoutMs;
        continue;
      }
      if (this.deadlines[s]! > now) continue;
      this.counters.timeouts++;
      const type = this.types[s]!;
      const job = this.jobs[s];
      const sector = job?.sector ?? this.headerSector(s);
      const length = job?.length ?? 0;
      this.state[s] = ABANDONED;
      if (st === BATCH) {
        this.batch?.record(this.batchIndex[s]!, BLK_RESULT_TIMEOUT);
        continue;
      }
      this.promiseOutstanding--;
      job!.reject(new BlkRequestError('VHOST_BLK_TIMEOUT', type, sector, length, `not completed within ${this.timeoutMs} ms; its slot stays with the device until it completes or the queue is rebound`));
    }
    for (let i = 0; i < this.waiting.length; ) {
      const j = this.waiting[i]!;
      if (j.deadline > now) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.counters.timeouts++;
      this.promiseOutstanding--;
      if (j.bounce >= 0) this.heap.free(j.bounce);
      if (j.table >= 0) this.heap.free(j.table);
      j.reject(new BlkRequestError('VHOST_BLK_TIMEOUT', j.type, j.sector, j.length, `not sent within ${this.timeoutMs} ms: every slot is still owned by the device`));
    }
  }

  private breakWith(error: VhostUserError): void {
    if (this.brokenBy !== null) return;
    this.brokenBy = error;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (let s = 0; s < this.size; s++) {
      const st = this.state[s];
      if (st === PROMISE || st === BATCH) this.finishWith(s, BLK_RESULT_ABORTED, () => error);
      // Abandoned slots stay: the device may still write into them until the ring is gone.
    }
    for (const j of this.waiting.splice(0)) {
      this.promiseOutstanding--;
      j.reject(error);
    }
  }

  private splitBySizeMax(length: number): number[] {
    const max = this.limits.sizeMax;
    if (max <= 0 || length <= max) return [length];
    const out: number[] = [];
    for (let at = 0; at < length; at += max) out.push(Math.min(max, length - at));
    return out;
  }

  private splitData(data: Uint8Array): Uint8Array[] {
    const max = this.limits.sizeMax;
    if (max <= 0 || data.length <= max) return [data];
    const out: Uint8Array[] = [];
    for (let at = 0; at < data.length; at += max) out.push(data.subarray(at, Math.min(data.length, at + max)));
    return out;
  }

  // ------------------------------------------------------------ batch API (used by BlkBatch)

  /** @internal */
  attachBatch(b: BlkBatch): GuestHeap {
    if (this.batch !== null) throw new VhostUserError('VHOST_BUSY', 'this blk queue already has a batch');
    this.batch = b;
    return this.heap;
  }

  /** @internal */
  detachBatch(b: BlkBatch): void {
    if (this.batch === b) this.batch = null;
  }

  /** @internal Adds one batch request: a single bounce-free data area split by size_max. False when no slot or ring room. */
  submitBatch(index: number, type: number, offset: number, gpa: number, length: number): boolean {
    if (this.brokenBy !== null) throw this.brokenBy;
    const sizeMax = this.limits.sizeMax;
    // Everything but the offset depends on (type, length) only: checked in full once per pair, then only the extent.
    // offset >= 0 and % blkSize === 0 also refuse NaN, ±Infinity and fractions.
    if (type !== this.fastType || length !== this.fastLength || !(offset >= 0 && offset % this.limits.blkSize === 0 && offset + length <= this.capacityBytes)) {
      const segments = sizeMax > 0 ? Math.ceil(length / sizeMax) : 1;
      checkTransfer(this.limits, type, offset, length, segments, sizeMax > 0 && length > sizeMax ? sizeMax : length, this.maxSegments);
      this.fastType = type;
      this.fastLength = length;
    }
    if (this.freeTop === 0) return false;
    const slot = this.freeSlots[this.freeTop - 1]!;
    const base = slot * this.maxChain;
    this.chainGpa[base] = this.headerGpa + slot * BLK_REQ_HEADER_SIZE;
    this.chainLen[base] = BLK_REQ_HEADER_SIZE;
    let n = 1;
    for (let at = 0; at < length; n++) {
      const l = sizeMax > 0 && length - at > sizeMax ? sizeMax : length - at;
      this.chainGpa[base + n] = gpa + at;
      this.chainLen[base + n] = l;
      at += l;
    }
    const readable = type === VIRTIO_BLK_T_IN ? 1 : n;
    this.chainGpa[base + n] = this.statusGpa + slot;
    this.chainLen[base + n] = 1;
    n++;
    if (!this.enqueue(slot, type, offset / SECTOR_SIZE, base, n, readable, type === VIRTIO_BLK_T_IN ? length + 1 : 1)) return false;
    this.freeTop--;
    this.state[slot] = BATCH;
    this.batchIndex[slot] = index;
    // No clock read per request (in Node each one allocates a number): the first expire() scan that sees the
    // request stamps its deadline, so it times out no earlier than timeoutMs after submission, at most a scan later.
    this.deadlines[slot] = this.timeoutMs > 0 ? UNSTAMPED : Infinity;
    return true;
  }

  /**
   * @internal Arms the call eventfd for a batch wait: a call once `count` more
   * requests completed (coalesced with VIRTIO_RING_F_EVENT_IDX), at most the
   * number outstanding. Returns true when there is no point sleeping: that many
   * completions (or any, without event index) are waiting, nothing is
   * outstanding, or the queue is broken.
   */
  armWait(count: number): boolean {
    if (this.brokenBy !== null) return true;
    const out = this.vqRef.outstanding;
    if (out === 0) return true;
    try {
      return this.vqRef.enableInterruptsAfter(count < out ? (count < 1 ? 1 : count) : out);
    } catch (e) {
      this.breakWith(e as VhostUserError);
      return true;
    }
  }

  /** @internal After a batch wait: no calls while the caller polls (only a hint to the device). */
  disarmWait(): void {
    if (this.brokenBy === null && this.modeValue === 'poll') this.vqRef.disableInterrupts();
  }

  /** @internal The call eventfd, for BlkBatch.wait. */
  get callFd(): EventFd | null {
    return this.call;
  }

  /** @internal Whether any batch request is in flight (not timed out). */
  batchInFlight(): boolean {
    for (let s = 0; s < this.size; s++) if (this.state[s] === BATCH) return true;
    return false;
  }
}

function layout(lengths: readonly number[]): { segs: number[]; total: number; largest: number } {
  const segs: number[] = [];
  let total = 0;
  let largest = 0;
  for (const l of lengths) {
    if (!Number.isSafeInteger(l) || l <= 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `segment length ${l} is not a positive integer`);
    segs.push(total);
    total += l;
    if (l > largest) largest = l;
  }
  return { segs, total, largest };
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function noop(): void {}

/** Job.finish of a bounce read (module-level: no closure per request). */
function finishRead(q: BlkQueue, j: Job): Uint8Array {
  return q.memory.read(j.bounce, j.bounceLen);
}

/** Job.finish of requests that resolve with nothing. */
function finishNothing(): undefined {
  return undefined;
}

/** finishWith's error for a successful result (never used). */
const noError = new VhostUserError('VHOST_INVALID_STATE', 'no error');
