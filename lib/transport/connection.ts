/**
 * vhost-user message framing over a UnixStream: a 12-byte header, then `size`
 * payload bytes; fds ride as SCM_RIGHTS on the header's first byte
 * (vhost-user.rst, "Message Specification"). The header is decoded before any
 * body byte is awaited, so a size field of gigabytes fails at once instead of
 * waiting for data that never comes.
 *
 * A Connection does not interpret requests: matching replies and deciding which
 * fds are expected belong to the client and the back-end above it.
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserError } from '../errors.js';
import { decodeHeader, encodeHeader } from '../protocol/header.js';
import { VHOST_USER_HDR_SIZE, VHOST_USER_MAX_FDS } from '../protocol/constants.js';
import { errnoName } from '../native/libc.js';
import { constants as osConstants } from 'node:os';
import { closeAll } from './msg-scratch.js';
import { UnixStream, type ConnectOptions } from './unix-stream.js';

/** One message as framed on the socket (vhost-user.rst, 'Message Specification'). */
export interface VhostUserMessage {
  /** The request code from the header. */
  request: number;
  /** The header's flags (version, REPLY, NEED_REPLY). */
  flags: number;
  /** A copy of the payload bytes; exactly `header.size` long. */
  payload: Uint8Array;
  /** fds received with the message. Whoever handles the message owns them. */
  fds: number[];
}

/** Events a {@link Connection} emits. */
export interface ConnectionEvents {
  /** A whole message arrived. */
  message: (message: VhostUserMessage) => void;
  /** Emitted once. `error` is undefined for a close we asked for. */
  close: (error: VhostUserError | undefined) => void;
}

/** Messages handled per readiness callback before yielding back to the loop. */
const MESSAGES_PER_TICK = 64;

/** vhost-user message framing over a {@link UnixStream}: header, payload and fds in, whole messages out. */
export class Connection extends EventEmitter<ConnectionEvents> {
  private readonly stream: UnixStream;
  private readonly header = new Uint8Array(VHOST_USER_HDR_SIZE);
  private headerGot = 0;
  private body: Uint8Array | null = null;
  private bodyGot = 0;
  private request = 0;
  private flags = 0;
  private fds: number[] = [];
  private closed = false;

  constructor(stream: UnixStream) {
    super();
    this.stream = stream;
    stream.onReadable(
      () => this.onReadable(),
      (e) => this.fail(e),
    );
  }

  /** Connects to `path` (retrying while nothing listens, see {@link ConnectOptions}). */
  static async connect(path: string, options?: ConnectOptions): Promise<Connection> {
    return new Connection(await UnixStream.connect(path, options));
  }

  /** Whether close() ran or the peer went away. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one message. At most VHOST_USER_MAX_FDS fds (vhost-user.rst: SET_MEM_TABLE carries up to 8). */
  send(request: number, flags: number, payload: Uint8Array = EMPTY, fds: readonly number[] = []): void {
    if (this.closed) throw new VhostUserError('VHOST_DISCONNECTED', 'connection is closed');
    if (fds.length > VHOST_USER_MAX_FDS) {
      throw new VhostUserError('VHOST_TOO_MANY_FDS', `${fds.length} fds in one message; at most ${VHOST_USER_MAX_FDS}`);
    }
    const bytes = new Uint8Array(VHOST_USER_HDR_SIZE + payload.length);
    encodeHeader({ request, flags, size: payload.length }, bytes, 0);
    bytes.set(payload, VHOST_USER_HDR_SIZE);
    this.stream.send(bytes, fds);
  }

  /**
   * Sends a header announcing `size` payload bytes and no payload: what a broken
   * or hostile peer does. Only fault injection (lib/backend/faults.ts) uses it.
   */
  sendHeaderOnly(request: number, flags: number, size: number): void {
    if (this.closed) throw new VhostUserError('VHOST_DISCONNECTED', 'connection is closed');
    const bytes = new Uint8Array(VHOST_USER_HDR_SIZE);
    encodeHeader({ request, flags, size }, bytes, 0);
    this.stream.send(bytes, []);
  }

  /** Closes the socket and any fds of a half-received message. Emits `close` once. */
  close(error?: VhostUserError): void {
    if (this.closed) return;
    this.closed = true;
    closeAll(this.fds);
    this.fds = [];
    this.stream.close();
    this.emit('close', error);
  }

  private fail(error: VhostUserError): void {
    this.close(error);
  }

  private onReadable(): void {
    for (let handled = 0; handled < MESSAGES_PER_TICK && !this.closed; ) {
      const reading = this.body === null ? 'header' : 'body';
      const want = reading === 'header' ? VHOST_USER_HDR_SIZE - this.headerGot : this.body!.length - this.bodyGot;
      const r = this.stream.recv(0, want);
      if (r.fds.length) this.fds.push(...r.fds);
      if (r.fdsTruncated) {
        return this.fail(new VhostUserError('VHOST_FDS_TRUNCATED', 'peer sent more fds than any message may carry; the kernel dropped the excess'));
      }
      if (r.n < 0) {
        if (r.error === osConstants.errno.EAGAIN || r.error === osConstants.errno.EINTR) return;
        return this.fail(new VhostUserError('VHOST_DISCONNECTED', `recvmsg: ${errnoName(r.error)}`, { errno: errnoName(r.error) }));
      }
      if (r.n === 0) {
        const partial = this.headerGot > 0 || this.fds.length > 0;
        return this.fail(
          new VhostUserError('VHOST_DISCONNECTED', partial ? 'peer closed the connection in the middle of a message' : 'peer closed the connection'),
        );
      }
      const got = this.stream.recvBuffer.subarray(0, r.n);
      if (reading === 'header') {
        this.header.set(got, this.headerGot);
        this.headerGot += r.n;
        if (this.headerGot < VHOST_USER_HDR_SIZE) continue;
        let size: number;
        try {
          ({ request: this.request, flags: this.flags, size } = decodeHeader(this.header));
        } catch (e) {
          return this.fail(e as VhostUserError);
        }
        this.body = new Uint8Array(size);
        this.bodyGot = 0;
      } else {
        this.body!.set(got, this.bodyGot);
        this.bodyGot += r.n;
      }
      if (this.body !== null && this.bodyGot === this.body.length) {
        const message: VhostUserMessage = { request: this.request, flags: this.flags, payload: this.body, fds: this.fds };
        this.headerGot = 0;
        this.body = null;
        this.fds = [];
        handled++;
        this.emit('message', message);
      }
    }
  }
}

const EMPTY = new Uint8Array(0);
