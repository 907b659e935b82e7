/**
 * The back-end request channel (vhost-user.rst, "Back-end communication"): a
 * socketpair whose other end went to the back-end with SET_BACKEND_REQ_FD. The
 * back-end sends requests here; we answer a u64 (0 success, non-zero failure)
 * when it sets NEED_REPLY, or always for requests that have a reply of their own.
 *
 * What this library has no use for (IOTLB, shared objects, shared memory maps) is
 * answered "not supported", as QEMU does for requests it does not handle.
 * Malformed messages break the channel and, through the client, the connection:
 * a back-end that cannot frame its own requests cannot be trusted with rings.
 */
import { EventEmitter } from 'eventemitter3';
import { VhostUserError } from '../errors.js';
import { BackendRequest, hasBit, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK, VHOST_USER_VERSION } from '../protocol/constants.js';
import { U64, type VringArea, type VringState } from '../protocol/payloads.js';
import { requireBackendRequestSpec } from '../protocol/requests.js';
import type { Connection, VhostUserMessage } from '../transport/connection.js';
import { closeAll } from '../transport/msg-scratch.js';
import { traceEvent, type TraceHook } from './trace.js';

/** Failure value for requests we do not serve: -ENOTSUP as QEMU would put it, as u64. */
const NOT_SUPPORTED = BigInt.asUintN(64, -95n);

/** A VRING_HOST_NOTIFIER_MSG from the back-end (vhost-user.rst, 'VhostUserVringArea'). */
export interface HostNotifier {
  /** The vring the notification area belongs to. */
  index: number;
  /** fd of the notification area, or null when the back-end withdrew it (NOFD). Owned by the client. */
  fd: number | null;
  /** Size of the area in bytes. */
  size: bigint;
  /** Offset of the area in the fd. */
  offset: bigint;
}

export interface BackendChannelEvents {
  'config-change': () => void;
  'vring-call': (index: number) => void;
  'vring-err': (index: number) => void;
  'host-notifier': (notifier: HostNotifier) => void;
  /** A request this library answered "not supported" (name, e.g. IOTLB_MSG). */
  unsupported: (request: string) => void;
  broken: (error: VhostUserError) => void;
}

export class BackendChannel extends EventEmitter<BackendChannelEvents> {
  private readonly connection: Connection;
  private readonly protocolFeatures: bigint;
  private readonly trace: TraceHook | undefined;
  private closed = false;

  constructor(connection: Connection, protocolFeatures: bigint, trace?: TraceHook) {
    super();
    this.connection = connection;
    this.protocolFeatures = protocolFeatures;
    this.trace = trace;
    connection.on('message', (m) => this.onMessage(m));
    connection.on('close', (error) => {
      if (!this.closed && error) this.emit('broken', error);
      this.closed = true;
    });
  }

  close(): void {
    this.closed = true;
    this.connection.close();
  }

  private onMessage(m: VhostUserMessage): void {
    this.trace?.(traceEvent('recv', 'backend', m.request, m.flags, m.payload, m.fds.length));
    let result: bigint;
    try {
      if (m.flags & VHOST_USER_REPLY_MASK) {
        throw new VhostUserError('VHOST_BAD_FLAGS', `back-end request ${m.request} has the REPLY flag set`, { rule: 'vhost-user.rst, "Header": requests do not set the reply flag' });
      }
      result = this.handle(m);
    } catch (e) {
      closeAll(m.fds);
      const error = e instanceof VhostUserError ? e : new VhostUserError('VHOST_INVALID_PAYLOAD', String(e), { cause: e });
      this.closed = true;
      this.connection.close(error);
      this.emit('broken', error);
      return;
    }
    const spec = requireBackendRequestSpec(m.request);
    if (m.flags & VHOST_USER_NEED_REPLY_MASK || spec.replyAlways) {
      const payload = U64.encode(result);
      const flags = VHOST_USER_REPLY_MASK | VHOST_USER_VERSION;
      this.trace?.(traceEvent('send', 'backend', m.request, flags, payload, 0));
      if (!this.connection.isClosed) this.connection.send(m.request, flags, payload);
    }
  }

  /** Validates and serves one request; returns the u64 answer. Takes ownership of m.fds. */
  private handle(m: VhostUserMessage): bigint {
    const spec = requireBackendRequestSpec(m.request);
    const payload = spec.payload ? spec.payload.decode(m.payload, spec.name) : null;
    if (!spec.payload && m.payload.length !== 0) {
      throw new VhostUserError('VHOST_BAD_PAYLOAD_SIZE', `${spec.name} carries no payload, got ${m.payload.length} bytes`, { request: spec.name });
    }
    const maxFds = spec.fds === 'none' ? 0 : 1;
    if (m.fds.length > maxFds) {
      throw new VhostUserError('VHOST_UNEXPECTED_FDS', `${spec.name} carries ${m.fds.length} fd(s), at most ${maxFds}`, { request: spec.name });
    }
    if (spec.requires !== undefined && !hasBit(this.protocolFeatures, spec.requires)) {
      closeAll(m.fds);
      this.emit('unsupported', spec.name);
      return NOT_SUPPORTED;
    }
    switch (m.request) {
      case BackendRequest.CONFIG_CHANGE_MSG:
        this.emit('config-change');
        return 0n;
      case BackendRequest.VRING_CALL:
        this.emit('vring-call', (payload as VringState).index);
        return 0n;
      case BackendRequest.VRING_ERR:
        this.emit('vring-err', (payload as VringState).index);
        return 0n;
      case BackendRequest.VRING_HOST_NOTIFIER_MSG: {
        const { index, nofd, size, offset } = payload as VringArea;
        if (nofd === (m.fds.length === 1)) {
          throw new VhostUserError('VHOST_UNEXPECTED_FDS', `${spec.name}: NOFD is ${nofd} but ${m.fds.length} fd(s) came`, { request: spec.name });
        }
        this.emit('host-notifier', { index, fd: m.fds[0] ?? null, size, offset });
        return 0n;
      }
      default:
        closeAll(m.fds);
        this.emit('unsupported', spec.name);
        return NOT_SUPPORTED;
    }
  }
}
