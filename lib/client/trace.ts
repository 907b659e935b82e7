import { backendRequestName, frontendRequestName } from '../protocol/constants.js';
import { backendRequestSpec, frontendRequestSpec } from '../protocol/requests.js';
import { U64 } from '../protocol/payloads.js';

/** One message as the trace hook sees it. */
export interface TraceEvent {
  /** `send`: from this process; `recv`: from the back-end. */
  direction: 'send' | 'recv';
  /** `frontend`: the socket we connected; `backend`: the SET_BACKEND_REQ_FD channel. */
  channel: 'frontend' | 'backend';
  /** The request's name (`UNKNOWN(n)` for a code the protocol does not define). */
  request: string;
  /** The request code from the header. */
  code: number;
  /** The header's flags (version, REPLY, NEED_REPLY). */
  flags: number;
  /** The header's payload size in bytes. */
  size: number;
  /** How many fds travelled with the message (SCM_RIGHTS). */
  fds: number;
  /** The payload bytes as sent or received. */
  payload: Uint8Array;
  /** The payload decoded with the request's codec, when it decodes; undefined otherwise. */
  decoded: unknown;
}

/** Called with every message in both directions (`VhostUserClientOptions.trace`); must not throw. */
export type TraceHook = (event: TraceEvent) => void;

/**
 * Decodes a message for the trace. Which codec applies depends on who sent it: a
 * request carries the request payload, a reply the reply payload or an ack u64.
 */
export function traceEvent(
  direction: 'send' | 'recv',
  channel: 'frontend' | 'backend',
  code: number,
  flags: number,
  payload: Uint8Array,
  fds: number,
): TraceEvent {
  const spec = channel === 'frontend' ? frontendRequestSpec(code) : backendRequestSpec(code);
  const isRequest = (direction === 'send') === (channel === 'frontend');
  const codec = isRequest ? spec?.payload : (spec?.reply ?? (payload.length === 8 ? U64 : null));
  let decoded: unknown;
  if (codec && payload.length >= codec.minSize && payload.length <= codec.maxSize) {
    try {
      decoded = codec.decode(payload);
    } catch {
      decoded = undefined;
    }
  }
  return {
    direction,
    channel,
    request: channel === 'frontend' ? frontendRequestName(code) : backendRequestName(code),
    code,
    flags,
    size: payload.length,
    fds,
    payload,
    decoded,
  };
}
