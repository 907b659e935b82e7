/**
 * The batch API of a BlkQueue, for benchmarks: request buffers preallocated in
 * the queue's guest bounce space, submit N, kick once, poll completions into a
 * caller-owned result array. Nothing is allocated per request.
 */
import { performance } from 'node:perf_hooks';
import { VhostUserError } from '../../errors.js';
import type { GuestHeap } from '../../memory/guest-heap.js';
import { EventFd } from '../../transport/eventfd.js';
import { BOUNCE_ALIGN, type BlkQueue } from './blk-queue.js';
import type { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from './blk-request.js';

/** Idle polls between two deadline checks (see poll()). */
const IDLE_POLLS_PER_CLOCK = 64;

/** BlkBatch.wait's fd list, reused. */
const waitFds: (EventFd | null)[] = [];

/** Reusable completion records for {@link BlkBatch.poll}. */
export class BlkBatchResults {
  /** Batch buffer index of each completion. */
  readonly index: Int32Array;
  /** VIRTIO_BLK_S_* or a BLK_RESULT_* code. */
  readonly status: Int32Array;
  constructor(
    /** Most results one poll() or wait() can report. */
    readonly capacity: number,
  ) {
    this.index = new Int32Array(capacity);
    this.status = new Int32Array(capacity);
  }
}

/**
 * Preallocated request buffers in one queue's guest bounce space, for
 * benchmarks: submit() and poll() allocate nothing. Buffer `i` is busy from
 * submit(i) until its completion (or timeout, then until the device returns it
 * anyway) has been reported by poll().
 */
export class BlkBatch {
  /** Number of buffers. */
  readonly count: number;
  /** Bytes per buffer. */
  readonly bufferBytes: number;
  private readonly queue: BlkQueue;
  private readonly heap: GuestHeap;
  private readonly gpas: Float64Array;
  private readonly views: Uint8Array[];
  private readonly busy: Uint8Array;
  private readonly doneIndex: Int32Array;
  private readonly doneStatus: Int32Array;
  private doneHead = 0;
  private doneCount = 0;
  private nextExpiry = 0;
  private idlePolls = 0;
  /** A wait timed out: the next idle poll checks the deadlines. */
  private expireDue = false;
  private closed = false;

  constructor(queue: BlkQueue, count: number, bufferBytes: number) {
    if (!Number.isInteger(count) || count < 1 || count > queue.size) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `a batch of ${count} buffers on a queue of ${queue.size}`);
    }
    this.queue = queue;
    this.count = count;
    this.bufferBytes = bufferBytes;
    this.heap = queue.attachBatch(this);
    this.gpas = new Float64Array(count);
    this.views = [];
    try {
      for (let i = 0; i < count; i++) {
        const gpa = this.heap.alloc(bufferBytes, BOUNCE_ALIGN);
        if (gpa < 0) throw new VhostUserError('VHOST_BUSY', `no room for ${count} × ${bufferBytes} bytes in the queue's bounce space (${queue.memory.totalSize} bytes of guest memory)`);
        this.gpas[i] = gpa;
        this.views.push(queue.memory.bytes(gpa, bufferBytes));
      }
    } catch (e) {
      for (let i = 0; i < this.views.length; i++) this.heap.free(this.gpas[i]!);
      queue.detachBatch(this);
      throw e;
    }
    this.busy = new Uint8Array(count);

    this.doneIndex = new Int32Array(count);
    this.doneStatus = new Int32Array(count);
  }

  /** Buffer `i` (data to write, or where a read lands). */
  buffer(i: number): Uint8Array {
    return this.views[i]!;
  }

  /** Whether buffer `i` is owned by the device. */
  isBusy(i: number): boolean {
    return this.busy[i] === 1;
  }

  /**
   * Adds a read (VIRTIO_BLK_T_IN) or write (VIRTIO_BLK_T_OUT) of `length` bytes
   * (default the buffer size) at byte `offset` using buffer `i`. Not visible to
   * the device until kick(). False when the ring is full. Throws the limit
   * errors of the promise API, and VHOST_BUSY when buffer `i` is in flight.
   */
  submit(i: number, type: typeof VIRTIO_BLK_T_IN | typeof VIRTIO_BLK_T_OUT, offset: number, length = this.bufferBytes): boolean {
    if (this.busy[i] !== 0) throw new VhostUserError('VHOST_BUSY', `batch buffer ${i} is in flight`);
    if (length > this.bufferBytes) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${length} bytes do not fit batch buffers of ${this.bufferBytes}`);
    if (!this.queue.submitBatch(i, type, offset, this.gpas[i]!, length)) return false;
    this.busy[i] = 1;
    return true;
  }

  /**
   * Publishes what submit() added and kicks the device only if it asked for a
   * kick (VIRTIO_RING_F_EVENT_IDX avail_event, or VRING_USED_F_NO_NOTIFY clear).
   */
  kick(): void {
    this.queue.publishNow();
  }

  /**
   * Sleeps until the device has completed `minCompletions` requests on any of
   * `batches` (fewer if fewer are outstanding there) or `timeoutMs` passes, then
   * returns; poll() each batch afterwards. Interrupt coalescing: with
   * VIRTIO_RING_F_EVENT_IDX (split rings) the device is asked, through
   * used_event, to call once after that many completions rather than after each
   * one (virtio 1.2 §2.7.10.2); without it (or on packed rings), on the next one.
   * After arming, the used rings are read again, so completions that raced in
   * return at once instead of being slept on (§2.7.10).
   *
   * The thread blocks in poll(2) on the queues' call eventfds: no CPU is spent
   * waiting, and the event loop does not run meanwhile (use it from a loop that
   * owns its thread, such as a benchmark or a worker). The queues must be in
   * 'poll' mode (VirtioBlk option `mode: 'poll'`), so no event-loop watcher
   * competes for the call. Returns true when it slept and was called, false when
   * it returned without sleeping or timed out. Allocates nothing.
   */
  static wait(batches: readonly BlkBatch[], minCompletions: number, timeoutMs: number): boolean {
    let armed = 0;
    let ready = false;
    for (let k = 0; k < batches.length; k++) {
      const b = batches[k]!;
      const q = b.queue;
      const call = q.callFd;
      if (call === null || q.mode !== 'poll') {
        throw new VhostUserError('VHOST_INVALID_STATE', "BlkBatch.wait needs queues in 'poll' mode with a call eventfd");
      }
      if (b.doneCount > 0 || q.armWait(minCompletions)) ready = true;
      waitFds[armed++] = call;
    }
    let called = false;
    if (!ready && armed > 0) called = EventFd.waitAny(waitFds, armed, timeoutMs) > 0;
    const timedOut = !ready && !called;
    for (let k = 0; k < batches.length; k++) {
      const b = batches[k]!;
      b.queue.disarmWait();
      if (timedOut) b.expireDue = true;
    }
    for (let k = 0; k < armed; k++) waitFds[k] = null;
    return called;
  }

  /**
   * Reaps the queue and copies up to `results.capacity` batch completions into
   * `results`; returns how many. Status 0 is success. When nothing completed,
   * checks the deadlines now and then (every 64th idle poll, and the first after
   * a wait() that timed out), reporting BLK_RESULT_TIMEOUT: a request times out
   * no earlier than the queue's timeout after submission, and at most a check later.
   */
  poll(results: BlkBatchResults): number {
    if (this.queue.poll() === 0 && this.doneCount === 0 && (++this.idlePolls >= IDLE_POLLS_PER_CLOCK || this.expireDue)) {
      // A clock read allocates a number in Node: only every IDLE_POLLS_PER_CLOCK idle polls, or after a wait timed out.
      this.idlePolls = 0;
      this.expireDue = false;
      const now = performance.now();
      if (now >= this.nextExpiry) {
        this.nextExpiry = now + 10;
        this.queue.expire(now);
      }
    }
    const n = this.doneCount < results.capacity ? this.doneCount : results.capacity;
    const index = results.index;
    const status = results.status;
    let head = this.doneHead;
    for (let k = 0; k < n; k++) {
      index[k] = this.doneIndex[head]!;
      status[k] = this.doneStatus[head]!;
      if (++head === this.count) head = 0;
    }
    this.doneHead = head;
    this.doneCount -= n;
    return n;
  }

  /** Frees the buffers. Throws VHOST_BUSY while any is in flight. */
  close(): void {
    if (this.closed) return;
    if (this.busy.some((b) => b !== 0)) throw new VhostUserError('VHOST_BUSY', 'batch buffers are still in flight');
    this.closed = true;
    for (let i = 0; i < this.count; i++) this.heap.free(this.gpas[i]!);
    this.queue.detachBatch(this);
  }

  /** @internal A result for buffer `i` (the buffer stays busy after a timeout). */
  record(i: number, status: number): void {
    let at = this.doneHead + this.doneCount;
    if (at >= this.count) at -= this.count;
    this.doneIndex[at] = i;
    this.doneStatus[at] = status;
    this.doneCount++;
  }

  /** @internal The device gave buffer `i` back. */
  release(i: number): void {
    this.busy[i] = 0;
  }
}
