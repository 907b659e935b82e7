/**
 * Server mode: the frontend listens and the back-end connects (DPDK's `client=1`,
 * a reconnecting back-end). One connection is accepted at a time.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { VhostUserError } from '../errors.js';
import { C, closeFd, errno, errnoName, libc, syscallError } from '../native/libc.js';
import { shim, UV_READABLE, type FdWatcherHandle } from '../native/shim.js';
import { sockaddrUn } from './sockaddr.js';
import { UnixStream } from './unix-stream.js';

/** A listening AF_UNIX socket for back-ends that connect to the front-end (server mode, DPDK `client=1`). */
export class UnixListener {
  /** The listening socket. */
  readonly fd: number;
  /** The socket's path; removed by close(). */
  readonly path: string;
  private watcher: FdWatcherHandle | null = null;
  private closed = false;

  private constructor(fd: number, path: string) {
    this.fd = fd;
    this.path = path;
  }

  /** Binds and listens on `path`, replacing a stale socket file left by a previous run. */
  static listen(path: string, backlog = 4): UnixListener {
    const addr = sockaddrUn(path);
    removeStaleSocket(path);
    const fd = libc.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0);
    if (fd < 0) throw syscallError('socket');
    if (libc.bind(fd, addr, addr.length) !== 0 || libc.listen(fd, backlog) !== 0) {
      const err = errno();
      closeFd(fd);
      throw new VhostUserError('VHOST_SOCKET_ERROR', `listen ${path}: ${errnoName(err)}`, { errno: errnoName(err) });
    }
    return new UnixListener(fd, path);
  }

  /** Waits for the next back-end connection, at most `timeoutMs` or until `signal` aborts. One accept() at a time. */
  accept(timeoutMs = 30000, signal?: AbortSignal): Promise<UnixStream> {
    if (this.closed) return Promise.reject(new VhostUserError('VHOST_CLIENT_CLOSED', 'listener is closed'));
    if (signal?.aborted) return Promise.reject(new VhostUserError('VHOST_CLIENT_CLOSED', 'accept aborted'));
    if (this.waiting) return Promise.reject(new VhostUserError('VHOST_BUSY', 'an accept() is already waiting'));
    const immediate = this.tryAccept();
    if (immediate) return Promise.resolve(immediate);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => finish(new VhostUserError('VHOST_CONNECT_TIMEOUT', `no back-end connected to ${this.path} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => finish(new VhostUserError('VHOST_CLIENT_CLOSED', 'accept aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const finish = (err: VhostUserError | null, stream?: UnixStream) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiting = null;
        this.watcher?.stop();
        if (err) reject(err);
        else resolve(stream!);
      };
      this.waiting = finish;
      this.watcher ??= new shim.FdWatcher(this.fd, (status) => this.onReadable(status));
      this.watcher.start(UV_READABLE);
    });
  }

  private waiting: ((err: VhostUserError | null, stream?: UnixStream) => void) | null = null;

  private onReadable(status: number): void {
    const finish = this.waiting;
    if (!finish) return;
    if (status < 0) return finish(new VhostUserError('VHOST_SOCKET_ERROR', `poll error ${status} on listener`));
    try {
      const stream = this.tryAccept();
      if (stream) finish(null, stream);
    } catch (e) {
      finish(e as VhostUserError);
    }
  }

  private tryAccept(): UnixStream | null {
    const fd = libc.accept4(this.fd, 0, 0, C.SOCK_NONBLOCK | C.SOCK_CLOEXEC);
    if (fd >= 0) return UnixStream.adopt(fd);
    const err = errno();
    if (err === osConstants.errno.EAGAIN || err === osConstants.errno.EINTR || err === osConstants.errno.ECONNABORTED) return null;
    throw syscallError('accept4', 'VHOST_SOCKET_ERROR', err);
  }

  /** Stops accepting, closes the socket and removes its path. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiting?.(new VhostUserError('VHOST_CLIENT_CLOSED', 'listener closed while waiting for a back-end'));
    this.watcher?.close();
    this.watcher = null;
    closeFd(this.fd);
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    /* nothing there */
  }
}
