/**
 * A non-blocking AF_UNIX stream socket on Node's event loop: bytes plus SCM_RIGHTS
 * fds in both directions. Readiness comes from a uv_poll watcher (native shim),
 * so an idle socket holds no thread.
 */
import { lstatSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { VhostUserError } from '../errors.js';
import { C, closeFd, errno, errnoName, libc, syscallError } from '../native/libc.js';
import { shim, UV_READABLE, UV_WRITABLE, type FdWatcherHandle } from '../native/shim.js';
import { MsgScratch, SCRATCH_DATA_CAPACITY, closeAll, type RecvResult } from './msg-scratch.js';
import { sockaddrUn } from './sockaddr.js';

const { EAGAIN, EINTR, ENOENT, ECONNREFUSED, EINPROGRESS } = osConstants.errno;

/** How {@link UnixStream.connect} waits for a back-end that is not listening yet. */
export interface ConnectOptions {
  /** Give up after this long (default 5000 ms). */
  timeoutMs?: number;
  /** First retry delay; doubles up to maxDelayMs (defaults 10 and 500 ms). */
  initialDelayMs?: number;
  /** Longest pause between retries. */
  maxDelayMs?: number;
  /** Stops retrying (VHOST_CONNECT_FAILED); a pending pause between retries ends at once. */
  signal?: AbortSignal;
}

/** errnos that mean "the back-end is not listening yet": retried until the deadline. */
const CONNECT_RETRYABLE = new Set([ENOENT, ECONNREFUSED, EAGAIN, EINTR]);

interface Pending {
  bytes: Uint8Array;
  /** Our own duplicates, closed once sent, so the caller may close its fds right away. */
  fds: number[];
}

/** A non-blocking AF_UNIX stream socket carrying bytes and SCM_RIGHTS fds, watched on Node's event loop. */
export class UnixStream {
  /** The socket, owned by this object until close(). */
  readonly fd: number;
  private readonly scratch = new MsgScratch();
  private watcher: FdWatcherHandle | null = null;
  private readonly queue: Pending[] = [];
  private readableHandler: (() => void) | null = null;
  private errorHandler: ((e: VhostUserError) => void) | null = null;
  private closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Takes ownership of an already connected, non-blocking socket fd. */
  static adopt(fd: number): UnixStream {
    return new UnixStream(fd);
  }

  /**
   * Connects to a listening back-end, retrying ENOENT/ECONNREFUSED with
   * exponential backoff until the deadline.
   */
  static async connect(path: string, options: ConnectOptions = {}): Promise<UnixStream> {
    const addr = sockaddrUn(path);
    const deadline = Date.now() + (options.timeoutMs ?? 5000);
    let delay = options.initialDelayMs ?? 10;
    for (;;) {
      const fd = libc.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0);
      if (fd < 0) throw syscallError('socket');
      const rc = libc.connect(fd, addr, addr.length);
      const err = rc === 0 ? 0 : errno();
      if (rc === 0 || err === EINPROGRESS) return new UnixStream(fd);
      closeFd(fd);
      if (!CONNECT_RETRYABLE.has(err) || existsButNotSocket(path)) {
        throw new VhostUserError('VHOST_CONNECT_FAILED', `connect ${path}: ${errnoName(err)}`, { errno: errnoName(err) });
      }
      if (options.signal?.aborted) {
        throw new VhostUserError('VHOST_CONNECT_FAILED', `connect ${path}: aborted`, { cause: options.signal.reason });
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VhostUserError('VHOST_CONNECT_TIMEOUT', `connect ${path}: ${errnoName(err)} until the ${options.timeoutMs ?? 5000} ms deadline`, {
          errno: errnoName(err),
        });
      }
      // An abort ends the pause early (the timer is cleared) and is reported at the top of the loop.
      await sleep(Math.min(delay, left), undefined, { signal: options.signal }).catch(() => undefined);
      if (options.signal?.aborted) {
        throw new VhostUserError('VHOST_CONNECT_FAILED', `connect ${path}: aborted`, { cause: options.signal.reason });
      }
      delay = Math.min(delay * 2, options.maxDelayMs ?? 500);
    }
  }

  /** Whether close() ran. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Called (level-triggered) while bytes are waiting; read them with recv(). */
  onReadable(handler: () => void, onError: (e: VhostUserError) => void): void {
    this.readableHandler = handler;
    this.errorHandler = onError;
    this.updateWatch();
  }

  /** The bytes of the last recv() land here, at the offset passed to recv(). */
  get recvBuffer(): Uint8Array {
    return this.scratch.data;
  }

  /** One recvmsg(2) of at most `length` bytes into {@link UnixStream.recvBuffer} at `offset`, with any fds. */
  recv(offset: number, length: number): RecvResult {
    return this.scratch.recvmsg(this.fd, offset, length);
  }

  /**
   * Queues one message. Sends right away when the socket has room; otherwise keeps
   * a copy and duplicates of the fds, and finishes when the socket is writable.
   * The fds ride on the first byte, as the spec requires.
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) throw new VhostUserError('VHOST_DISCONNECTED', 'socket is closed');
    if (bytes.length > SCRATCH_DATA_CAPACITY) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `message of ${bytes.length} bytes exceeds ${SCRATCH_DATA_CAPACITY}`);
    }
    if (this.queue.length === 0) {
      const sent = this.trySend(bytes, fds);
      if (sent === bytes.length) return;
      if (sent > 0) {
        this.queue.push({ bytes: bytes.slice(sent), fds: [] });
        this.updateWatch();
        return;
      }
    }
    this.queue.push({ bytes: bytes.slice(), fds: fds.map(dupFd) });
    this.updateWatch();
  }

  /** Returns bytes sent (0 when the socket is full); throws on a real error. */
  private trySend(bytes: Uint8Array, fds: readonly number[]): number {
    this.scratch.data.set(bytes, 0);
    const n = this.scratch.sendmsg(this.fd, 0, bytes.length, fds);
    if (n >= 0) return n;
    const err = this.scratch.lastErrno;
    if (err === EAGAIN || err === EINTR) return 0;
    throw new VhostUserError('VHOST_DISCONNECTED', `sendmsg: ${errnoName(err)}`, { errno: errnoName(err) });
  }

  private flush(): void {
    while (this.queue.length) {
      const head = this.queue[0]!;
      const sent = this.trySend(head.bytes, head.fds);
      if (sent === 0) return;
      closeAll(head.fds);
      head.fds = [];
      if (sent < head.bytes.length) {
        head.bytes = head.bytes.subarray(sent);
        return;
      }
      this.queue.shift();
    }
    this.updateWatch();
  }

  private updateWatch(): void {
    if (this.closed) return;
    const events = (this.readableHandler ? UV_READABLE : 0) | (this.queue.length ? UV_WRITABLE : 0);
    if (events === 0) {
      this.watcher?.stop();
      return;
    }
    this.watcher ??= new shim.FdWatcher(this.fd, (status, ev) => this.onEvent(status, ev));
    this.watcher.start(events);
  }

  private onEvent(status: number, events: number): void {
    if (this.closed) return;
    try {
      if (status < 0) throw new VhostUserError('VHOST_SOCKET_ERROR', `poll error ${status} on fd ${this.fd}`);
      if (events & UV_WRITABLE) this.flush();
      if (!this.closed && events & UV_READABLE) this.readableHandler?.();
    } catch (e) {
      const err = e instanceof VhostUserError ? e : new VhostUserError('VHOST_SOCKET_ERROR', String(e), { cause: e });
      this.errorHandler?.(err);
    }
  }

  /** Idempotent: stops watching, closes the fd, the scratch mapping and queued fds. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    for (const p of this.queue) closeAll(p.fds);
    this.queue.length = 0;
    closeFd(this.fd);
    this.scratch.close();
  }
}

/** connect() to a regular file fails with ECONNREFUSED, which would otherwise be retried until the deadline. */
function existsButNotSocket(path: string): boolean {
  try {
    return !lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

function dupFd(fd: number): number {
  const copy = libc.fcntl(fd, C.F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw syscallError('fcntl(F_DUPFD_CLOEXEC)', 'VHOST_SYSCALL', undefined, `fd ${fd}`);
  return copy;
}
