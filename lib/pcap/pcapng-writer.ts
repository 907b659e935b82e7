/**
 * pcapng files (draft-ietf-opsawg-pcapng): one Section Header Block, the
 * Interface Description Blocks given to open(), then one Enhanced Packet Block
 * per packet with optional `epb_flags` (direction) and `opt_comment`.
 *
 * Every block is `u32 type, u32 total length, body, u32 total length`; the body
 * and each option value are padded to 4 bytes. Little-endian throughout (the
 * SHB's byte-order magic tells readers). Timestamps are written in nanoseconds
 * (`if_tsresol` = 9 on every interface).
 *
 * Like {@link PcapWriter}: blocks are built in one preallocated buffer and
 * written synchronously when it fills, on flush() and on close().
 */
import { VhostUserError } from '../errors.js';
import type { FileSystem } from '../file-system.js';
import { BufferedFile } from './buffered-file.js';

/** Block types. */
export const PCAPNG_SHB = 0x0a0d0d0a;
/** Interface Description Block. */
export const PCAPNG_IDB = 0x00000001;
/** Enhanced Packet Block. */
export const PCAPNG_EPB = 0x00000006;
/** The SHB's byte-order magic. */
export const PCAPNG_BYTE_ORDER_MAGIC = 0x1a2b3c4d;
/** LINKTYPE_USER0: a private link type, for a dissector registered on it (wtap_encap USER0). */
export const LINKTYPE_USER0 = 147;
/** `epb_flags` bits 0-1: the packet was received (inbound). */
export const EPB_FLAG_INBOUND = 1;
/** `epb_flags` bits 0-1: the packet was sent (outbound). */
export const EPB_FLAG_OUTBOUND = 2;

const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;

/** The largest packet kept (bytes beyond are cut, orig len stays); far above a vhost-user message. */
export const PCAPNG_MAX_PACKET = 262_144;
const MAX_COMMENT = 65_535 - 4;

/** One interface (IDB) of the file; packets name it by its index in {@link PcapngWriterOptions.interfaces}. */
export interface PcapngInterface {
  /** LINKTYPE_* value, e.g. {@link LINKTYPE_USER0}. */
  linkType: number;
  /** Written as the IDB's snaplen; default 262144. */
  snaplen?: number;
  /** `if_name`. */
  name?: string;
  /** `if_description`. */
  description?: string;
}

/** How {@link PcapngWriter.open} writes its file. */
export interface PcapngWriterOptions {
  /** At least one interface. */
  interfaces: readonly PcapngInterface[];
  /** `shb_userappl`, e.g. `vhost-user trace`. */
  application?: string;
  /** Where the file is written; default `node:fs`. */
  fs?: FileSystem;
}

/** Per-packet options of {@link PcapngWriter.write}. */
export interface PcapngPacketOptions {
  /** Index of the interface (default 0). */
  interfaceId?: number;
  /** Nanoseconds since the Unix epoch (default now). */
  timestampNs?: bigint;
  /** `epb_flags` (e.g. {@link EPB_FLAG_INBOUND}); omitted when undefined. */
  flags?: number;
  /** `opt_comment` (UTF-8); omitted when undefined. */
  comment?: string;
}

const enc = new TextEncoder();

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/** Writes a pcapng file: SHB, IDBs, then one EPB per {@link PcapngWriter.write}. */
export class PcapngWriter {
  /** Packets written (including those still in the buffer). */
  packets = 0;
  /** The file being written. */
  readonly path: string;
  private readonly file: BufferedFile;
  private readonly interfaces: number;
  private readonly view: DataView;
  private readonly epochOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

  private constructor(file: BufferedFile, options: PcapngWriterOptions) {
    this.file = file;
    this.path = file.path;
    this.view = file.view;
    this.interfaces = options.interfaces.length;
    this.block(PCAPNG_SHB, 16, [[SHB_USERAPPL, options.application === undefined ? null : enc.encode(options.application)]], (p) => {
      this.view.setUint32(p, PCAPNG_BYTE_ORDER_MAGIC, true);
      this.view.setUint16(p + 4, 1, true); // major
      this.view.setUint16(p + 6, 0, true); // minor
      this.view.setBigInt64(p + 8, -1n, true); // section length: not given
    });
    for (const i of options.interfaces) {
      const opts: [number, Uint8Array | null][] = [
        [IF_NAME, i.name === undefined ? null : enc.encode(i.name)],
        [IF_DESCRIPTION, i.description === undefined ? null : enc.encode(i.description)],
        [IF_TSRESOL, Uint8Array.of(9)],
      ];
      this.block(PCAPNG_IDB, 8, opts, (p) => {
        this.view.setUint16(p, i.linkType, true);
        this.view.setUint16(p + 2, 0, true);
        this.view.setUint32(p + 4, i.snaplen ?? PCAPNG_MAX_PACKET, true);
      });
    }
  }

  /** Creates (or truncates) `path` and writes the section header and interfaces. */
  static async open(path: string, options: PcapngWriterOptions): Promise<PcapngWriter> {
    if (options.interfaces.length === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'a pcapng file needs at least one interface');
    for (const i of options.interfaces) {
      if (!Number.isInteger(i.linkType) || i.linkType < 0 || i.linkType > 0xffff) {
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `link type ${i.linkType} is not a u16`);
      }
    }
    return new PcapngWriter(await BufferedFile.open(path, 'pcapng', options.fs), options);
  }

  /** Whether close() ran. */
  get closed(): boolean {
    return this.file.closed;
  }

  /** Appends one Enhanced Packet Block. */
  write(data: Uint8Array, options: PcapngPacketOptions = {}): void {
    this.file.checkOpen();
    const interfaceId = options.interfaceId ?? 0;
    if (!Number.isInteger(interfaceId) || interfaceId < 0 || interfaceId >= this.interfaces) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `interface ${interfaceId} is not one of the ${this.interfaces} written`);
    }
    const ts = options.timestampNs ?? this.epochOffsetNs + process.hrtime.bigint();
    if (ts < 0n || ts >= 1n << 64n) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `pcapng timestamp ${ts} ns is not a u64`);
    const caplen = Math.min(data.length, PCAPNG_MAX_PACKET);
    let comment = options.comment === undefined ? null : enc.encode(options.comment);
    if (comment && comment.length > MAX_COMMENT) comment = comment.subarray(0, MAX_COMMENT);
    let flags: Uint8Array | null = null;
    if (options.flags !== undefined) {
      flags = new Uint8Array(4);
      new DataView(flags.buffer).setUint32(0, options.flags >>> 0, true);
    }
    this.block(PCAPNG_EPB, 20 + pad4(caplen), [[EPB_FLAGS, flags], [OPT_COMMENT, comment]], (p) => {
      const v = this.view;
      v.setUint32(p, interfaceId, true);
      v.setUint32(p + 4, Number(ts >> 32n), true);
      v.setUint32(p + 8, Number(ts & 0xffffffffn), true);
      v.setUint32(p + 12, caplen, true);
      v.setUint32(p + 16, data.length, true);
      this.file.buf.set(caplen === data.length ? data : data.subarray(0, caplen), p + 20);
      this.file.buf.fill(0, p + 20 + caplen, p + 20 + pad4(caplen));
    });
    this.packets++;
  }

  /**
   * One block: header, `fixed` bytes filled by `body` (already a multiple of 4),
   * the options present (each padded to 4, then opt_endofopt when any), trailer.
   */
  private block(type: number, fixed: number, options: [number, Uint8Array | null][], body: (at: number) => void): void {
    const present = options.filter((o): o is [number, Uint8Array] => o[1] !== null);
    const optionBytes = present.length ? present.reduce((n, [, v]) => n + 4 + pad4(v.length), 0) + 4 : 0;
    const total = 12 + fixed + optionBytes;
    const buf = this.file.buf;
    const v = this.view;
    let p = this.file.reserve(total);
    v.setUint32(p, type, true);
    v.setUint32(p + 4, total, true);
    body(p + 8);
    p += 8 + fixed;
    for (const [code, value] of present) {
      v.setUint16(p, code, true);
      v.setUint16(p + 2, value.length, true);
      buf.set(value, p + 4);
      buf.fill(0, p + 4 + value.length, p + 4 + pad4(value.length));
      p += 4 + pad4(value.length);
    }
    if (present.length) {
      v.setUint32(p, OPT_ENDOFOPT, true);
      p += 4;
    }
    v.setUint32(p, total, true);
    this.file.pos = p + 4;
  }

  /** Writes the buffered blocks to the file now (tshark can then read the capture while it grows). */
  flush(): void {
    this.file.flush();
  }

  /** Flushes and closes the file. Idempotent; the file is closed even if the last flush fails. */
  close(): Promise<void> {
    return this.file.close();
  }
}
