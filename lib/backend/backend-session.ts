/**
 * One front-end connection to the reference back-end: every message is checked
 * against the request table (lib/protocol/requests.ts) — header flags, request
 * code, protocol feature, payload size and codec, fd count — then applied to
 * the negotiated state (features, protocol features, status, memory table,
 * rings) and answered (reply or REPLY_ACK). A violation closes the connection;
 * a refusal is nacked when asked. The device model is driven through
 * DeviceRings when a ring is kicked.
 */
import { VhostUserError } from '../errors.js';
import {
  FrontendRequest as R,
  ProtocolFeature,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VirtioFeature,
  bit,
  frontendRequestName,
  hasBit,
} from '../protocol/constants.js';
import { Config, DeviceStateTransfer as DeviceStateTransferPayload, Inflight, Log, MemoryTable, SingleMemoryRegion, U64, VringState, decodeVringFdIndex, VringAddr } from '../protocol/payloads.js';
import { DeviceStateTransfer } from './device-state.js';
import { frontendRequestSpec, type RequestSpec } from '../protocol/requests.js';
import type { Connection, VhostUserMessage } from '../transport/connection.js';
import { closeAll } from '../transport/msg-scratch.js';
import { EventFd } from '../transport/eventfd.js';
import { BackendMemory } from './backend-memory.js';
import { DirtyLog } from '../memory/dirty-log.js';
import { InflightArea } from './inflight-area.js';
import type { Fault, FaultPlan } from './faults.js';
import type { DeviceModel, DeviceRings } from './devices/device.js';
import { Refusal, violation, violationInfo, type ViolationInfo } from './violation.js';
import { Vring, type Chain } from './vring-state.js';

export const PROTOCOL_OFFERED =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.LOG_SHMFD) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.CONFIG) |
  bit(ProtocolFeature.STATUS) |
  bit(ProtocolFeature.RESET_DEVICE) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);

/** What a session needs from the back-end that accepted it. */
export interface SessionHost {
  /** Virtio features offered (GET_FEATURES). */
  readonly features: bigint;
  readonly queueNum: number;
  readonly maxMemSlots: number;
  readonly device: DeviceModel;
  /** Faults to inject (faults.ts). */
  readonly faults: FaultPlan;
  /** Reports a violation (the session then closes) or a refusal. */
  report(kind: 'violation' | 'refused', info: ViolationInfo): void;
}

/** A reply size field no front-end may wait for (fault 'huge-size'). */
const HUGE_SIZE = 1 << 30;

export class BackendSession implements DeviceRings {
  readonly memory: BackendMemory;
  readonly rings: Vring[];
  ownerSet = false;
  ackedFeatures: bigint | null = null;
  protocolFeatures = 0n;
  status = 0;
  closed = false;
  /** The dirty log from SET_LOG_BASE (LOG_SHMFD), or null. */
  private log: DirtyLog | null = null;
  /** SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE (DEVICE_STATE). */
  private readonly stateTransfer: DeviceStateTransfer;
  /** The inflight area (INFLIGHT_SHMFD): allocated by GET_INFLIGHT_FD, replaced by SET_INFLIGHT_FD. */
  private inflight: InflightArea | null = null;
  /** An fd to send with the next reply (GET_INFLIGHT_FD); closed once sent. */
  private replyFds: number[] = [];
  private pollTimer: NodeJS.Timeout | null = null;
  /** Replies held back by a 'late-reply' fault. */
  private readonly lateReplies = new Set<NodeJS.Timeout>();

  constructor(
    readonly id: number,
    readonly conn: Connection,
    private readonly host: SessionHost,
  ) {
    this.memory = new BackendMemory(host.maxMemSlots);
    this.stateTransfer = new DeviceStateTransfer(host.device);
    this.rings = Array.from({ length: host.queueNum }, (_, index) => this.newRing(index));
  }

  private newRing(index: number): Vring {
    const faults = this.host.faults;
    const r = new Vring(
      index,
      faults.isEmpty ? null : (i) => faults.takeRingFault(this.id, i),
      faults.isEmpty ? null : (i, name) => faults.takeLogFault(this.id, i, name),
    );
    r.log = this.loggingLog();
    return r;
  }

  /** The log rings write to: set, and VHOST_F_LOG_ALL negotiated. */
  private loggingLog(): DirtyLog | null {
    return this.log !== null && this.acked(VirtioFeature.VHOST_F_LOG_ALL) ? this.log : null;
  }

  private applyLog(): void {
    const log = this.loggingLog();
    const faults = this.host.faults;
    for (const r of this.rings) {
      // The log-after-clear fault (faults.ts): a ring logging into the current log keeps it when
      // VHOST_F_LOG_ALL is cleared, breaking vhost-user.rst 'Migration' ("To start/stop logging").
      // A ring's log that SET_LOG_BASE replaced (and unmapped) is never kept.
      const keep = log === null && r.log !== null && r.log === this.log && !faults.isEmpty && faults.takeLogFault(this.id, r.index, 'log-after-clear');
      r.log = keep ? r.log : log;
    }
  }

  /** Protocol features offered: the common ones and the device's own. */
  get offeredProtocol(): bigint {
    return PROTOCOL_OFFERED | (this.host.device.protocolFeatures ?? 0n);
  }

  get packed(): boolean {
    return this.acked(VirtioFeature.VIRTIO_F_RING_PACKED);
  }

  get eventIdx(): boolean {
    return this.acked(VirtioFeature.VIRTIO_RING_F_EVENT_IDX);
  }

  /** The feature bit was acked by SET_FEATURES. */
  private acked(b: number): boolean {
    return this.ackedFeatures !== null && hasBit(this.ackedFeatures, b);
  }

  hasProtocol(b: number): boolean {
    return hasBit(this.protocolFeatures, b);
  }

  // ---------------------------------------------------------------- dispatch

  onMessage(m: VhostUserMessage): void {
    if (this.closed) {
      closeAll(m.fds);
      return;
    }
    const name = frontendRequestName(m.request);
    const fault = this.host.faults.isEmpty ? null : this.takeFault(m, name);
    if (fault?.name === 'disconnect-before') {
      closeAll(m.fds);
      return this.close();
    }
    if (fault?.name === 'nak') {
      closeAll(m.fds);
      return this.conn.send(m.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, U64.encode(1n));
    }
    let spec: RequestSpec | undefined;
    try {
      spec = this.validate(m, name);
      const reply = this.handle(spec, m);
      if (this.closed) return;
      if (reply !== undefined) this.reply(m.request, reply, fault, this.takeReplyFds());
      else if (m.flags & VHOST_USER_NEED_REPLY_MASK) this.ack(m, 0n, fault);
      if (fault?.name === 'disconnect-after') this.close();
    } catch (e) {
      closeAll(m.fds);
      closeAll(this.takeReplyFds());
      m.fds = [];
      if (e instanceof Refusal) {
        this.host.report('refused', violationInfo(this.id, e));
        if (!this.closed && m.flags & VHOST_USER_NEED_REPLY_MASK && spec && !spec.replyAlways && this.hasProtocol(ProtocolFeature.REPLY_ACK)) {
          this.conn.send(m.request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, U64.encode(1n));
        }
        return;
      }
      const err =
        e instanceof VhostUserError
          ? e
          : new VhostUserError('VHOST_INVALID_STATE', `internal error handling ${name}: ${(e as Error).message}`, { request: name, cause: e });
      const withRequest = err.request ? err : new VhostUserError(err.code, err.message, { request: name, rule: err.rule, cause: err });
      this.host.report('violation', violationInfo(this.id, withRequest));
      this.close(withRequest);
    }
  }

  private ack(m: VhostUserMessage, value: bigint, fault: Fault | null = null): void {
    if (!this.hasProtocol(ProtocolFeature.REPLY_ACK)) {
      throw violation('VHOST_BAD_FLAGS', 'NEED_REPLY set but REPLY_ACK was not negotiated', frontendRequestName(m.request), "vhost-user.rst, 'REPLY_ACK'");
    }
    this.reply(m.request, U64.encode(value), fault);
  }

  /**
   * The write-after-stop fault (faults.ts): 30 ms after GET_VRING_BASE stopped
   * `r`, flip bit 0 of the device area's first word (split used.flags
   * NO_NOTIFY, packed device event flags), a write the front-end no longer
   * expects (vhost-user.rst, "Starting and stopping rings": a stopped ring is
   * not processed).
   */
  private writeAfterStop(r: Vring): void {
    const a = r.addr;
    if (a === null) return;
    const timer = setTimeout(() => {
      try {
        const b = this.memory.bytes(this.memory.userToGpa(a.usedUserAddr, 2), 2);
        b[0] = b[0]! ^ 1;
      } catch {
        // The memory is gone with the connection: there is nothing left to write into.
      }
    }, 30);
    timer.unref();
  }

  /** The fault planned for this request, if any (faults.ts). */
  private takeFault(m: VhostUserMessage, name: string): Fault | null {
    const spec = frontendRequestSpec(m.request);
    const needReply = (m.flags & VHOST_USER_NEED_REPLY_MASK) !== 0 && this.hasProtocol(ProtocolFeature.REPLY_ACK);
    const replies = needReply || (spec !== undefined && spec.reply !== null && (spec.replyIfFeature === undefined || this.hasProtocol(spec.replyIfFeature)));
    return this.host.faults.takeMessageFault(this.id, name, replies, needReply);
  }

  private takeReplyFds(): number[] {
    const fds = this.replyFds;
    this.replyFds = [];
    return fds;
  }

  /** Sends a reply (or ack), broken the way `fault` says; `fds` go with it and are closed here. */
  private reply(request: number, body: Uint8Array, fault: Fault | null, fds: number[] = []): void {
    try {
      this.replyWith(request, body, fault, fds);
    } finally {
      closeAll(fds);
    }
  }

  private replyWith(request: number, body: Uint8Array, fault: Fault | null, fds: number[]): void {
    const flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
    switch (fault?.name) {
      case 'wrong-code':
        return this.conn.send(request === R.GET_FEATURES ? R.GET_PROTOCOL_FEATURES : R.GET_FEATURES, flags, body);
      case 'wrong-flags':
        return this.conn.send(request, VHOST_USER_VERSION, body);
      case 'wrong-size':
        return this.conn.send(request, flags, body.length >= 4 ? body.subarray(0, body.length - 4) : new Uint8Array(4));
      case 'huge-size':
        return this.conn.sendHeaderOnly(request, flags, HUGE_SIZE);
      case 'unexpected-fds': {
        const e = new EventFd();
        try {
          return this.conn.send(request, flags, body, [e.fd]);
        } finally {
          e.close();
        }
      }
      case 'no-reply':
        return;
      case 'late-reply': {
        const timer = setTimeout(() => {
          this.lateReplies.delete(timer);
          if (!this.closed) this.conn.send(request, flags, body);
        }, fault.delayMs ?? 1000);
        this.lateReplies.add(timer);
        return;
      }
      default:
        return this.conn.send(request, flags, body, fds);
    }
  }

  /** Header, code, feature, payload size and fd count: everything the table says. */
  private validate(m: VhostUserMessage, name: string): RequestSpec {
    if ((m.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
      throw violation('VHOST_BAD_VERSION', `flags 0x${m.flags.toString(16)} carry version ${m.flags & 3}, not 1`, name);
    }
    if (m.flags & VHOST_USER_REPLY_MASK) throw violation('VHOST_BAD_FLAGS', 'a request carries the REPLY bit', name, "vhost-user.rst, 'Header'");
    if (m.flags & ~0xf) throw violation('VHOST_BAD_FLAGS', `flags 0x${m.flags.toString(16)} set undefined bits`, name);
    const spec = frontendRequestSpec(m.request);
    if (!spec) throw violation('VHOST_UNKNOWN_REQUEST', `request code ${m.request} is not defined`, name, "vhost-user.rst, 'Front-end message types'");
    if (spec.requires !== undefined && !this.hasProtocol(spec.requires)) {
      const feature = Object.entries(ProtocolFeature).find(([, b]) => b === spec.requires)?.[0] ?? `bit ${spec.requires}`;
      throw violation('VHOST_FEATURE_NOT_NEGOTIATED', `${name} needs protocol feature ${feature}, which was not negotiated`, name);
    }
    if (spec.payload === null && m.payload.length !== 0) {
      throw violation('VHOST_BAD_PAYLOAD_SIZE', `${name} carries no payload, got ${m.payload.length} bytes`, name);
    }
    if (spec.payload !== null && (m.payload.length < spec.payload.minSize || m.payload.length > spec.payload.maxSize)) {
      throw violation('VHOST_BAD_PAYLOAD_SIZE', `${name}: payload of ${m.payload.length} bytes, expected ${spec.payload.minSize === spec.payload.maxSize ? spec.payload.minSize : `${spec.payload.minSize}..${spec.payload.maxSize}`}`, name);
    }
    const expected = this.expectedFds(spec, m);
    if (!expected.includes(m.fds.length)) {
      throw violation('VHOST_UNEXPECTED_FDS', `${name} came with ${m.fds.length} fds, expected ${expected.join(' or ')}`, name, "vhost-user.rst, 'Message types'");
    }
    return spec;
  }

  private expectedFds(spec: RequestSpec, m: VhostUserMessage): number[] {
    switch (spec.fds) {
      case 'none':
        // REM_MEM_REG: "No file descriptors SHOULD be passed"; a back-end MAY accept and close one.
        return spec.code === R.REM_MEM_REG ? [0, 1] : [0];
      case 'one':
        return [1];
      case 'per-region': {
        if (m.payload.length < 4) return [0];
        const n = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getUint32(0, true);
        return [n];
      }
      case 'optional-one': {
        if (spec.code === R.SET_VRING_KICK || spec.code === R.SET_VRING_CALL || spec.code === R.SET_VRING_ERR) {
          const u = U64.decode(m.payload, spec.name);
          return (u & 0x100n) !== 0n ? [0] : [1];
        }
        return [0, 1];
      }
    }
  }

  private ring(index: number, request: string): Vring {
    const r = this.rings[index];
    if (!Number.isInteger(index) || r === undefined) {
      throw violation('VHOST_INVALID_PAYLOAD', `ring index ${index} out of range: the device has ${this.rings.length} queues`, request, "vhost-user.rst, 'GET_QUEUE_NUM'");
    }
    return r;
  }

  /** SET_VRING_KICK/CALL/ERR: the ring and its fd (null for NOFD), which the caller owns from now on. */
  private ringFd(m: VhostUserMessage, request: string): { r: Vring; fd: number | null } {
    const { index, nofd } = decodeVringFdIndex(U64.decode(m.payload, request), request);
    const r = this.ring(index, request);
    const fd = nofd ? null : m.fds[0]!;
    m.fds = [];
    return { r, fd };
  }

  /** Returns a reply body, or undefined for requests answered only by REPLY_ACK. */
  private handle(spec: RequestSpec, m: VhostUserMessage): Uint8Array | undefined {
    const name = spec.name;
    const host = this.host;
    switch (m.request) {
      case R.GET_FEATURES:
        return U64.encode(host.features);
      case R.SET_FEATURES: {
        const f = U64.decode(m.payload, name);
        if (f & ~host.features) throw violation('VHOST_INVALID_PAYLOAD', `features 0x${f.toString(16)} include bits not offered (0x${(f & ~host.features).toString(16)})`, name, "virtio 1.2 §3.1.1: the driver accepts only offered features");
        // vhost-user.rst, 'Migration': "To start/stop logging ... the front-end may send
        // VHOST_USER_SET_FEATURES with VHOST_F_LOG_ALL" while the rings run; nothing else may change.
        const changed = this.ackedFeatures === null ? 0n : f ^ this.ackedFeatures;
        if (this.rings.some((r) => r.started) && (changed & ~bit(VirtioFeature.VHOST_F_LOG_ALL)) !== 0n) {
          throw violation('VHOST_INVALID_STATE', `features 0x${changed.toString(16)} changed while rings are running (only VHOST_F_LOG_ALL may)`, name);
        }
        this.ackedFeatures = f;
        // An area laid out for the other ring kind cannot track these rings: the front-end must get a new one.
        if (this.inflight !== null && this.inflight.packed !== this.packed) this.setInflight(null, false);
        this.applyLog();
        // vhost-user.rst, 'Ring states': without PROTOCOL_FEATURES rings are enabled at once.
        if (!hasBit(f, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) for (const r of this.rings) r.enabled = true;
        for (const r of this.rings) this.rebuild(r);
        this.kickAll();
        return undefined;
      }
      case R.SET_OWNER:
        this.ownerSet = true;
        return undefined;
      case R.RESET_OWNER:
        this.reset(true);
        return undefined;
      case R.RESET_DEVICE:
        this.reset(false);
        return undefined;
      case R.GET_PROTOCOL_FEATURES:
        return U64.encode(this.offeredProtocol);
      case R.SET_PROTOCOL_FEATURES: {
        const f = U64.decode(m.payload, name);
        if (f & ~this.offeredProtocol) throw violation('VHOST_INVALID_PAYLOAD', `protocol features 0x${f.toString(16)} include bits not offered`, name);
        this.protocolFeatures = f;
        return undefined;
      }
      case R.GET_QUEUE_NUM:
        return U64.encode(BigInt(this.rings.length));
      case R.GET_MAX_MEM_SLOTS:
        return U64.encode(BigInt(host.maxMemSlots));
      case R.SET_MEM_TABLE: {
        const table = MemoryTable.decode(m.payload, name);
        const fds = m.fds;
        m.fds = [];
        this.detachQueues();
        this.memory.setTable(table.regions, fds, name);
        this.retranslate(name);
        return undefined;
      }
      case R.ADD_MEM_REG: {
        const region = SingleMemoryRegion.decode(m.payload, name);
        const fd = m.fds[0]!;
        m.fds = [];
        this.memory.add(region, fd);
        return undefined;
      }
      case R.REM_MEM_REG: {
        const region = SingleMemoryRegion.decode(m.payload, name);
        closeAll(m.fds);
        m.fds = [];
        // A ring living in the region would be left dangling.
        this.detachQueues();
        if (!this.memory.remove(region)) {
          throw violation('VHOST_INVALID_PAYLOAD', `no region at 0x${region.guestPhysAddr.toString(16)} of 0x${region.memorySize.toString(16)} bytes`, name);
        }
        this.retranslate(name, true);
        return undefined;
      }
      case R.SET_VRING_NUM: {
        const s = VringState.decode(m.payload, name);
        this.ring(s.index, name).setNum(s.num, this.packed, name);
        return undefined;
      }
      case R.SET_VRING_ADDR: {
        const a = VringAddr.decode(m.payload, name);
        this.ring(a.index, name).setAddr(a, this.packed, this.acked(VirtioFeature.VHOST_F_LOG_ALL), this.memory, name);
        return undefined;
      }
      case R.SET_VRING_BASE: {
        const s = VringState.decode(m.payload, name);
        this.ring(s.index, name).setBase(s.num, this.packed, name);
        return undefined;
      }
      case R.GET_VRING_BASE: {
        const s = VringState.decode(m.payload, name);
        const r = this.ring(s.index, name);
        const base = r.stop();
        this.updatePolling();
        if (!this.host.faults.isEmpty && this.host.faults.takeLogFault(this.id, r.index, 'write-after-stop')) this.writeAfterStop(r);
        return VringState.encode({ index: s.index, num: base });
      }
      case R.SET_VRING_KICK: {
        const { r, fd } = this.ringFd(m, name);
        r.setKick(fd, () => this.onKick(r));
        // The ring starts now; what the driver made available already is processed.
        r.started = true;
        this.updatePolling();
        this.onKick(r);
        return undefined;
      }
      case R.SET_VRING_CALL: {
        const { r, fd } = this.ringFd(m, name);
        r.setCall(fd);
        return undefined;
      }
      case R.SET_VRING_ERR: {
        const { r, fd } = this.ringFd(m, name);
        r.setErr(fd);
        return undefined;
      }
      case R.SET_VRING_ENABLE: {
        const s = VringState.decode(m.payload, name);
        const r = this.ring(s.index, name);
        if (s.num > 1) throw violation('VHOST_INVALID_PAYLOAD', `enable flag ${s.num} is not 0 or 1`, name);
        if (this.ackedFeatures !== null && !hasBit(this.ackedFeatures, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) {
          throw violation('VHOST_FEATURE_NOT_NEGOTIATED', 'SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES in SET_FEATURES', name);
        }
        r.enabled = s.num === 1;
        if (r.enabled) this.onKick(r);
        return undefined;
      }
      case R.SET_LOG_BASE: {
        const l = Log.decode(m.payload, name);
        const fd = m.fds[0];
        m.fds = [];
        if (fd === undefined || !this.hasProtocol(ProtocolFeature.LOG_SHMFD)) {
          if (fd !== undefined) closeAll([fd]);
          throw new Refusal('VHOST_FEATURE_NOT_NEGOTIATED', 'only a shared-memory log (LOG_SHMFD, with its fd) is supported', { request: name });
        }
        let log: DirtyLog;
        try {
          log = DirtyLog.map(fd, l.mmapSize, l.mmapOffset, name);
        } finally {
          closeAll([fd]);
        }
        this.log?.close();
        this.log = log;
        this.applyLog();
        // vhost-user.rst: with LOG_SHMFD the back-end replies once the log is mapped.
        return U64.encode(0n);
      }
      case R.SEND_RARP: {
        // vhost-user.rst: "The first 6 bytes of the payload contain the mac address of the guest".
        const mac = m.payload.slice(0, 6);
        if (!host.device.sendRarp) throw new Refusal('VHOST_NACK', 'this device has no network to announce on', { request: name });
        host.device.sendRarp(this, mac);
        return undefined;
      }
      case R.NET_SET_MTU: {
        const mtu = U64.decode(m.payload, name);
        if (!host.device.acceptsMtu?.(Number(mtu))) throw new Refusal('VHOST_NACK', `MTU ${mtu} refused (68..65535)`, { request: name });
        return undefined;
      }
      case R.SET_LOG_FD:
        // The log-change eventfd: nothing here waits on it.
        closeAll(m.fds);
        m.fds = [];
        return undefined;
      case R.GET_CONFIG: {
        const c = Config.decode(m.payload, name);
        const space = host.device.configSpace();
        if (c.offset + c.size > space.length) return new Uint8Array(0); // a zero-sized reply reports failure
        return Config.encode({ offset: c.offset, size: c.size, flags: c.flags, payload: space.slice(c.offset, c.offset + c.size) });
      }
      case R.SET_CONFIG: {
        Config.decode(m.payload, name);
        throw new Refusal('VHOST_NACK', 'config space is read-only on this device', { request: name });
      }
      case R.SET_STATUS: {
        const v = U64.decode(m.payload, name);
        if (v > 0xffn) throw violation('VHOST_INVALID_PAYLOAD', `device status 0x${v.toString(16)} does not fit 8 bits`, name);
        this.status = Number(v);
        if (this.status === 0) this.resetKeepingPositions();
        return undefined;
      }
      case R.GET_STATUS:
        return U64.encode(BigInt(this.status));
      case R.GET_INFLIGHT_FD: {
        const req = Inflight.decode(m.payload, name);
        InflightArea.checkShape(req, this.rings.length, name);
        // The layout follows the rings negotiated so far (QEMU asks after SET_FEATURES).
        const { area, fd, mmapSize } = InflightArea.allocate(req.numQueues, req.queueSize, this.packed);
        // A repeated GET_INFLIGHT_FD replaces the area: nothing of the old one is kept (CVE-2020-10726's class of fd leak).
        this.setInflight(area, false);
        this.replyFds = [fd];
        return Inflight.encode({ mmapSize: BigInt(mmapSize), mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize });
      }
      case R.SET_DEVICE_STATE_FD: {
        const t = DeviceStateTransferPayload.decode(m.payload, name);
        const fd = m.fds[0]!;
        m.fds = [];
        // vhost-user.rst, "Migrating back-end state": phase STOPPED, every ring stopped.
        if (this.rings.some((r) => r.started)) {
          closeAll([fd]);
          return U64.encode(1n | BigInt(VHOST_USER_VRING_NOFD_MASK));
        }
        this.stateTransfer.begin(t.direction, fd);
        // Bit 8: no fd of ours comes back; the front-end's pipe is used.
        return U64.encode(BigInt(VHOST_USER_VRING_NOFD_MASK));
      }
      case R.CHECK_DEVICE_STATE: {
        const failure = this.stateTransfer.check();
        if (failure !== null) this.host.report('refused', violationInfo(this.id, new VhostUserError('VHOST_BACKEND_FAILED', failure, { request: name, rule: "vhost-user.rst, 'Migrating back-end state'" })));
        return U64.encode(failure === null ? 0n : 1n);
      }
      case R.SET_INFLIGHT_FD: {
        const desc = Inflight.decode(m.payload, name);
        const fd = m.fds[0]!;
        m.fds = [];
        if (this.rings.some((r) => r.started)) {
          closeAll([fd]);
          throw violation('VHOST_INVALID_STATE', 'SET_INFLIGHT_FD while rings are running', name, "vhost-user.rst, 'Inflight I/O tracking': the area is handed over before the rings start");
        }
        this.setInflight(InflightArea.adopt(fd, desc, this.rings.length, name, this.packed), true);
        return undefined;
      }
      default:
        // Known requests this device does not implement, and whose feature gate (if
        // any) was negotiated only because it has none: logging, IOTLB, GPU socket.
        throw violation('VHOST_FEATURE_NOT_NEGOTIATED', `${name} is not supported by this back-end (its features were not offered)`, name);
    }
  }

  /** Points each ring at its region of `area` (rings beyond it track nothing); the old area is unmapped. */
  private setInflight(area: InflightArea | null, recover: boolean): void {
    for (const [i, r] of this.rings.entries()) {
      if (r.hasQueue) r.detach();
      r.inflight = area?.regions[i] ?? null;
      r.recoverInflight = recover && r.inflight !== null;
    }
    this.inflight?.close();
    this.inflight = area;
  }

  // ---------------------------------------------------------------- rings

  /** After the memory table changed: rings must still translate. */
  private retranslate(request: string, lenient = false): void {
    for (const r of this.rings) {
      if (r.addr === null || r.num === 0) continue;
      try {
        r.translate(this.memory, r.addr, this.packed, request);
      } catch (e) {
        if (!lenient) throw e;
        r.addr = null;
      }
    }
    for (const r of this.rings) this.rebuild(r);
    this.kickAll();
  }

  /** Drops device queue models (their views die with the old mappings) keeping their positions. */
  private detachQueues(): void {
    for (const r of this.rings) r.detach();
  }

  /** Builds the device queue model when the ring has everything it needs. */
  private rebuild(r: Vring): void {
    if (this.ackedFeatures === null || this.memory.isEmpty) return;
    r.build(this.memory, this.packed, this.eventIdx);
  }

  private kickAll(): void {
    for (const r of this.rings) if (r.started) this.onKick(r);
  }

  onKick(r: Vring): void {
    if (this.closed) return;
    try {
      this.host.device.process(this, r);
    } catch (e) {
      const err = e instanceof VhostUserError ? e : new VhostUserError('VHOST_RING_BROKEN', (e as Error).message, { cause: e });
      this.host.report('violation', violationInfo(this.id, err));
      this.close(err);
    }
  }

  isReady(r: Vring): boolean {
    if (!r.started || !r.enabled) return false;
    if (!this.host.faults.isEmpty && this.host.faults.ringStopped(this.id, r.index)) return false;
    if (!r.hasQueue) this.rebuild(r);
    return r.hasQueue;
  }

  pop(r: Vring): Chain | null {
    if (!this.isReady(r)) return null;
    return r.take();
  }

  private updatePolling(): void {
    const need = this.rings.some((r) => r.started && r.kickPolled);
    if (need && this.pollTimer === null) {
      this.pollTimer = setInterval(() => {
        for (const r of this.rings) if (r.started && r.kickPolled) this.onKick(r);
      }, 1);
    } else if (!need && this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  /**
   * SET_STATUS 0: a device reset (virtio 1.2 §2.1: writing 0 to device status resets the
   * device) that keeps each ring's position for the GET_VRING_BASE that follows.
   *
   * vhost-user.rst defines SET_STATUS only as "notify the back-end with updated device
   * status as defined in the Virtio specification", while its 'Ring states' section says
   * the back-end must "stop a ring upon receiving VHOST_USER_GET_VRING_BASE", whose reply
   * is the ring's position. QEMU 7.2 stops a device with SET_STATUS 0 *before* asking
   * GET_VRING_BASE of each ring (vhost_dev_stop), and on live migration sends the
   * positions it gets to the destination, which checks them against the guest's used
   * index: answering 0 there makes the destination refuse the ring ("VQ 0 size 0x100 <
   * last_avail_idx 0x0 - used_idx 0xb"). DPDK and qemu-storage-daemon keep the positions.
   * So every ring is stopped here as GET_VRING_BASE would stop it (held work completed,
   * position recorded, kick and call released), the device is reset, and the positions
   * are carried into the fresh rings until the front-end reads or overwrites them.
   */
  private resetKeepingPositions(): void {
    const positions = this.rings.map((r) => r.stop());
    this.reset(false);
    positions.forEach((p, i) => (this.rings[i]!.base = p));
  }

  /** RESET_OWNER (everything, memory too) or RESET_DEVICE (the device). */
  private reset(owner: boolean): void {
    for (const r of this.rings) r.release();
    this.rings.forEach((_, i) => (this.rings[i] = this.newRing(i)));
    // vhost-user.rst: "QEMU should retrieve a new one when vm reset".
    this.inflight?.close();
    this.inflight = null;
    this.ackedFeatures = null;
    this.status = 0;
    if (owner) {
      this.protocolFeatures = 0n;
      this.ownerSet = false;
      this.memory.clear();
      this.log?.close();
      this.log = null;
    }
    this.updatePolling();
  }

  /** Ends the session: closes the socket, every ring fd and every mapping. */
  close(reason?: VhostUserError): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    for (const t of this.lateReplies) clearTimeout(t);
    this.lateReplies.clear();
    for (const r of this.rings) r.release();
    this.memory.close();
    this.log?.close();
    this.log = null;
    this.inflight?.close();
    this.inflight = null;
    this.stateTransfer.abort();
    this.conn.close(reason);
  }
}
