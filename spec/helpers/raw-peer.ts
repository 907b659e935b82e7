/**
 * A scripted back-end for client unit tests: it accepts one connection and
 * answers each request through a handler that may answer correctly, wrongly, or
 * not at all. This is for fault injection only; real back-ends are tested in the
 * integration suites.
 */
import { Connection, type VhostUserMessage } from '../../lib/transport/connection.js';
import { UnixListener } from '../../lib/transport/unix-listener.js';
import { closeAll } from '../../lib/transport/msg-scratch.js';
import { UnixStream } from '../../lib/transport/unix-stream.js';
import { FrontendRequest as R, ProtocolFeature, VirtioFeature, bit, VHOST_USER_NEED_REPLY_MASK } from '../../lib/protocol/constants.js';
import { U64, VringState } from '../../lib/protocol/payloads.js';
import { tempSocketPath } from './socket-pair.js';

export const REPLY = 0x5;

export type Handler = (m: VhostUserMessage, peer: RawPeer) => 'default' | void;

export class RawPeer {
  readonly path: string;
  readonly log: VhostUserMessage[] = [];
  features = bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
  protocolFeatures = bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.MQ) | bit(ProtocolFeature.CONFIG) | bit(ProtocolFeature.BACKEND_REQ);
  handler: Handler = () => 'default';
  connection: Connection | null = null;
  private stream: UnixStream | null = null;
  /** Our end of the back-end channel, once SET_BACKEND_REQ_FD arrived. */
  backendChannel: Connection | null = null;
  private readonly listener: UnixListener;
  private readonly tmp: ReturnType<typeof tempSocketPath> | null;

  private constructor(path?: string) {
    this.tmp = path === undefined ? tempSocketPath() : null;
    this.path = path ?? this.tmp!.path;
    this.listener = UnixListener.listen(this.path);
  }

  /** Listens on a fresh temp path, or on `path` (a peer that replaces one that went away; the caller owns its dir). */
  static start(handler?: Handler, path?: string): RawPeer {
    const peer = new RawPeer(path);
    if (handler) peer.handler = handler;
    void peer.listener.accept(5000).then(
      (stream) => {
        peer.stream = stream;
        const c = new Connection(stream);
        peer.connection = c;
        c.on('message', (m) => peer.onMessage(m));
        c.on('close', () => undefined);
      },
      () => undefined,
    );
    return peer;
  }

  reply(m: VhostUserMessage, payload: Uint8Array = new Uint8Array(0), flags = REPLY, fds: number[] = []): void {
    this.connection!.send(m.request, flags, payload, fds);
  }

  /** Bytes straight onto the socket, bypassing framing: for headers no encoder would write. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    this.stream!.send(bytes, fds);
  }

  ack(m: VhostUserMessage, value = 0n): void {
    if (m.flags & VHOST_USER_NEED_REPLY_MASK) this.reply(m, U64.encode(value));
  }

  private onMessage(m: VhostUserMessage): void {
    this.log.push(m);
    if (this.handler(m, this) === 'default') this.answer(m);
  }

  /** A well-behaved answer. Keeps fds that must stay open for checks; closes the rest. */
  answer(m: VhostUserMessage): void {
    switch (m.request) {
      case R.GET_FEATURES:
        return this.reply(m, U64.encode(this.features));
      case R.GET_PROTOCOL_FEATURES:
        return this.reply(m, U64.encode(this.protocolFeatures));
      case R.GET_QUEUE_NUM:
        return this.reply(m, U64.encode(2n));
      case R.GET_MAX_MEM_SLOTS:
        return this.reply(m, U64.encode(32n));
      case R.GET_VRING_BASE: {
        const { index } = VringState.decode(m.payload);
        return this.reply(m, VringState.encode({ index, num: 42 }));
      }
      case R.SET_BACKEND_REQ_FD: {
        this.backendChannel = new Connection(UnixStream.adopt(m.fds[0]!));
        m.fds = [];
        return this.ack(m);
      }
      default:
        if (m.request !== R.SET_MEM_TABLE) closeAll(m.fds);
        return this.ack(m);
    }
  }

  close(): void {
    for (const m of this.log) if (m.request === R.SET_MEM_TABLE) closeAll(m.fds.splice(0));
    this.backendChannel?.close();
    this.connection?.close();
    this.listener.close();
    this.tmp?.cleanup();
  }
}
