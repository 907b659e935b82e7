/**
 * What the tracing proxy records: one {@link TraceMessage} per message relayed,
 * one {@link TraceClose} per connection end (who closed it, after which message,
 * and the error when a malformed message made the proxy close it).
 */

/** Which socket a message travelled on: the listened-on socket, or the SET_BACKEND_REQ_FD channel. */
export type TraceChannel = 'frontend' | 'backend';
/** Who sent a message (the front-end asks on its channel and answers on the back-end channel). */
export type TraceSide = 'frontend' | 'backend';

/** One relayed message, decoded with the protocol layer's codecs (lib/client/trace.ts `traceEvent`). */
export interface TraceMessage {
  readonly kind: 'message';
  /** Milliseconds since the proxy started (fractional). */
  readonly time: number;
  /** 1 for the first front-end connection accepted, 2 for the next (a reconnect), ... */
  readonly connection: number;
  /** The socket the message travelled on. */
  readonly channel: TraceChannel;
  /** Who sent it. */
  readonly from: TraceSide;
  /** The spec's request name (`GET_FEATURES`, `CONFIG_CHANGE_MSG`, `UNKNOWN(99)`), per channel. */
  readonly request: string;
  /** The request code from the header. */
  readonly code: number;
  /** The header's flags. */
  readonly flags: number;
  /** REPLY (flags bit 2). */
  readonly reply: boolean;
  /** NEED_REPLY (flags bit 3). */
  readonly needReply: boolean;
  /** The header's payload size. */
  readonly size: number;
  /** fds that travelled with it (SCM_RIGHTS). */
  readonly fds: number;
  /** The payload decoded with the request's (or reply's) codec; undefined when it does not decode. */
  readonly decoded: unknown;
  /** One line: the request name and the decoded fields, e.g. `SET_VRING_NUM {index: 0, num: 256}`. */
  readonly text: string;
  /** Header and payload as they were on the wire (the pcapng packet). */
  readonly bytes: Uint8Array;
}

/** A connection (or back-end channel) that ended. */
export interface TraceClose {
  readonly kind: 'close';
  /** Milliseconds since the proxy started. */
  readonly time: number;
  /** The connection number. */
  readonly connection: number;
  /** The socket that ended; the proxy then closes the other side of it too. */
  readonly channel: TraceChannel;
  /**
   * Who ended it: the side that closed its socket, or `proxy` when the proxy did
   * (a malformed message, see `error`; a back-end it could not reach; `close()`).
   */
  readonly closedBy: TraceSide | 'proxy';
  /** The request name of the last message on this channel, or null when none passed. */
  readonly afterRequest: string | null;
  /** Who sent that last message. */
  readonly afterFrom: TraceSide | null;
  /** Why the proxy closed it: the error code, its message and the side whose bytes caused it. */
  readonly error?: { readonly code: string; readonly message: string; readonly from: TraceSide };
  /** One line, e.g. `backend closed the connection after GET_VRING_BASE (reply)`. */
  readonly text: string;
}

/** Everything the proxy records. */
export type TraceRecord = TraceMessage | TraceClose;
