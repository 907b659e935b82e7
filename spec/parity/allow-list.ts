/**
 * The known differences between what QEMU 7.2 and this library send for the same
 * step of a device's life, each with its reason. The parity test fails on any
 * difference no entry explains; an entry explains a difference when the phase,
 * kind, side and key match (and the back-end, when the entry names some).
 *
 * Reasons cite vhost-user.rst (QEMU docs/interop) or the QEMU 7.2 code path that
 * sends the message. "Candidate" marks a difference that could be closed in the
 * library; the others are choices the spec leaves open.
 */
import type { BackendId } from './scenarios.js';
import type { Difference, Phase } from './sequence.js';

/** One known difference. */
export interface Allowed {
  /** Stable id, shown in the README table. */
  id: string;
  /** Phases where it occurs; default every phase. */
  phases?: readonly Phase[];
  kind: Difference['kind'];
  side: Difference['side'];
  /** Matches {@link Difference.key}. */
  key: RegExp;
  /** Back-ends it occurs with; default every one. */
  backends?: readonly BackendId[];
  /** One line for the README table: what differs. */
  what: string;
  /** Why, with the spec section or the QEMU 7.2 code path. */
  reason: string;
}

const INIT: Phase[] = ['init', 'migration-destination-init'];
const START: Phase[] = ['start', 'migration-destination'];
const NET: BackendId[] = ['dpdk-testpmd', 'reference-net'];
const BLK: BackendId[] = ['qemu-storage-daemon', 'reference-blk'];

export const ALLOWED: readonly Allowed[] = [
  {
    id: 'need-reply',
    kind: 'need-reply',
    side: 'library',
    key: /./,
    what: 'NEED_REPLY on every request without a reply of its own (REPLY_ACK negotiated)',
    reason:
      "vhost-user.rst 'REPLY_ACK': the front-end may set NEED_REPLY on any request; the library asks for every ack so a refusal fails the request that caused it. " +
      'QEMU 7.2 asks only where it must wait: SET_MEM_TABLE / ADD_MEM_REG, SET_BACKEND_REQ_FD, and the logging SET_FEATURES / SET_VRING_ADDR.',
  },
  {
    id: 'protocol-features',
    phases: INIT,
    kind: 'only',
    side: 'both',
    key: /^SET_PROTOCOL_FEATURES /,
    what: 'the protocol features acknowledged',
    reason:
      'each front-end acknowledges what it implements: QEMU 7.2 acks CRYPTO_SESSION (DPDK) and PAGEFAULT (postcopy, qemu-storage-daemon), which the library does not use; ' +
      "QEMU 7.2's vhost-user net does not take CONFIG (it warns \"backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not\"), the library reads the net config space.",
  },
  {
    id: 'init-features-again',
    phases: INIT,
    kind: 'only',
    side: 'qemu',
    key: /^GET_FEATURES$/,
    what: 'QEMU reads GET_FEATURES a second time after SET_OWNER',
    reason: 'QEMU 7.2 reads the features once in vhost_user_backend_init (to see PROTOCOL_FEATURES) and again in vhost_dev_init; the library keeps the first answer.',
  },
  {
    id: 'init-call-err',
    phases: INIT,
    kind: 'only',
    side: 'qemu',
    key: /^SET_VRING_(CALL|ERR)\[\d+\] fds=1$/,
    what: 'QEMU sets a call and an err eventfd for every ring at device init',
    reason:
      "QEMU 7.2's vhost_virtqueue_init installs them before any guest runs; the library sets CALL with the rest of a ring at start and sends no SET_VRING_ERR (optional: nothing in vhost-user.rst requires an error fd).",
  },
  {
    id: 'net-enable-early',
    phases: INIT,
    kind: 'only',
    side: 'qemu',
    key: /^SET_VRING_ENABLE\[\d+\] 1$/,
    backends: NET,
    what: 'net: QEMU enables the rings at init (again when the link comes up), before they are set up',
    reason:
      "QEMU 7.2's vhost-user net enables every ring pair when the back-end connects (net/vhost-user.c); vhost-user.rst 'Ring states': enabled and started are independent, so both orders are valid.",
  },
  {
    id: 'enable-at-start',
    phases: START,
    kind: 'only',
    side: 'library',
    key: /^SET_VRING_ENABLE\[\d+\] 1$/,
    backends: NET,
    what: 'net: the library enables each ring after setting it up, before DRIVER_OK',
    reason: 'the mirror of net-enable-early: the library enables rings in one place for every device, as QEMU 7.2 does for blk (vhost_dev_start).',
  },
  {
    id: 'status-features-ok',
    kind: 'only',
    side: 'both',
    key: /^(GET_STATUS|SET_STATUS 0x8|SET_STATUS 0xb)$/,
    what: 'FEATURES_OK: QEMU writes 0x8 and reads GET_STATUS before each status change; the library writes 0xb and reads it back once',
    reason:
      "QEMU 7.2's vhost_user_add_status ORs the one new bit into what GET_STATUS returns (FEATURES_OK alone, 0x8, after SET_FEATURES; DRIVER_OK at start). " +
      'The library follows virtio 1.2 §3.1.1: ACKNOWLEDGE|DRIVER|FEATURES_OK (0xb), then GET_STATUS to see the back-end kept FEATURES_OK, then 0xf.',
  },
  {
    id: 'memory-table',
    phases: START,
    kind: 'only',
    side: 'both',
    key: /^(SET_MEM_TABLE fds=regions|ADD_MEM_REG fds=1)$/,
    backends: ['reference-net'],
    what: 'net with CONFIGURE_MEM_SLOTS: SET_MEM_TABLE (library) instead of ADD_MEM_REG per region (QEMU)',
    reason:
      "vhost-user.rst allows both once CONFIGURE_MEM_SLOTS is negotiated; VirtioNet keeps SET_MEM_TABLE (memoryTable 'table'), VirtioBlk follows QEMU ('auto'). Candidate: make 'auto' VirtioNet's default.",
  },
  {
    id: 'memory-kept-across-restart',
    phases: ['start'],
    kind: 'only',
    side: 'library',
    key: /^ADD_MEM_REG fds=1$/,
    backends: BLK,
    what: "blk with the Linux guest: QEMU does not share memory again when the guest's driver starts the device",
    reason:
      'SeaBIOS starts and stops the blk device first (looking for a boot disk); the memory table survives that stop (GET_VRING_BASE stops rings, not memory), so QEMU 7.2 adds only regions the back-end lacks. The library starts the device once.',
  },
  {
    id: 'ring-setup-order',
    phases: START,
    kind: 'order',
    side: 'both',
    key: /^SET_VRING_(ADDR|BASE|CALL|KICK)\[\d+\]( fds=1)?$/,
    what: 'per ring, the library sends NUM, ADDR, BASE, CALL, KICK; QEMU NUM, BASE, ADDR, KICK, CALL',
    reason:
      "vhost-user.rst fixes no order; a ring starts on its kick ('Ring states'), so the library sends the kick last, once the ring is complete. QEMU 7.2 follows vhost_virtqueue_start.",
  },
  {
    id: 'net-config',
    phases: START,
    kind: 'only',
    side: 'library',
    key: /^GET_CONFIG 0\+24$/,
    backends: ['reference-net'],
    what: 'net: the library reads the config space (MAC, status, MTU) when CONFIG is offered',
    reason: 'see protocol-features: QEMU 7.2 vhost-user net takes its MAC from the command line and never asks.',
  },
  {
    id: 'blk-config-size',
    phases: INIT,
    kind: 'only',
    side: 'both',
    key: /^GET_CONFIG 0\+(57|60)$/,
    backends: BLK,
    what: 'blk: GET_CONFIG of 57 bytes (QEMU) or 60 (library)',
    reason:
      'QEMU 7.2 asks for the struct virtio_blk_config fields it knows, up to write_zeroes_may_unmap (57 bytes); the library asks for the struct to its padding (60 bytes, virtio 1.2 §5.2.4). Both read the same fields.',
  },
  {
    id: 'blk-features-twice',
    phases: START,
    kind: 'only',
    side: 'qemu',
    key: /^SET_FEATURES$/,
    backends: BLK,
    what: 'blk: QEMU sends SET_FEATURES twice at start',
    reason:
      "QEMU 7.2's vhost_user_blk_start calls vhost_dev_prepare_inflight, which sets the features (split or packed decides the area's layout) before GET_INFLIGHT_FD, then vhost_dev_start sets them again; the library sets them once, before GET_INFLIGHT_FD.",
  },
  {
    id: 'blk-call-before-memory',
    phases: START,
    kind: 'order',
    side: 'both',
    key: /^SET_VRING_CALL\[\d+\] fds=1$/,
    backends: BLK,
    what: 'blk: QEMU sets the call fd before the memory table',
    reason: 'QEMU 7.2 sets up guest notifiers (SET_VRING_CALL) before vhost_dev_start; the spec fixes no order.',
  },
  {
    id: 'blk-inflight-reused',
    phases: ['migration-destination'],
    kind: 'only',
    side: 'qemu',
    key: /^GET_INFLIGHT_FD$/,
    backends: ['reference-blk'],
    what: 'blk migration: the library hands the new back-end the inflight area it already has',
    reason:
      "both back-ends are on this host and share the guest's memfds: the library passes the same area with SET_INFLIGHT_FD (vhost-user.rst 'Inflight I/O tracking' lets the front-end keep the area); QEMU's destination is another process and asks its back-end for a new one.",
  },
  {
    id: 'source-status-0',
    phases: ['migration-source'],
    kind: 'only',
    side: 'qemu',
    key: /^(SET_STATUS 0x0|SET_VRING_ENABLE\[\d+\] 0)$/,
    what: 'migration source: QEMU stops the device (SET_STATUS 0; blk also SET_VRING_ENABLE 0) before GET_VRING_BASE',
    reason:
      "QEMU 7.2 stops the source with vhost_dev_stop; the library's handOver only stops the rings (GET_VRING_BASE) and closes the connection: the old back-end is discarded, never resumed.",
  },
  {
    id: 'source-log-off',
    phases: ['migration-source'],
    kind: 'only',
    side: 'library',
    key: /^(SET_FEATURES|SET_VRING_ADDR\[\d+\])$/,
    what: 'migration source: the library turns dirty logging off (SET_FEATURES without LOG_ALL, SET_VRING_ADDR without the log flag) before GET_VRING_BASE',
    reason:
      'handOver stops logging first: both back-ends share the same memory on this host, so no page is copied and the log has no reader. QEMU 7.2 leaves VHOST_F_LOG_ALL set on a source that migrated successfully (it is not resumed).',
  },
  {
    id: 'blk-disable-before-stop',
    phases: ['stop', 'migration-source'],
    kind: 'only',
    side: 'qemu',
    key: /^SET_VRING_ENABLE\[\d+\] 0$/,
    backends: BLK,
    what: 'blk: QEMU disables each ring (SET_VRING_ENABLE 0) before GET_VRING_BASE',
    reason:
      'QEMU 7.2 (commit 4daa5054c5, "enable vrings in vhost_dev_start() for vhost-user devices") disables rings in vhost_dev_stop; GET_VRING_BASE alone stops a ring (vhost-user.rst \'Ring states\').',
  },
  {
    id: 'stop-order',
    phases: ['stop'],
    kind: 'order',
    side: 'both',
    key: /^(SET_STATUS 0x0|GET_VRING_BASE\[\d+\])$/,
    what: 'stop: QEMU sends SET_STATUS 0 before GET_VRING_BASE; the library GET_VRING_BASE first',
    reason:
      'QEMU 7.2 clears the status in vhost_dev_stop before stopping the rings, so a back-end must keep ring positions across SET_STATUS 0 (conformance check rings.vring-base-after-status-0; the reference back-end had this bug). ' +
      'The library asks for the positions first, which works with either kind of back-end.',
  },
  {
    id: 'rarp-announce',
    phases: ['migration-destination-init', 'migration-destination'],
    kind: 'only',
    side: 'qemu',
    key: /^SEND_RARP$/,
    backends: NET,
    what: 'migration destination: QEMU sends SEND_RARP from its announce timer (five times, the first before the rings exist)',
    reason:
      'without VIRTIO_NET_F_GUEST_ANNOUNCE QEMU 7.2 announces the guest with qemu_announce_self, whose first round can run before vhost starts; the library sends SEND_RARP once, after DRIVER_OK (vhost-user.rst \'VHOST_USER_SEND_RARP\').',
  },
];

/** The entry that explains `d` for back-end `backend`, if any. */
export function explain(d: Difference, backend: BackendId): Allowed | undefined {
  return ALLOWED.find(
    (a) =>
      a.kind === d.kind &&
      (a.side === 'both' || a.side === d.side) &&
      (a.phases === undefined || a.phases.includes(d.phase)) &&
      (a.backends === undefined || a.backends.includes(backend)) &&
      a.key.test(d.key),
  );
}

/** The README table ("Parity with QEMU 7.2"), from the entries. */
export function parityTable(used: ReadonlyMap<string, ReadonlySet<BackendId>>): string {
  const rows = ALLOWED.filter((a) => used.has(a.id)).map(
    (a) => `| ${a.what} | ${[...used.get(a.id)!].sort().join(', ')} | ${a.reason.replaceAll('|', '\\|')} |`,
  );
  return ['| Difference | Seen with | Why |', '|---|---|---|', ...rows].join('\n');
}
