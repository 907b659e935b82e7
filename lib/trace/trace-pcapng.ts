/**
 * The trace as a pcapng capture: one Enhanced Packet Block per record, on one
 * interface of link type USER0 (147), which `wireshark/vhost-user.lua` dissects.
 *
 * Each packet is an 8-byte prefix added by the proxy, then the message exactly as
 * it was on the wire (12-byte header + payload). The prefix carries what the bytes
 * alone do not: which socket, who sent it, how many fds rode along, the connection.
 *
 * ```
 * offset size  field
 *      0    1  version: 1
 *      1    1  bits: 0 = back-end channel (SET_BACKEND_REQ_FD socket), 1 = sent by
 *              the back-end, 2 = a connection-end record instead of a message
 *      2    1  message: number of fds (SCM_RIGHTS); end record: who closed
 *              (0 front-end, 1 back-end, 2 the proxy)
 *      3    1  reserved, 0
 *      4    4  connection number, u32 little-endian
 *      8    …  message: header + payload; end record: its text, UTF-8
 * ```
 *
 * `epb_flags` carries the direction as pcapng defines it from the front-end's
 * point of view: inbound (1) for what the back-end sent, outbound (2) for what the
 * front-end sent; an end record closed by the proxy has no direction. The
 * `opt_comment` of each packet is the record's decoded one-line text.
 */
import { EPB_FLAG_INBOUND, EPB_FLAG_OUTBOUND, LINKTYPE_USER0, PcapngWriter } from '../pcap/pcapng-writer.js';
import type { FileSystem } from '../file-system.js';
import type { TraceRecord } from './trace-record.js';

/** Bytes the proxy puts before each message in the capture. */
export const TRACE_PREFIX_SIZE = 8;
/** The prefix's version byte. */
export const TRACE_PREFIX_VERSION = 1;
/** Prefix bit: the message travelled on the back-end channel. */
export const TRACE_BIT_BACKEND_CHANNEL = 1;
/** Prefix bit: the back-end sent it. */
export const TRACE_BIT_FROM_BACKEND = 2;
/** Prefix bit: a connection-end record. */
export const TRACE_BIT_CLOSE = 4;

const CLOSED_BY = { frontend: 0, backend: 1, proxy: 2 } as const;
const enc = new TextEncoder();

/** The packet bytes of one record: prefix, then the message (or the end record's text). */
export function tracePacket(r: TraceRecord): Uint8Array {
  const body = r.kind === 'message' ? r.bytes : enc.encode(r.text);
  const out = new Uint8Array(TRACE_PREFIX_SIZE + body.length);
  const v = new DataView(out.buffer);
  let bits = r.channel === 'backend' ? TRACE_BIT_BACKEND_CHANNEL : 0;
  if (r.kind === 'message') {
    if (r.from === 'backend') bits |= TRACE_BIT_FROM_BACKEND;
    out[2] = Math.min(r.fds, 255);
  } else {
    bits |= TRACE_BIT_CLOSE;
    if (r.closedBy === 'backend') bits |= TRACE_BIT_FROM_BACKEND;
    out[2] = CLOSED_BY[r.closedBy];
  }
  out[0] = TRACE_PREFIX_VERSION;
  out[1] = bits;
  v.setUint32(4, r.connection, true);
  out.set(body, TRACE_PREFIX_SIZE);
  return out;
}

/** The `epb_flags` direction of a record, or undefined (closed by the proxy). */
export function traceDirection(r: TraceRecord): number | undefined {
  const side = r.kind === 'message' ? r.from : r.closedBy;
  return side === 'backend' ? EPB_FLAG_INBOUND : side === 'frontend' ? EPB_FLAG_OUTBOUND : undefined;
}

/** Writes trace records to a pcapng file (see the layout above). */
export class TracePcapngWriter {
  private constructor(
    private readonly writer: PcapngWriter,
    private readonly startEpochMs: number,
  ) {}

  /**
   * Creates `path`. `startEpochMs` is the wall-clock time that record time 0
   * stands for ({@link TraceProxy.startEpochMs}).
   */
  static async open(path: string, startEpochMs: number, fs?: FileSystem): Promise<TracePcapngWriter> {
    const writer = await PcapngWriter.open(path, {
      application: 'vhost-user trace',
      interfaces: [{ linkType: LINKTYPE_USER0, name: 'vhost-user', description: 'vhost-user messages (8-byte trace prefix, then header and payload)' }],
      ...(fs ? { fs } : {}),
    });
    return new TracePcapngWriter(writer, startEpochMs);
  }

  /** Packets written. */
  get packets(): number {
    return this.writer.packets;
  }

  /** Appends one record. */
  write(r: TraceRecord): void {
    const flags = traceDirection(r);
    this.writer.write(tracePacket(r), {
      timestampNs: BigInt(Math.round((this.startEpochMs + r.time) * 1e6)),
      comment: r.text,
      ...(flags !== undefined ? { flags } : {}),
    });
  }

  /** Writes what is buffered. */
  flush(): void {
    this.writer.flush();
  }

  /** Flushes and closes the file. */
  close(): Promise<void> {
    return this.writer.close();
  }
}
