/**
 * `TraceProxy`: a man-in-the-middle between a vhost-user front-end and its
 * back-end. It listens where the front-end expects the back-end, connects to the
 * real back-end for every front-end connection it accepts, and relays every
 * message both ways with its fds, recording each one decoded (see
 * {@link TraceRecord}). The back-end request channel of SET_BACKEND_REQ_FD is
 * relayed too, through a socketpair of the proxy's own (trace-session.ts).
 *
 * Connections are numbered from 1 in the order accepted; a front-end that
 * reconnects gets the next number. Several may be open at once.
 */
import { EventEmitter } from 'eventemitter3';
import { performance } from 'node:perf_hooks';
import { VhostUserError } from '../errors.js';
import { UnixListener } from '../transport/unix-listener.js';
import { UnixStream } from '../transport/unix-stream.js';
import type { TraceMessage, TraceRecord } from './trace-record.js';
import { TraceSession } from './trace-session.js';

/** Where {@link TraceProxy.start} listens and connects. */
export interface TraceProxyOptions {
  /** The socket path the front-end connects to (the proxy listens there; a stale socket file is replaced). */
  listen: string;
  /** The back-end's socket path, connected once per accepted front-end connection. */
  connect: string;
  /** How long to wait for the back-end to accept (retrying while nothing listens); default 5000 ms. */
  connectTimeoutMs?: number;
  /** Called with every record as it is made (also emitted as `record`). */
  onRecord?: (record: TraceRecord) => void;
  /** Keep records in {@link TraceProxy.records} (default true; a long-running CLI turns it off). */
  keepRecords?: boolean;
}

/** Events of a {@link TraceProxy}. */
export interface TraceProxyEvents {
  /** A message was relayed or a connection ended. */
  record: (record: TraceRecord) => void;
  /** A front-end connection was accepted (before the back-end is connected). */
  connection: (connection: number) => void;
  /** A connection ended: both its sockets (and its back-end channel) are closed. */
  'connection-end': (connection: number) => void;
}

/** A tracing man-in-the-middle between a vhost-user front-end and back-end. */
export class TraceProxy extends EventEmitter<TraceProxyEvents> {
  /** The listening socket's path. */
  readonly listenPath: string;
  /** The back-end's socket path. */
  readonly connectPath: string;
  private readonly listener: UnixListener;
  private readonly options: TraceProxyOptions;
  private readonly recordList: TraceRecord[] = [];
  private readonly sessions = new Set<TraceSession>();
  private readonly pendingConnects = new Set<Promise<unknown>>();
  private readonly abort = new AbortController();
  private readonly t0 = performance.now();
  private connectionCount = 0;
  private closed = false;
  private acceptLoop: Promise<void> = Promise.resolve();

  private constructor(listener: UnixListener, options: TraceProxyOptions) {
    super();
    this.listener = listener;
    this.options = options;
    this.listenPath = options.listen;
    this.connectPath = options.connect;
  }

  /** Listens on `options.listen`; resolves once the socket exists, so a front-end may connect. */
  static start(options: TraceProxyOptions): Promise<TraceProxy> {
    try {
      if (options.listen === options.connect) {
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `listen and connect are the same path ${options.listen}`);
      }
      const proxy = new TraceProxy(UnixListener.listen(options.listen), options);
      proxy.acceptLoop = proxy.run();
      return Promise.resolve(proxy);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Every record so far, in order (empty with `keepRecords: false`). */
  get records(): readonly TraceRecord[] {
    return this.recordList;
  }

  /** The message records only. */
  get messages(): TraceMessage[] {
    return this.recordList.filter((r): r is TraceMessage => r.kind === 'message');
  }

  /** Front-end connections accepted so far. */
  get connections(): number {
    return this.connectionCount;
  }

  /** Connections still open. */
  get openConnections(): number {
    return this.sessions.size;
  }

  /** Resolves when no connection is open (at once when none is). */
  async idle(): Promise<void> {
    while (this.sessions.size || this.pendingConnects.size) {
      await Promise.race([...[...this.sessions].map((s) => s.done), ...this.pendingConnects]);
    }
  }

  /** Stops listening (the socket file is removed) and closes every open connection. Idempotent. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.abort.abort();
      this.listener.close();
    }
    await this.acceptLoop;
    await Promise.allSettled([...this.pendingConnects]);
    for (const s of this.sessions) s.close();
    await this.idle();
  }

  private now(): number {
    return performance.now() - this.t0;
  }

  private record(r: TraceRecord): void {
    if (this.options.keepRecords !== false) this.recordList.push(r);
    this.options.onRecord?.(r);
    this.emit('record', r);
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      let frontend: UnixStream;
      try {
        frontend = await this.listener.accept(2 ** 31 - 1, this.abort.signal);
      } catch {
        if (this.closed) return;
        continue; // a timeout of the (very long) accept window: accept again
      }
      const connection = ++this.connectionCount;
      this.emit('connection', connection);
      const pending = this.open(connection, frontend);
      this.pendingConnects.add(pending);
      void pending.finally(() => this.pendingConnects.delete(pending));
    }
  }

  /** Connects to the back-end for one front-end connection; the front-end is not read until then. */
  private async open(connection: number, frontend: UnixStream): Promise<void> {
    let backend: UnixStream;
    try {
      backend = await UnixStream.connect(this.connectPath, { timeoutMs: this.options.connectTimeoutMs ?? 5000, signal: this.abort.signal });
    } catch (e) {
      frontend.close();
      const err = e instanceof VhostUserError ? e : new VhostUserError('VHOST_CONNECT_FAILED', String(e), { cause: e });
      this.record({
        kind: 'close',
        time: this.now(),
        connection,
        channel: 'frontend',
        closedBy: 'proxy',
        afterRequest: null,
        afterFrom: null,
        error: { code: err.code, message: err.message, from: 'backend' },
        text: `proxy closed the connection before any message (${err.code}: ${err.message})`,
      });
      this.emit('connection-end', connection);
      return;
    }
    if (this.closed) {
      frontend.close();
      backend.close();
      return;
    }
    const session = new TraceSession(connection, frontend, backend, () => this.now(), (r) => this.record(r));
    this.sessions.add(session);
    void session.done.then(() => {
      this.sessions.delete(session);
      this.emit('connection-end', connection);
    });
  }
}
