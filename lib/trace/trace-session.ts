/**
 * One proxied conversation: the accepted front-end socket, the socket the proxy
 * opened to the back-end, and, once SET_BACKEND_REQ_FD passed, the back-end
 * request channel relayed through a socketpair of the proxy's own.
 *
 * Every message is forwarded whole, with its fds (SCM_RIGHTS on the header's
 * first byte, vhost-user.rst 'Message Specification'), then recorded. The
 * proxy's copies of the fds are closed once forwarded: the kernel holds the
 * in-flight references, and UnixStream duplicates any fd it must queue.
 *
 * Framing is the transport's Connection, so a header announcing more than the
 * 4 KiB payload limit, a bad version or unknown flag bits fail at the header,
 * before any body byte is awaited: the proxy records the error and closes both
 * sides at once rather than waiting for a gigabyte that never comes.
 */
import { traceEvent } from '../client/trace.js';
import { VhostUserError } from '../errors.js';
import { C, closeFd, libc, syscallError } from '../native/libc.js';
import { FrontendRequest, VHOST_USER_HDR_SIZE, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK } from '../protocol/constants.js';
import { encodeHeader } from '../protocol/header.js';
import { Connection, type VhostUserMessage } from '../transport/connection.js';
import { closeAll } from '../transport/msg-scratch.js';
import { UnixStream } from '../transport/unix-stream.js';
import { messageText } from './describe.js';
import type { TraceChannel, TraceClose, TraceMessage, TraceRecord, TraceSide } from './trace-record.js';

/** One relayed socket: the two Connections and what was last seen on them. */
interface Pair {
  readonly channel: TraceChannel;
  readonly frontend: Connection;
  readonly backend: Connection;
  last: { request: string; from: TraceSide } | null;
  ended: boolean;
}

/** A relayed front-end connection and its back-end channel. Internal to {@link TraceProxy}. */
export class TraceSession {
  private readonly main: Pair;
  private backendChannel: Pair | null = null;
  private readonly emitRecord: (r: TraceRecord) => void;
  private readonly now: () => number;
  private doneResolve!: () => void;
  /** Resolves once both sockets (and the back-end channel) are closed. */
  readonly done = new Promise<void>((resolve) => (this.doneResolve = resolve));

  /**
   * @param connection The connection number.
   * @param frontend The accepted front-end socket; not read until the back-end socket exists.
   * @param backend The socket connected to the back-end.
   */
  constructor(
    readonly connection: number,
    frontend: UnixStream,
    backend: UnixStream,
    now: () => number,
    emitRecord: (r: TraceRecord) => void,
  ) {
    this.now = now;
    this.emitRecord = emitRecord;
    this.main = this.relay('frontend', new Connection(frontend), new Connection(backend));
  }

  /** Whether the main connection has ended. */
  get ended(): boolean {
    return this.main.ended;
  }

  /** Closes everything, recorded as closed by the proxy. */
  close(): void {
    if (this.backendChannel) this.end(this.backendChannel, 'proxy');
    this.end(this.main, 'proxy');
  }

  private relay(channel: TraceChannel, frontend: Connection, backend: Connection): Pair {
    const pair: Pair = { channel, frontend, backend, last: null, ended: false };
    frontend.on('message', (m) => this.forward(pair, 'frontend', m));
    backend.on('message', (m) => this.forward(pair, 'backend', m));
    frontend.on('close', (e) => this.onClose(pair, 'frontend', e));
    backend.on('close', (e) => this.onClose(pair, 'backend', e));
    return pair;
  }

  private forward(pair: Pair, from: TraceSide, m: VhostUserMessage): void {
    if (pair.ended) return closeAll(m.fds);
    const to = from === 'frontend' ? pair.backend : pair.frontend;
    let fds = m.fds;
    let ownEnd = -1;
    // SET_BACKEND_REQ_FD: the back-end gets one end of the proxy's own socketpair,
    // the proxy keeps the other and the front-end's fd, and relays between them.
    if (pair.channel === 'frontend' && from === 'frontend' && m.request === FrontendRequest.SET_BACKEND_REQ_FD && m.fds.length === 1) {
      const sv = new Int32Array(2);
      if (libc.socketpair(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0, sv) !== 0) {
        closeAll(m.fds);
        this.fail(pair, from, syscallError('socketpair'));
        return;
      }
      if (this.backendChannel) this.end(this.backendChannel, 'proxy');
      // The front-end's end arrives without O_NONBLOCK; UnixStream reads and writes with MSG_DONTWAIT.
      this.backendChannel = this.relay('backend', new Connection(UnixStream.adopt(m.fds[0]!)), new Connection(UnixStream.adopt(sv[0]!)));
      ownEnd = sv[1]!;
      fds = [ownEnd];
    }
    const bytes = new Uint8Array(VHOST_USER_HDR_SIZE + m.payload.length);
    encodeHeader({ request: m.request, flags: m.flags, size: m.payload.length }, bytes, 0);
    bytes.set(m.payload, VHOST_USER_HDR_SIZE);
    const record = this.messageRecord(pair.channel, from, m, bytes);
    pair.last = { request: record.request, from };
    this.emitRecord(record);
    try {
      to.send(m.request, m.flags, m.payload, fds);
    } catch (e) {
      // The receiving side is gone (its close event has not run yet), or the message
      // cannot be sent (more than 8 fds): either way this conversation cannot go on.
      const err = e instanceof VhostUserError ? e : new VhostUserError('VHOST_SOCKET_ERROR', String(e), { cause: e });
      if (err.code === 'VHOST_DISCONNECTED') this.end(pair, from === 'frontend' ? 'backend' : 'frontend');
      else this.fail(pair, from, err);
    } finally {
      if (ownEnd >= 0) closeFd(ownEnd);
      else closeAll(m.fds);
    }
  }

  private messageRecord(channel: TraceChannel, from: TraceSide, m: VhostUserMessage, bytes: Uint8Array): TraceMessage {
    const e = traceEvent(from === 'frontend' ? 'send' : 'recv', channel, m.request, m.flags, m.payload, m.fds.length);
    return {
      kind: 'message',
      time: this.now(),
      connection: this.connection,
      channel,
      from,
      request: e.request,
      code: m.request,
      flags: m.flags,
      reply: (m.flags & VHOST_USER_REPLY_MASK) !== 0,
      needReply: (m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0,
      size: m.payload.length,
      fds: m.fds.length,
      decoded: e.decoded,
      text: messageText(e),
      bytes,
    };
  }

  private onClose(pair: Pair, side: TraceSide, error: VhostUserError | undefined): void {
    if (pair.ended) return;
    // undefined: the proxy closed it itself (end() marks the pair first, so this is not reached).
    if (error === undefined || error.code === 'VHOST_DISCONNECTED') this.end(pair, side);
    else this.fail(pair, side, error);
  }

  /** A malformed message or a failed send: recorded with the error, both sides closed. */
  private fail(pair: Pair, from: TraceSide, error: VhostUserError): void {
    if (pair.ended) return;
    this.end(pair, 'proxy', { code: error.code, message: error.message, from });
  }

  private end(pair: Pair, closedBy: TraceSide | 'proxy', error?: TraceClose['error']): void {
    if (pair.ended) return;
    pair.ended = true;
    const after = pair.last ? `after ${pair.last.request} from the ${pair.last.from}` : 'before any message';
    const what = pair.channel === 'frontend' ? 'the connection' : 'the back-end channel';
    const why = error ? ` (${error.code} from the ${error.from}: ${error.message})` : '';
    const record: TraceClose = {
      kind: 'close',
      time: this.now(),
      connection: this.connection,
      channel: pair.channel,
      closedBy,
      afterRequest: pair.last?.request ?? null,
      afterFrom: pair.last?.from ?? null,
      ...(error ? { error } : {}),
      text: `${closedBy} closed ${what} ${after}${why}`,
    };
    pair.frontend.close();
    pair.backend.close();
    this.emitRecord(record);
    // The back-end channel belongs to the connection: it ends with it.
    if (pair === this.main && this.backendChannel) this.end(this.backendChannel, 'proxy');
    if (this.main.ended && (!this.backendChannel || this.backendChannel.ended)) this.doneResolve();
  }
}
