/**
 * What each request carries and what comes back, per vhost-user.rst, 'Front-end
 * message types' and 'Back-end message types', corrected where QEMU and the
 * spec's prose disagree with its tables (noted on the entry).
 *
 * Replies that only acknowledge (REPLY_ACK with NEED_REPLY, a u64 0 / non-zero)
 * are not listed: any request may get one. `reply` is a reply body of the
 * request's own.
 */
import { VhostUserError } from '../errors.js';
import { BackendRequest, FrontendRequest, ProtocolFeature } from './constants.js';
import {
  Config,
  DeviceStateTransfer,
  Inflight,
  IotlbMsg,
  Log,
  MemoryTable,
  Opaque,
  type PayloadCodec,
  SharedObject,
  ShmemConfig,
  ShmemMap,
  SingleMemoryRegion,
  U64,
  VringAddr,
  VringArea,
  VringState,
} from './payloads.js';

/**
 * 'optional-one': one fd unless the payload says otherwise (NOFD bit of
 * KICK/CALL/ERR and of the vring area), or, for SET_LOG_BASE, unless LOG_SHMFD
 * is not negotiated.
 */
export type FdRule = 'none' | 'one' | 'per-region' | 'optional-one';
/** 'optional-one': an fd on success only (GET_SHARED_OBJECT, SET_DEVICE_STATE_FD, SHARED_OBJECT_LOOKUP). */
export type ReplyFdRule = 'none' | 'one' | 'optional-one';

/**
 * What vhost-user.rst says about one request: its payload, its reply, the fds it
 * carries. The client and the reference back-end both validate messages against it.
 */
export interface RequestSpec {
  /** The request code. */
  readonly code: number;
  /** The spec's name without the VHOST_USER_ prefix. */
  readonly name: string;
  /** The payload's codec, or null for a request without payload. */
  readonly payload: PayloadCodec<unknown> | null;
  /** The reply's codec, or null for a request that has no reply of its own. */
  readonly reply: PayloadCodec<unknown> | null;
  /** The request always gets a reply of its own, NEED_REPLY or not. */
  readonly replyAlways: boolean;
  /** The reply exists only when this protocol feature is negotiated (SET_LOG_BASE: LOG_SHMFD). */
  readonly replyIfFeature?: number;
  /** The reply exists only after POSTCOPY_LISTEN (vhost-user.rst, 'VHOST_USER_SET_MEM_TABLE'). */
  readonly replyInPostcopy?: boolean;
  /** Back-ends disagree on the reply's size; read it and discard the body. */
  readonly replyBodyIgnored?: boolean;
  /** With REPLY_ACK negotiated the back-end must acknowledge, so the front-end sets NEED_REPLY. */
  readonly ackWithReplyAck?: boolean;
  /** The fds the request carries. */
  readonly fds: FdRule;
  /** The fds its reply carries. */
  readonly replyFds: ReplyFdRule;
  /** Protocol feature bit that must be negotiated before sending. */
  readonly requires?: number;
}

type Entry = Partial<Omit<RequestSpec, 'code' | 'name'>>;

function table<N extends string>(codes: Record<N, number>, entries: Record<N, Entry>): Map<number, RequestSpec> {
  const out = new Map<number, RequestSpec>();
  for (const name of Object.keys(codes) as N[]) {
    const e = entries[name];
    out.set(codes[name], {
      code: codes[name],
      name,
      payload: null,
      reply: null,
      replyAlways: false,
      fds: 'none',
      replyFds: 'none',
      ...e,
    });
  }
  return out;
}

const P = ProtocolFeature;

const frontend = table(FrontendRequest, {
  GET_FEATURES: { reply: U64, replyAlways: true },
  SET_FEATURES: { payload: U64 },
  SET_OWNER: {},
  RESET_OWNER: {}, // deprecated
  SET_MEM_TABLE: { payload: MemoryTable, fds: 'per-region', reply: MemoryTable, replyInPostcopy: true },
  // The spec's table says u64, its text and QEMU send the log description. Reply
  // sizes differ: DPDK 0 bytes, libvhost-user 8, rust-vmm 16; QEMU reads any.
  SET_LOG_BASE: { payload: Log, fds: 'optional-one', replyIfFeature: P.LOG_SHMFD, replyBodyIgnored: true },
  SET_LOG_FD: { fds: 'one' },
  SET_VRING_NUM: { payload: VringState },
  SET_VRING_ADDR: { payload: VringAddr },
  SET_VRING_BASE: { payload: VringState },
  GET_VRING_BASE: { payload: VringState, reply: VringState, replyAlways: true },
  SET_VRING_KICK: { payload: U64, fds: 'optional-one' },
  SET_VRING_CALL: { payload: U64, fds: 'optional-one' },
  SET_VRING_ERR: { payload: U64, fds: 'optional-one' },
  GET_PROTOCOL_FEATURES: { reply: U64, replyAlways: true },
  SET_PROTOCOL_FEATURES: { payload: U64 },
  GET_QUEUE_NUM: { reply: U64, replyAlways: true, requires: P.MQ },
  SET_VRING_ENABLE: { payload: VringState },
  SEND_RARP: { payload: U64, requires: P.RARP },
  NET_SET_MTU: { payload: U64, requires: P.MTU, ackWithReplyAck: true },
  SET_BACKEND_REQ_FD: { fds: 'one', requires: P.BACKEND_REQ, ackWithReplyAck: true },
  // The back-end "has to acknowledge" with a u64; QEMU also sets NEED_REPLY.
  IOTLB_MSG: { payload: IotlbMsg, reply: U64, replyAlways: true },
  SET_VRING_ENDIAN: { payload: VringState, requires: P.CROSS_ENDIAN },
  GET_CONFIG: { payload: Config, reply: Config, replyAlways: true, requires: P.CONFIG },
  SET_CONFIG: { payload: Config, requires: P.CONFIG },
  CREATE_CRYPTO_SESSION: { payload: Opaque, reply: Opaque, replyAlways: true, requires: P.CRYPTO_SESSION },
  CLOSE_CRYPTO_SESSION: { payload: U64, requires: P.CRYPTO_SESSION },
  // Reply: an empty body with the userfaultfd (QEMU rejects a non-zero size).
  POSTCOPY_ADVISE: { replyAlways: true, replyFds: 'one', requires: P.PAGEFAULT },
  POSTCOPY_LISTEN: { requires: P.PAGEFAULT },
  POSTCOPY_END: { reply: U64, replyAlways: true, requires: P.PAGEFAULT },
  // The spec's table says reply N/A, its 'Communication' list and QEMU expect the
  // description back with the shared-memory fd. QEMU takes no fd when mmap size is 0.
  GET_INFLIGHT_FD: {
    payload: Inflight,
    reply: Inflight,
    replyAlways: true,
    replyFds: 'one',
    requires: P.INFLIGHT_SHMFD,
  },
  SET_INFLIGHT_FD: { payload: Inflight, fds: 'one', requires: P.INFLIGHT_SHMFD },
  GPU_SET_SOCKET: { fds: 'one' },
  RESET_DEVICE: { requires: P.RESET_DEVICE },
  VRING_KICK: { payload: VringState, requires: P.INBAND_NOTIFICATIONS },
  GET_MAX_MEM_SLOTS: { reply: U64, replyAlways: true, requires: P.CONFIGURE_MEM_SLOTS },
  // The spec's table says request payload N/A; its text and QEMU send one region.
  ADD_MEM_REG: {
    payload: SingleMemoryRegion,
    fds: 'one',
    reply: SingleMemoryRegion,
    replyInPostcopy: true,
    requires: P.CONFIGURE_MEM_SLOTS,
  },
  // "No file descriptors SHOULD be passed"; back-ends MAY accept and close one.
  REM_MEM_REG: { payload: SingleMemoryRegion, requires: P.CONFIGURE_MEM_SLOTS },
  SET_STATUS: { payload: U64, requires: P.STATUS },
  GET_STATUS: { reply: U64, replyAlways: true, requires: P.STATUS },
  GET_SHARED_OBJECT: {
    payload: SharedObject,
    reply: U64,
    replyAlways: true,
    replyFds: 'optional-one',
    requires: P.SHARED_OBJECT,
  },
  // Reply u64: bits 0-7 status, bit 8 set when no fd comes back (decodeDeviceStateFdReply).
  SET_DEVICE_STATE_FD: {
    payload: DeviceStateTransfer,
    fds: 'one',
    reply: U64,
    replyAlways: true,
    replyFds: 'optional-one',
    requires: P.DEVICE_STATE,
  },
  CHECK_DEVICE_STATE: { reply: U64, replyAlways: true, requires: P.DEVICE_STATE },
  GET_SHMEM_CONFIG: { reply: ShmemConfig, replyAlways: true, requires: P.SHMEM },
  // Not yet in a published spec text: modelled on GET_VRING_BASE (field notes, section 2).
  GET_VRING_BASE_SKIP_DRAIN: {
    payload: VringState,
    reply: VringState,
    replyAlways: true,
    requires: P.GET_VRING_BASE_SKIP_DRAIN,
  },
});

// Back-end requests travel on the SET_BACKEND_REQ_FD channel (BACKEND_REQ); fds
// on them need BACKEND_SEND_FD as well. `requires` names each one's own feature.
const backend = table(BackendRequest, {
  IOTLB_MSG: { payload: IotlbMsg },
  CONFIG_CHANGE_MSG: { requires: P.CONFIG },
  VRING_HOST_NOTIFIER_MSG: { payload: VringArea, fds: 'optional-one', requires: P.HOST_NOTIFIER },
  VRING_CALL: { payload: VringState, requires: P.INBAND_NOTIFICATIONS },
  VRING_ERR: { payload: VringState, requires: P.INBAND_NOTIFICATIONS },
  SHARED_OBJECT_ADD: { payload: SharedObject, requires: P.SHARED_OBJECT },
  SHARED_OBJECT_REMOVE: { payload: SharedObject, requires: P.SHARED_OBJECT },
  SHARED_OBJECT_LOOKUP: {
    payload: SharedObject,
    reply: U64,
    replyAlways: true,
    replyFds: 'optional-one',
    requires: P.SHARED_OBJECT,
  },
  // "A reply is generated indicating whether mapping succeeded": a REPLY_ACK u64.
  SHMEM_MAP: { payload: ShmemMap, fds: 'one', requires: P.SHMEM },
  SHMEM_UNMAP: { payload: ShmemMap, requires: P.SHMEM },
});

/** The spec of front-end request `code`, or undefined for a code the protocol does not define. */
export function frontendRequestSpec(code: number): RequestSpec | undefined {
  return frontend.get(code);
}

/** The spec of back-end request `code`, or undefined for a code the protocol does not define. */
export function backendRequestSpec(code: number): RequestSpec | undefined {
  return backend.get(code);
}

/** Every front-end request, by code. */
export function allFrontendRequestSpecs(): RequestSpec[] {
  return [...frontend.values()];
}

/** Every back-end request, by code. */
export function allBackendRequestSpecs(): RequestSpec[] {
  return [...backend.values()];
}

function unknown(code: number, side: string): never {
  throw new VhostUserError('VHOST_UNKNOWN_REQUEST', `${side} request code ${code} is not defined`, {
    request: `UNKNOWN(${code})`,
    rule: `vhost-user.rst, '${side === 'front-end' ? 'Front-end' : 'Back-end'} message types'`,
  });
}

/** Like frontendRequestSpec, but an unknown code (0 included) is a VHOST_UNKNOWN_REQUEST. */
export function requireFrontendRequestSpec(code: number): RequestSpec {
  return frontend.get(code) ?? unknown(code, 'front-end');
}

/** Like backendRequestSpec, but an unknown code (0 included) is a VHOST_UNKNOWN_REQUEST. */
export function requireBackendRequestSpec(code: number): RequestSpec {
  return backend.get(code) ?? unknown(code, 'back-end');
}
