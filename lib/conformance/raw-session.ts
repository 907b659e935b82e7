/**
 * A front-end connection that sends exactly the bytes a check asks for, valid or
 * not, and reports what came back: a reply, a close, or silence. The suite uses it
 * where VhostUserClient would refuse to send (malformed messages) or would hide
 * what the back-end did (an ack it validates itself).
 */
import { VhostUserError } from '../errors.js';
import {
  FrontendRequest as R,
  frontendRequestName,
  hasBit,
  ProtocolFeature,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VirtioFeature,
} from '../protocol/constants.js';
import { U64 } from '../protocol/payloads.js';
import { SUPPORTED_PROTOCOL_FEATURES } from '../client/vhost-user-client.js';
import { Connection, type VhostUserMessage } from '../transport/connection.js';
import { closeAll } from '../transport/msg-scratch.js';
import { UnixStream } from '../transport/unix-stream.js';
import { fail } from './check.js';
import { messageLine, type EvidenceSink } from './evidence.js';

/** What came back after a raw send: a message, the back-end closing the socket, or nothing in time. */
export type Outcome =
  | {
      /** A message arrived. */
      kind: 'reply';
      /** The message; the caller owns its fds. */
      message: VhostUserMessage;
    }
  | {
      /** The connection closed before a message arrived. */
      kind: 'closed';
      /** Why (VHOST_DISCONNECTED when the back-end closed it); undefined when this side closed it. */
      reason: VhostUserError | undefined;
    }
  | {
      /** Nothing arrived before the deadline. */
      kind: 'silent';
    };

/** What {@link RawSession.handshake} negotiated. */
export interface RawHandshake {
  /** The back-end's GET_FEATURES answer (virtio feature bits it offers). */
  features: bigint;
  /** Its GET_PROTOCOL_FEATURES answer; 0 when it does not offer VHOST_USER_F_PROTOCOL_FEATURES. */
  offeredProtocolFeatures: bigint;
  /** What SET_PROTOCOL_FEATURES sent: the offer intersected with what was wanted. */
  protocolFeatures: bigint;
  /** VHOST_USER_PROTOCOL_F_REPLY_ACK is among `protocolFeatures`: requests can carry NEED_REPLY. */
  replyAck: boolean;
}

/** @internal Header flags of a front-end message: version 1. */
export const V1 = VHOST_USER_VERSION;
/** @internal The NEED_REPLY flag (REPLY_ACK). */
export const NEED_REPLY = VHOST_USER_NEED_REPLY_MASK;
/** @internal Header flags a reply must carry: REPLY | version 1. */
export const REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;

/**
 * A front-end connection that sends exactly the bytes a check asks for, valid or not, and
 * reports what came back; every message either way goes into the check's evidence. Get one
 * from {@link CheckContext.raw}.
 */
export class RawSession {
  private readonly queue: VhostUserMessage[] = [];
  private wake: (() => void) | null = null;
  private closedWith: { reason: VhostUserError | undefined } | null = null;
  private byUs = false;
  /** What the handshake negotiated. */
  negotiated: RawHandshake | null = null;

  private constructor(
    private readonly conn: Connection,
    private readonly stream: UnixStream,
    private readonly evidence: EvidenceSink,
    private readonly timeoutMs: number,
  ) {
    conn.on('message', (m) => {
      evidence.add(messageLine('recv', m.request, m.flags, m.payload, m.fds.length));
      this.queue.push(m);
      this.wake?.();
    });
    conn.on('close', (reason) => {
      if (!this.byUs) evidence.add(`x connection closed by the back-end${reason ? ` (${reason.code}: ${reason.message})` : ''}`);
      this.closedWith = { reason };
      this.wake?.();
    });
  }

  /** @internal Connects to `path`, or with `stream` takes one a back-end opened (server mode); checks get theirs from CheckContext.raw(). */
  static async open(path: string, evidence: EvidenceSink, timeoutMs: number, stream?: UnixStream): Promise<RawSession> {
    const s = stream ?? (await UnixStream.connect(path, { timeoutMs }));
    evidence.add(stream ? `- the back-end connected to ${path}` : `- connected to ${path}`);
    return new RawSession(new Connection(s), s, evidence, timeoutMs);
  }

  /** The connection is closed, by the back-end or by {@link RawSession.close}. */
  get isClosed(): boolean {
    return this.closedWith !== null;
  }

  /** REPLY_ACK was negotiated by {@link RawSession.handshake}; false before it. */
  get replyAck(): boolean {
    return this.negotiated?.replyAck ?? false;
  }

  /** Sends one message as given. Throws a Finding when the back-end already closed the socket. */
  send(request: number, flags: number = V1, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = []): void {
    this.evidence.add(messageLine('send', request, flags, payload, fds.length));
    try {
      this.conn.send(request, flags, payload, fds);
    } catch (e) {
      fail(`could not send ${frontendRequestName(request)}: ${(e as Error).message}`);
    }
  }

  /** Bytes straight onto the socket (headers no encoder writes). */
  sendBytes(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.evidence.add(`> raw bytes ${Buffer.from(bytes.subarray(0, 40)).toString('hex')}${fds.length ? ` fds=${fds.length}` : ''}`);
    this.stream.send(bytes, [...fds]);
  }

  /** The next message, a close, or silence after `ms`. The caller owns the message's fds. */
  async next(ms = this.timeoutMs): Promise<Outcome> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = this.queue.shift();
      if (m) return { kind: 'reply', message: m };
      if (this.closedWith) return { kind: 'closed', reason: this.closedWith.reason };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: 'silent' };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.wake = done;
      });
      this.wake = null;
    }
  }

  /**
   * Sends a request that must be answered and returns the answer, checked to be a
   * reply (flags REPLY | version 1) to this request. A close or silence is a Finding.
   */
  async call(request: number, payload?: Uint8Array, options: { flags?: number; fds?: readonly number[]; keepFds?: boolean } = {}): Promise<VhostUserMessage> {
    this.send(request, options.flags ?? V1, payload, options.fds);
    const out = await this.next();
    const name = frontendRequestName(request);
    if (out.kind === 'closed') fail(`the back-end closed the connection instead of answering ${name}${out.reason ? ` (${out.reason.code})` : ''}`);
    if (out.kind === 'silent') fail(`no answer to ${name} within ${this.timeoutMs} ms`);
    const m = out.message;
    if (!options.keepFds) closeAll(m.fds.splice(0));
    if (m.flags !== REPLY_FLAGS) fail(`the reply to ${name} has flags 0x${m.flags.toString(16)}, not 0x5 (REPLY | version 1)`);
    if (m.request !== request) fail(`the reply to ${name} carries request code ${m.request}`);
    return m;
  }

  /** A request whose reply is a u64 (GET_FEATURES, an ack). */
  async u64(request: number, payload?: Uint8Array, flags = V1, fds?: readonly number[]): Promise<bigint> {
    const m = await this.call(request, payload, { flags, ...(fds ? { fds } : {}) });
    if (m.payload.length !== 8) fail(`the reply to request ${request} is ${m.payload.length} bytes, not a u64 (8)`);
    return U64.decode(m.payload);
  }

  /**
   * What QEMU sends when it creates a device: GET_FEATURES, GET/SET_PROTOCOL_FEATURES
   * (the offer intersected with `want`, default what this library supports) and
   * SET_OWNER, acknowledged when REPLY_ACK was negotiated.
   */
  async handshake(want: bigint = SUPPORTED_PROTOCOL_FEATURES): Promise<RawHandshake> {
    const features = await this.u64(R.GET_FEATURES);
    let offered = 0n;
    let negotiated = 0n;
    if (hasBit(features, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) {
      offered = await this.u64(R.GET_PROTOCOL_FEATURES);
      negotiated = offered & want;
      this.send(R.SET_PROTOCOL_FEATURES, V1, U64.encode(negotiated));
    }
    this.negotiated = { features, offeredProtocolFeatures: offered, protocolFeatures: negotiated, replyAck: hasBit(negotiated, ProtocolFeature.REPLY_ACK) };
    await this.expectAck(R.SET_OWNER);
    return this.negotiated;
  }

  /**
   * Sends a well-formed request that takes no reply of its own: with REPLY_ACK it
   * must be acknowledged with 0; without, a GET_FEATURES barrier must be answered.
   */
  async expectAck(request: number, payload?: Uint8Array, fds?: readonly number[]): Promise<void> {
    if (this.replyAck) {
      const ack = await this.u64(request, payload, V1 | NEED_REPLY, fds);
      if (ack !== 0n) fail(`the back-end refused a well-formed request (ack ${ack})`);
      return;
    }
    this.send(request, V1, payload, fds);
    await this.u64(R.GET_FEATURES);
  }

  /** Closes the connection and every fd of messages not taken with next(). Idempotent. */
  close(): void {
    this.byUs = true;
    this.conn.close();
    for (const m of this.queue.splice(0)) closeAll(m.fds);
  }
}
