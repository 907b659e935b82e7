/**
 * One error class for the whole library. `code` is stable and meant for programs
 * (tests assert on it, the CLI prints it); `message` is for people.
 *
 * `retryable` tells a caller whether reconnecting may help: a refused connect or a
 * back-end that went away is retryable, a malformed reply from a connected
 * back-end is not (the same back-end will most likely do it again).
 */
export type VhostErrorCode =
  // transport
  | 'VHOST_CONNECT_FAILED'
  | 'VHOST_CONNECT_TIMEOUT'
  | 'VHOST_DISCONNECTED'
  | 'VHOST_SOCKET_ERROR'
  | 'VHOST_TOO_MANY_FDS'
  | 'VHOST_UNEXPECTED_FDS'
  | 'VHOST_FDS_TRUNCATED'
  // wire format (decoding)
  | 'VHOST_BAD_VERSION'
  | 'VHOST_BAD_FLAGS'
  | 'VHOST_UNKNOWN_REQUEST'
  | 'VHOST_PAYLOAD_TOO_LARGE'
  | 'VHOST_BAD_PAYLOAD_SIZE'
  | 'VHOST_INVALID_PAYLOAD'
  | 'VHOST_BAD_PCAP'
  // reply matching
  | 'VHOST_REPLY_MISMATCH'
  | 'VHOST_BAD_REPLY_FLAGS'
  | 'VHOST_BAD_REPLY_SIZE'
  | 'VHOST_NACK'
  | 'VHOST_BACKEND_FAILED'
  | 'VHOST_TIMEOUT'
  // client state
  | 'VHOST_CLIENT_BROKEN'
  | 'VHOST_CLIENT_CLOSED'
  | 'VHOST_BUSY'
  | 'VHOST_FEATURE_NOT_NEGOTIATED'
  | 'VHOST_INVALID_STATE'
  | 'VHOST_INVALID_ARGUMENT'
  // virtqueues: what a device wrote into a used ring that a driver must never accept
  | 'VHOST_RING_ID_OUT_OF_RANGE'
  | 'VHOST_RING_ID_NOT_OUTSTANDING'
  | 'VHOST_RING_LEN_TOO_LARGE'
  | 'VHOST_RING_IDX_JUMP'
  | 'VHOST_RING_BROKEN'
  // virtio-blk requests (virtio 1.2 §5.2): refused before sending, or what the device answered
  | 'VHOST_BLK_UNALIGNED'
  | 'VHOST_BLK_BEYOND_CAPACITY'
  | 'VHOST_BLK_TOO_MANY_SEGMENTS'
  | 'VHOST_BLK_SEGMENT_TOO_LARGE'
  | 'VHOST_BLK_TOO_MANY_SECTORS'
  | 'VHOST_BLK_READ_ONLY'
  | 'VHOST_BLK_IOERR'
  | 'VHOST_BLK_UNSUPP'
  | 'VHOST_BLK_BAD_STATUS'
  | 'VHOST_BLK_USED_LEN'
  | 'VHOST_BLK_TIMEOUT'
  | 'VHOST_BLK_ABORTED'
  | 'VHOST_BLK_MISMATCH'
  // memory and system calls
  | 'VHOST_MEMORY_OUT_OF_RANGE'
  | 'VHOST_MEMORY_OVERLAP'
  | 'VHOST_MEMORY_CLOSED'
  | 'VHOST_MEMORY_SPANS_WINDOW'
  | 'VHOST_SYSCALL'
  | 'VHOST_NATIVE'
  // processes the library starts (back-ends)
  | 'VHOST_SPAWN_FAILED'
  | 'VHOST_SPAWN_TIMEOUT'
  // QEMU driven over QMP (launch/qemu)
  | 'VHOST_QMP_ERROR'
  | 'VHOST_MIGRATION_FAILED';

const RETRYABLE: ReadonlySet<VhostErrorCode> = new Set<VhostErrorCode>([
  'VHOST_CONNECT_FAILED',
  'VHOST_CONNECT_TIMEOUT',
  'VHOST_DISCONNECTED',
  'VHOST_TIMEOUT',
  'VHOST_BLK_TIMEOUT',
  'VHOST_BLK_ABORTED',
]);

/** Optional context of a {@link VhostUserError}, given to its constructor. */
export interface VhostErrorDetails {
  /** Spec name of the request the error concerns, e.g. `GET_VRING_BASE`. */
  request?: string;
  /** errno name (`ECONNREFUSED`) when a system call failed. */
  errno?: string;
  /** The rule behind the check, with the spec section where there is one. */
  rule?: string;
  /** The lower-level error that led to this one; becomes the standard `Error.cause`. */
  cause?: unknown;
}

/** The error every part of the library throws or rejects with; see {@link VhostErrorCode}. */
export class VhostUserError extends Error {
  /** Stable machine-readable code: branch on this, never on `message`. */
  readonly code: VhostErrorCode;
  /** Spec name of the request the error concerns (`GET_VRING_BASE`), or undefined when it concerns none. */
  readonly request: string | undefined;
  /** errno name (`ECONNREFUSED`, `EPIPE`) when a system call failed, otherwise undefined. */
  readonly errno: string | undefined;
  /** The rule the peer or the caller broke, citing the spec section where there is one; undefined if none applies. */
  readonly rule: string | undefined;

  constructor(code: VhostErrorCode, message: string, details: VhostErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'VhostUserError';
    this.code = code;
    this.request = details.request;
    this.errno = details.errno;
    this.rule = details.rule;
  }

  /** Whether reconnecting (or simply trying again) may succeed. */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  /** One line for logs and the CLI: `CODE [REQUEST]: message`. */
  toLine(): string {
    const req = this.request ? ` [${this.request}]` : '';
    return `${this.code}${req}: ${this.message}`;
  }
}

/** Whether `e` is a {@link VhostUserError}, and when `code` is given, one with that code. */
export function isVhostUserError(e: unknown, code?: VhostErrorCode): e is VhostUserError {
  return e instanceof VhostUserError && (code === undefined || e.code === code);
}
