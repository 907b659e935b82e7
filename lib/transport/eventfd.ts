/**
 * An eventfd (eventfd(2)): the kick, call and err notifiers of a vring. The
 * counter is read and written through one 8-byte buffer per eventfd, so
 * signalling allocates nothing.
 */
import { constants as osConstants } from 'node:os';
import { C, closeFd, errno, libc, syscallError } from '../native/libc.js';
import { shim, UV_READABLE, type FdWatcherHandle } from '../native/shim.js';

export class EventFd {
  readonly fd: number;
  private readonly counter = new BigUint64Array(1);
  private readonly counterBytes = new Uint8Array(this.counter.buffer);
  private watcher: FdWatcherHandle | null = null;
  private closed = false;

  constructor() {
    const fd = libc.eventfd(0, C.EFD_NONBLOCK | C.EFD_CLOEXEC);
    if (fd < 0) throw syscallError('eventfd');
    this.fd = fd;
  }

  /** Adds 1 to the counter, waking whoever polls the fd. */
  signal(): void {
    this.counter[0] = 1n;
    if (libc.write(this.fd, this.counterBytes, 8) !== 8 && errno() !== osConstants.errno.EAGAIN) throw syscallError('write(eventfd)');
  }

  /** Reads and resets the counter; 0 when nothing was signalled. */
  consume(): bigint {
    if (libc.read(this.fd, this.counterBytes, 8) !== 8) {
      if (errno() === osConstants.errno.EAGAIN) return 0n;
      throw syscallError('read(eventfd)');
    }
    return this.counter[0]!;
  }

  /** Calls `handler` with the consumed count whenever the eventfd is signalled. */
  watch(handler: (count: bigint) => void): void {
    this.watcher ??= new shim.FdWatcher(this.fd, () => {
      const n = this.consume();
      if (n > 0n) handler(n);
    });
    this.watcher.start(UV_READABLE);
  }

  unwatch(): void {
    this.watcher?.stop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    closeFd(this.fd);
  }
}
