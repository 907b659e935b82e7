/**
 * The front-end's side of the main socket: one request in flight at a time, and
 * every reply held to the rules before anyone sees it (vhost-user.rst, "Message
 * Specification"; QEMU's vhost_user_read_header and rust-vmm's recv_reply check
 * the same):
 *
 * - flags are exactly REPLY | VERSION;
 * - the request code is the one sent;
 * - the size is what that reply carries;
 * - fds come only where the reply may carry one.
 *
 * A violation, a timeout or a lost connection breaks the channel for good: a late
 * or extra reply would otherwise be taken as the answer to the next request. A
 * NAK (non-zero REPLY_ACK) is an answer, not a violation, and leaves it usable.
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserError } from '../errors.js';
import { VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK, VHOST_USER_VERSION } from '../protocol/constants.js';
import { U64, type PayloadCodec } from '../protocol/payloads.js';
import type { RequestSpec } from '../protocol/requests.js';
import type { Connection, VhostUserMessage } from '../transport/connection.js';
import { closeAll } from '../transport/msg-scratch.js';
import { traceEvent, type TraceHook } from './trace.js';

const REPLY_FLAGS = VHOST_USER_REPLY_MASK | VHOST_USER_VERSION;

export interface CallOptions {
  payload?: Uint8Array;
  fds?: readonly number[];
  /** Set NEED_REPLY and wait for the u64 ack (REPLY_ACK negotiated, no reply body of its own). */
  needReply?: boolean;
  /** The reply body this call waits for, or null when the request has none. */
  reply?: PayloadCodec<unknown> | null;
  /** Accept a reply body of any size up to 16 bytes and ignore it (SET_LOG_BASE, see requests.ts). */
  replyBodyIgnored?: boolean;
  /** A reply of size 0 reports a back-end failure rather than a violation (GET_CONFIG). */
  emptyReplyIsFailure?: boolean;
}

export interface Reply<T = unknown> {
  value: T;
  fds: number[];
}

interface Waiter {
  spec: RequestSpec;
  options: CallOptions;
  resolve(reply: Reply | null): void;
  reject(error: VhostUserError): void;
  timer: NodeJS.Timeout;
}

export interface FrontendChannelEvents {
  /** The channel is unusable from now on; emitted once. */
  broken: (error: VhostUserError) => void;
}

export class FrontendChannel extends EventEmitter<FrontendChannelEvents> {
  private readonly connection: Connection;
  private readonly timeoutMs: number;
  private readonly trace: TraceHook | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private waiter: Waiter | null = null;
  private brokenBy: VhostUserError | null = null;

  constructor(connection: Connection, options: { timeoutMs: number; trace?: TraceHook | undefined }) {
    super();
    this.connection = connection;
    this.timeoutMs = options.timeoutMs;
    this.trace = options.trace;
    connection.on('message', (m) => this.onMessage(m));
    connection.on('close', (error) =>
      this.fail(error ?? new VhostUserError('VHOST_CLIENT_CLOSED', 'connection closed')),
    );
  }

  get error(): VhostUserError | null {
    return this.brokenBy;
  }

  /**
   * Sends one request once every earlier one has finished, and resolves with its
   * reply (null when none is expected).
   */
  call(spec: RequestSpec, options: CallOptions = {}): Promise<Reply | null> {
    const run = this.tail.then(() => this.exec(spec, options));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Breaks the channel from above, e.g. when a reply decodes but says something impossible. */
  fail(cause: VhostUserError): void {
    if (this.brokenBy) return;
    const w = this.waiter;
    // A lost connection is reported against the request that was waiting for its reply.
    const error =
      w && cause.request === undefined && cause.code !== 'VHOST_CLIENT_CLOSED'
        ? new VhostUserError(cause.code, `${w.spec.name}: ${cause.message}`, { request: w.spec.name, errno: cause.errno, rule: cause.rule, cause })
        : cause;
    this.brokenBy = error;
    this.waiter = null;
    if (w) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.connection.close(error);
    this.emit('broken', error);
  }

  private exec(spec: RequestSpec, options: CallOptions): Promise<Reply | null> {
    if (this.brokenBy) return Promise.reject(this.brokenError(spec));
    const flags = VHOST_USER_VERSION | (options.needReply ? VHOST_USER_NEED_REPLY_MASK : 0);
    const payload = options.payload ?? new Uint8Array(0);
    const fds = options.fds ?? [];
    this.trace?.(traceEvent('send', 'frontend', spec.code, flags, payload, fds.length));
    try {
      this.connection.send(spec.code, flags, payload, fds);
    } catch (e) {
      const err = asError(e, spec);
      this.fail(err);
      return Promise.reject(err);
    }
    if (!options.needReply && !options.reply) return Promise.resolve(null);
    return new Promise<Reply | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new VhostUserError('VHOST_TIMEOUT', `no reply to ${spec.name} within ${this.timeoutMs} ms`, { request: spec.name }));
      }, this.timeoutMs);
      this.waiter = { spec, options, resolve, reject, timer };
    });
  }

  private onMessage(m: VhostUserMessage): void {
    this.trace?.(traceEvent('recv', 'frontend', m.request, m.flags, m.payload, m.fds.length));
    const w = this.waiter;
    if (!w) {
      closeAll(m.fds);
      return this.fail(new VhostUserError('VHOST_REPLY_MISMATCH', `unsolicited message (request ${m.request}) while no request was in flight`));
    }
    const { spec, options } = w;
    const request = spec.name;
    const violation = (code: ConstructorParameters<typeof VhostUserError>[0], message: string, rule: string) => {
      closeAll(m.fds);
      this.fail(new VhostUserError(code, `${request}: ${message}`, { request, rule }));
    };
    if (m.flags !== REPLY_FLAGS) {
      return violation('VHOST_BAD_REPLY_FLAGS', `reply flags 0x${m.flags.toString(16)}, expected 0x${REPLY_FLAGS.toString(16)} (REPLY | version 1)`, 'vhost-user.rst, "Header": a reply sets the reply flag and version 1');
    }
    if (m.request !== spec.code) {
      return violation('VHOST_REPLY_MISMATCH', `reply carries request code ${m.request}, sent ${spec.code}`, 'vhost-user.rst, "Communication": the reply repeats the request type');
    }
    const maxFds = options.reply ? (spec.replyFds === 'none' ? 0 : 1) : 0;
    if (m.fds.length > maxFds) {
      return violation('VHOST_UNEXPECTED_FDS', `reply carries ${m.fds.length} fd(s), at most ${maxFds} allowed`, 'vhost-user.rst: only replies defined with a file descriptor carry one');
    }
    const codec = options.reply ?? U64;
    const size = m.payload.length;
    if (size === 0 && options.emptyReplyIsFailure) {
      this.settle(w);
      closeAll(m.fds);
      return w.reject(new VhostUserError('VHOST_BACKEND_FAILED', `${request}: the back-end answered with an empty reply (failure)`, { request, rule: `vhost-user.rst, "${request}": a zero-sized reply reports an error` }));
    }
    const sizeOk = options.replyBodyIgnored ? size <= 16 && size % 8 === 0 : size >= codec.minSize && size <= codec.maxSize;
    if (!sizeOk) {
      return violation('VHOST_BAD_REPLY_SIZE', `reply of ${size} bytes, expected ${describeSize(codec)}`, `vhost-user.rst, "${request}": reply payload is ${codec.name}`);
    }
    let value: unknown = undefined;
    if (!options.replyBodyIgnored) {
      try {
        value = codec.decode(m.payload, request);
      } catch (e) {
        closeAll(m.fds);
        return this.fail(asError(e, spec));
      }
    }
    this.settle(w);
    if (!options.reply) {
      const ack = value as bigint;
      if (ack !== 0n) {
        return w.reject(new VhostUserError('VHOST_NACK', `${request}: back-end refused (REPLY_ACK ${ack})`, { request, rule: 'vhost-user.rst, "REPLY_ACK": non-zero means failure' }));
      }
      return w.resolve(null);
    }
    w.resolve({ value, fds: m.fds });
  }

  private settle(w: Waiter): void {
    clearTimeout(w.timer);
    this.waiter = null;
  }

  private brokenError(spec: RequestSpec): VhostUserError {
    const cause = this.brokenBy!;
    if (cause.code === 'VHOST_CLIENT_CLOSED') return new VhostUserError('VHOST_CLIENT_CLOSED', `${spec.name}: client is closed`, { request: spec.name });
    return new VhostUserError('VHOST_CLIENT_BROKEN', `${spec.name}: connection is broken (${cause.code}: ${cause.message})`, { request: spec.name, cause });
  }
}

function describeSize(codec: PayloadCodec<unknown>): string {
  return codec.minSize === codec.maxSize ? `${codec.minSize}` : `${codec.minSize}..${codec.maxSize}`;
}

function asError(e: unknown, spec: RequestSpec): VhostUserError {
  if (e instanceof VhostUserError) return e;
  return new VhostUserError('VHOST_SOCKET_ERROR', `${spec.name}: ${String(e)}`, { request: spec.name, cause: e });
}
