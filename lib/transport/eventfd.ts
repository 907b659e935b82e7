/**
 * An eventfd (eventfd(2)): the kick, call and err notifiers of a vring, made here
 * (`new EventFd()`) or received from the peer and owned from then on
 * (`EventFd.adopt(fd)`). The counter is read and written through one 8-byte
 * buffer, so signalling allocates nothing; watching uses a uv_poll watcher, so an
 * idle eventfd holds no thread.
 *
 * A received fd may not be an eventfd at all (a hostile or buggy peer): reads and
 * writes that fail report it instead of throwing, and a watcher whose fd cannot
 * be read stops rather than spin on a level-triggered readiness.
 */
import { constants as osConstants } from 'node:os';
import { VhostUserError } from '../errors.js';
import { C, closeFd, errno, libc, syscallError } from '../native/libc.js';
import { shim, UV_READABLE, type FdWatcherHandle } from '../native/shim.js';

/** struct pollfd: int fd, short events, short revents. */
const POLLFD_SIZE = 8;
let pollfds = new Uint8Array(4 * POLLFD_SIZE);
let pollfdView = new DataView(pollfds.buffer);

/** An eventfd (eventfd(2)) for a vring's kick, call or err: signalled, waited on and watched without allocating. */
export class EventFd {
  /** The descriptor, owned by this object until close(). */
  readonly fd: number;
  private readonly counter = new BigUint64Array(1);
  private readonly counterBytes = new Uint8Array(this.counter.buffer);
  private readonly counterWords = new Uint32Array(this.counter.buffer);
  private watcher: FdWatcherHandle | null = null;
  private closed = false;

  /** Creates a new non-blocking eventfd, or takes ownership of `fd` (see adopt()). */
  constructor(fd?: number) {
    if (fd === undefined) {
      fd = libc.eventfd(0, C.EFD_NONBLOCK | C.EFD_CLOEXEC);
      if (fd < 0) throw syscallError('eventfd');
    }
    this.fd = fd;
  }

  /** Owns an fd that came from the peer: close() closes it. */
  static adopt(fd: number): EventFd {
    return new EventFd(fd);
  }

  /** Whether close() ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds 1 to the counter, waking whoever polls the fd. False if the write failed (not an eventfd, closed). */
  signal(): boolean {
    if (this.closed) return false;
    this.counter[0] = 1n;
    return libc.write(this.fd, this.counterBytes, 8) === 8 || errno() === osConstants.errno.EAGAIN;
  }

  /** Reads and resets the counter; 0 when nothing was signalled or the fd cannot be read. */
  consume(): bigint {
    return this.readCounter() ?? 0n;
  }

  /** consume() without a BigInt: whether the counter was non-zero. */
  private consumeQuiet(): boolean {
    if (this.closed || libc.read(this.fd, this.counterBytes, 8) !== 8) return false;
    return (this.counterWords[0]! | this.counterWords[1]!) !== 0;
  }

  /**
   * null when the fd is not behaving as an eventfd: read(2) failed for a reason
   * other than EAGAIN, or read a zero counter, which an eventfd never does (it
   * says EAGAIN instead) but /dev/zero, always readable, would forever.
   */
  private readCounter(): bigint | null {
    if (this.closed) return 0n;
    if (libc.read(this.fd, this.counterBytes, 8) !== 8) return errno() === osConstants.errno.EAGAIN ? 0n : null;
    const n = this.counter[0]!;
    return n === 0n ? null : n;
  }

  /**
   * Calls `handler` with the consumed count whenever the eventfd is signalled.
   * Throws VHOST_INVALID_ARGUMENT when the fd cannot be polled at all (epoll
   * refuses regular files and some devices).
   */
  watch(handler: (count: bigint) => void): void {
    if (this.closed) return;
    try {
      this.watcher ??= new shim.FdWatcher(this.fd, (status) => {
        const n = status < 0 ? null : this.readCounter();
        if (n === null) this.watcher?.stop();
        else if (n > 0n) handler(n);
      });
      this.watcher.start(UV_READABLE);
    } catch (cause) {
      this.watcher?.close();
      this.watcher = null;
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `fd ${this.fd} cannot be watched: ${(cause as Error).message}`, { cause });
    }
  }

  /** Stops the watcher started by watch(); the eventfd stays open. */
  unwatch(): void {
    this.watcher?.stop();
  }

  /**
   * Blocks this thread in poll(2) until one of the first `count` of `fds` (null: skipped) is signalled or `timeoutMs`
   * passes (0: just look; negative or Infinity: no limit), then consumes the counter of each
   * one signalled. Returns how many were, 0 on timeout. For a loop that owns its
   * thread (a benchmark, a worker): the event loop does not run meanwhile, so
   * nothing else in this thread is served. Allocates nothing once `pollfds` has
   * grown to the largest set. EINTR counts as a timeout.
   */
  static waitAny(fds: readonly (EventFd | null)[], count: number, timeoutMs: number): number {
    const n = count;
    if (pollfds.length < n * POLLFD_SIZE) {
      pollfds = new Uint8Array(n * POLLFD_SIZE);
      pollfdView = new DataView(pollfds.buffer);
    }
    for (let i = 0; i < n; i++) {
      const f = fds[i];
      pollfdView.setInt32(i * POLLFD_SIZE, !f || f.closed ? -1 : f.fd, true);
      pollfdView.setInt16(i * POLLFD_SIZE + 4, C.POLLIN, true);
      pollfdView.setInt16(i * POLLFD_SIZE + 6, 0, true);
    }
    // poll(2) takes an int: no limit for a negative or non-finite timeout, at most 2^31 - 1 ms.
    const ms = timeoutMs >= 0 && timeoutMs < 0x7fffffff ? Math.ceil(timeoutMs) : timeoutMs >= 0x7fffffff ? 0x7fffffff : -1;
    const rc = libc.poll(pollfds, n, ms);
    if (rc <= 0) return 0;
    let signalled = 0;
    for (let i = 0; i < n; i++) {
      if (pollfdView.getInt16(i * POLLFD_SIZE + 6, true) === 0) continue;
      if (fds[i]!.consumeQuiet()) signalled++;
    }
    return signalled;
  }

  /** Stops watching and closes the fd. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    closeFd(this.fd);
  }
}
