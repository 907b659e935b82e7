/**
 * An eventfd received from the other side (a vring's kick, call or err fd),
 * owned from then on: watched with a uv_poll FdWatcher (no threads), its
 * counter drained with read(2), signalled with write(2). close() stops the
 * watcher and closes the fd.
 */
import { constants as osConstants } from 'node:os';
import { closeFd, errno, libc } from '../native/libc.js';
import { shim, UV_READABLE, type FdWatcherHandle } from '../native/shim.js';

export class FdNotifier {
  private readonly counter = new BigUint64Array(1);
  private readonly counterBytes = new Uint8Array(this.counter.buffer);
  private watcher: FdWatcherHandle | null = null;
  private closed = false;

  constructor(readonly fd: number) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds 1 to the counter. Returns false if the write failed (peer gone, not an eventfd). */
  signal(): boolean {
    if (this.closed) return false;
    this.counter[0] = 1n;
    return libc.write(this.fd, this.counterBytes, 8) === 8 || errno() === osConstants.errno.EAGAIN;
  }

  /** Reads and resets the counter; 0 when nothing was signalled (or the read failed). */
  drain(): bigint {
    return this.readCounter() ?? 0n;
  }

  /** null when read(2) failed for a reason other than EAGAIN (not an eventfd, or gone). */
  private readCounter(): bigint | null {
    if (this.closed) return 0n;
    if (libc.read(this.fd, this.counterBytes, 8) !== 8) return errno() === osConstants.errno.EAGAIN ? 0n : null;
    return this.counter[0]!;
  }

  /** Calls `handler` whenever the fd becomes readable, after draining it. */
  watch(handler: (count: bigint) => void): void {
    if (this.closed) return;
    this.watcher ??= new shim.FdWatcher(this.fd, (status) => {
      if (status < 0) {
        this.watcher?.stop();
        return;
      }
      const n = this.readCounter();
      if (n === null) this.watcher?.stop(); // readable but unreadable: stop rather than spin
      else if (n > 0n) handler(n);
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
