/**
 * Numbers of the vhost-user protocol: request codes, header flags, protocol
 * feature bits and the virtio feature bits a front-end negotiates.
 * Source: QEMU docs/interop/vhost-user.rst and the virtio 1.3 specification.
 */
import { VhostUserError } from '../errors.js';

/**
 * vhost-user.rst, 'Front-end message types'. Names drop the VHOST_USER_ prefix.
 *
 * @enum
 */
export const FrontendRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
  GET_SHMEM_CONFIG: 44,
  // Newest upstream request, not yet in a released spec text (see the field notes).
  GET_VRING_BASE_SKIP_DRAIN: 45,
} as const;

/**
 * vhost-user.rst, 'Back-end message types' (spec names carry a BACKEND_ prefix).
 *
 * @enum
 */
export const BackendRequest = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
  SHMEM_MAP: 9,
  SHMEM_UNMAP: 10,
} as const;

/** A front-end request's name, e.g. `'SET_MEM_TABLE'`. */
export type FrontendRequestName = keyof typeof FrontendRequest;
/** A back-end request's name, e.g. `'CONFIG_CHANGE_MSG'`. */
export type BackendRequestName = keyof typeof BackendRequest;

function reverse(table: Record<string, number>): Map<number, string> {
  return new Map(Object.entries(table).map(([name, n]) => [n, name]));
}

const frontendNames = reverse(FrontendRequest);
const backendNames = reverse(BackendRequest);

/** The name of front-end request `code`, or `UNKNOWN(code)`. */
export function frontendRequestName(code: number): string {
  return frontendNames.get(code) ?? `UNKNOWN(${code})`;
}

/** The name of back-end request `code`, or `UNKNOWN(code)`. */
export function backendRequestName(code: number): string {
  return backendNames.get(code) ?? `UNKNOWN(${code})`;
}

/** vhost-user.rst, 'Header': the protocol version every message carries in flags bits 0-1. */
export const VHOST_USER_VERSION = 0x1;
/** vhost-user.rst, 'Header': the flags bits holding the version. */
export const VHOST_USER_VERSION_MASK = 0x3;
/** vhost-user.rst, 'Header': flags bit 2, set on a reply. */
export const VHOST_USER_REPLY_MASK = 0x4;
/** vhost-user.rst, 'Header': flags bit 3, the front-end asks for a REPLY_ACK. */
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
/** vhost-user.rst, 'Header': request (u32), flags (u32), size (u32). */
export const VHOST_USER_HDR_SIZE = 12;
/** Not a spec limit (size is a u32); rust-vmm's MAX_MSG_SIZE, which every payload fits. */
export const VHOST_USER_MAX_PAYLOAD = 4096;
/** Most fds on one message: SET_MEM_TABLE's 8 regions ('Back-end communication' says 8 too). */
export const VHOST_USER_MAX_FDS = 8;
/** vhost-user.rst, 'Memory regions description': regions one SET_MEM_TABLE carries. */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;
/** QEMU's limit for GET_CONFIG/SET_CONFIG (hw/virtio/vhost-user.c). */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;
/** vhost-user.rst, 'VHOST_USER_SET_VRING_KICK': bits 0-7 of the u64 are the ring index. */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
/** vhost-user.rst, 'VHOST_USER_SET_VRING_KICK': bit 8 set means no fd is passed (polling). */
export const VHOST_USER_VRING_NOFD_MASK = 0x100;
/** vhost-user.rst, 'Migration': log used-ring writes at log_guest_addr. */
export const VHOST_VRING_F_LOG = 1;
/** vhost-user.rst, 'Migration': one dirty-log bit per this many bytes of guest memory. */
export const VHOST_LOG_PAGE = 0x1000;

/**
 * Device status bits (virtio 1.2 §2.1), as SET_STATUS / GET_STATUS carry them.
 *
 * @enum
 */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/**
 * Protocol feature BIT NUMBERS (vhost-user.rst, 'Protocol features'). Bits 20-23
 * were renumbered while upstream settled: rust-vmm's vhost crate has SHMEM at 21,
 * QEMU 11.1 has GPA_ADDRESSES at 21 and SHMEM at 22. This is the project's one
 * table (field notes, section 2).
 *
 * @enum
 */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
  GET_VRING_BASE_INFLIGHT: 20,
  GPA_ADDRESSES: 21,
  SHMEM: 22,
  GET_VRING_BASE_SKIP_DRAIN: 23,
} as const;

/** A protocol feature's name, e.g. `'REPLY_ACK'`. */
export type ProtocolFeatureName = keyof typeof ProtocolFeature;

/**
 * Device-independent feature BIT NUMBERS (virtio 1.3, 'Reserved Feature Bits'), plus vhost's.
 *
 * @enum
 */
export const VirtioFeature = {
  VIRTIO_F_NOTIFY_ON_EMPTY: 24,
  VHOST_F_LOG_ALL: 26,
  VIRTIO_F_ANY_LAYOUT: 27,
  VIRTIO_RING_F_INDIRECT_DESC: 28,
  VIRTIO_RING_F_EVENT_IDX: 29,
  // vhost-user.rst, 'Communication': the reserved (UNUSED) bit 30, reused by vhost-user.
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
  VIRTIO_F_VERSION_1: 32,
  VIRTIO_F_ACCESS_PLATFORM: 33,
  VIRTIO_F_RING_PACKED: 34,
  VIRTIO_F_IN_ORDER: 35,
  VIRTIO_F_ORDER_PLATFORM: 36,
  VIRTIO_F_SR_IOV: 37,
  VIRTIO_F_NOTIFICATION_DATA: 38,
  VIRTIO_F_NOTIF_CONFIG_DATA: 39,
  VIRTIO_F_RING_RESET: 40,
  VIRTIO_F_ADMIN_VQ: 41,
} as const;

/**
 * virtio 1.3, 'Network Device: Feature bits' (cross-checked with Linux uapi virtio_net.h).
 *
 * @enum
 */
export const VirtioNetFeature = {
  VIRTIO_NET_F_CSUM: 0,
  VIRTIO_NET_F_GUEST_CSUM: 1,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: 2,
  VIRTIO_NET_F_MTU: 3,
  VIRTIO_NET_F_MAC: 5,
  VIRTIO_NET_F_GSO: 6, // legacy only
  VIRTIO_NET_F_GUEST_TSO4: 7,
  VIRTIO_NET_F_GUEST_TSO6: 8,
  VIRTIO_NET_F_GUEST_ECN: 9,
  VIRTIO_NET_F_GUEST_UFO: 10,
  VIRTIO_NET_F_HOST_TSO4: 11,
  VIRTIO_NET_F_HOST_TSO6: 12,
  VIRTIO_NET_F_HOST_ECN: 13,
  VIRTIO_NET_F_HOST_UFO: 14,
  VIRTIO_NET_F_MRG_RXBUF: 15,
  VIRTIO_NET_F_STATUS: 16,
  VIRTIO_NET_F_CTRL_VQ: 17,
  VIRTIO_NET_F_CTRL_RX: 18,
  VIRTIO_NET_F_CTRL_VLAN: 19,
  VIRTIO_NET_F_CTRL_RX_EXTRA: 20,
  VIRTIO_NET_F_GUEST_ANNOUNCE: 21,
  VIRTIO_NET_F_MQ: 22,
  VIRTIO_NET_F_CTRL_MAC_ADDR: 23,
  VIRTIO_NET_F_DEVICE_STATS: 50,
  VIRTIO_NET_F_VQ_NOTF_COAL: 52,
  VIRTIO_NET_F_NOTF_COAL: 53,
  VIRTIO_NET_F_GUEST_USO4: 54,
  VIRTIO_NET_F_GUEST_USO6: 55,
  VIRTIO_NET_F_HOST_USO: 56,
  VIRTIO_NET_F_HASH_REPORT: 57,
  VIRTIO_NET_F_GUEST_HDRLEN: 59,
  VIRTIO_NET_F_RSS: 60,
  VIRTIO_NET_F_RSC_EXT: 61,
  VIRTIO_NET_F_STANDBY: 62,
  VIRTIO_NET_F_SPEED_DUPLEX: 63,
} as const;

/**
 * virtio 1.3, 'Block Device: Feature bits'.
 *
 * @enum
 */
export const VirtioBlkFeature = {
  VIRTIO_BLK_F_SIZE_MAX: 1,
  VIRTIO_BLK_F_SEG_MAX: 2,
  VIRTIO_BLK_F_GEOMETRY: 4,
  VIRTIO_BLK_F_RO: 5,
  VIRTIO_BLK_F_BLK_SIZE: 6,
  VIRTIO_BLK_F_FLUSH: 9,
  VIRTIO_BLK_F_TOPOLOGY: 10,
  VIRTIO_BLK_F_CONFIG_WCE: 11,
  VIRTIO_BLK_F_MQ: 12,
  VIRTIO_BLK_F_DISCARD: 13,
  VIRTIO_BLK_F_WRITE_ZEROES: 14,
  VIRTIO_BLK_F_LIFETIME: 15,
  VIRTIO_BLK_F_SECURE_ERASE: 16,
  VIRTIO_BLK_F_ZONED: 17,
} as const;

/** The device types whose feature bits and config space this package decodes. */
export type DeviceKind = 'net' | 'blk';

function checkBitNumber(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 63) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `feature bit ${n} is not an integer in 0..63`);
  }
}

/** The mask of feature bit `n` (0..63); throws VHOST_INVALID_ARGUMENT outside that range. */
export function bit(n: number): bigint {
  checkBitNumber(n);
  return 1n << BigInt(n);
}

/** Whether feature bit `n` (0..63) is set in `mask`. */
export function hasBit(mask: bigint, n: number): boolean {
  checkBitNumber(n);
  return ((mask >> BigInt(n)) & 1n) === 1n;
}

const genericNames = reverse(VirtioFeature);
const deviceNames: Record<DeviceKind, Map<number, string>> = {
  net: reverse(VirtioNetFeature),
  blk: reverse(VirtioBlkFeature),
};
const protocolNames = reverse(ProtocolFeature);

function namesOf(mask: bigint, lookup: (n: number) => string | undefined): string[] {
  if (mask < 0n) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `feature mask ${mask} is negative`);
  }
  const names: string[] = [];
  for (let n = 0; mask >> BigInt(n) !== 0n; n++) {
    if ((mask >> BigInt(n)) & 1n) names.push(lookup(n) ?? `BIT_${n}`);
  }
  return names;
}

/** Names of the set bits in a virtio feature mask, ascending; unknown bits as BIT_<n>. */
export function featureNames(mask: bigint, device?: DeviceKind): string[] {
  const own = device ? deviceNames[device] : undefined;
  return namesOf(mask, (n) => genericNames.get(n) ?? own?.get(n));
}

/** Names of the set bits in a protocol feature mask, e.g. 'REPLY_ACK'. */
export function protocolFeatureNames(mask: bigint): string[] {
  return namesOf(mask, (n) => protocolNames.get(n));
}
