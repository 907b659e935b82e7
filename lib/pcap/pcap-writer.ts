/**
 * Classic libpcap files (not pcapng), the format tcpdump -w and DPDK's pdump
 * write and every capture tool reads. Layout (draft-ietf-opsawg-pcap):
 *
 *   global header, 24 bytes: u32 magic; u16 version_major=2; u16 version_minor=4;
 *     i32 thiszone=0; u32 sigfigs=0; u32 snaplen; u32 linktype
 *   per record, 16 bytes: u32 ts_sec; u32 ts_usec|ts_nsec; u32 caplen; u32 len; caplen bytes
 *
 * The writer always writes little-endian (the byte order a reader detects from the
 * magic; the host order on every platform this library runs on).
 */
import { VhostUserError } from '../errors.js';
import type { FileSystem } from '../file-system.js';
import { BufferedFile } from './buffered-file.js';

/** Magic for microsecond timestamps, as read in the file's own byte order. */
export const PCAP_MAGIC_MICROS = 0xa1b2c3d4;
/** Magic for nanosecond timestamps (the variant libpcap writes with PCAP_TSTAMP_PRECISION_NANO). */
export const PCAP_MAGIC_NANOS = 0xa1b23c4d;
/** LINKTYPE_ETHERNET: frames start with the 14-byte Ethernet header, no FCS. */
export const LINKTYPE_ETHERNET = 1;
export const PCAP_GLOBAL_HEADER_SIZE = 24;
export const PCAP_RECORD_HEADER_SIZE = 16;
/**
 * The largest snaplen either side accepts: libpcap's MAXIMUM_SNAPLEN (256 KiB).
 * Bounding it keeps a record always smaller than the write buffer and lets the
 * reader reject a corrupt caplen before allocating for it.
 */
export const PCAP_MAX_SNAPLEN = 262_144;

const NS_PER_SEC = 1_000_000_000n;
const MAX_TS_NS = 0x1_0000_0000n * NS_PER_SEC; // ts_sec is a u32: until 2106

/** How {@link PcapWriter} writes its file. */
export interface PcapWriterOptions {
  /** Bytes of each frame kept in the file (1..262144); longer frames are truncated. Default 65535. */
  snaplen?: number;
  /** Write nanosecond timestamps (magic 0xa1b23c4d). Default false: microseconds. */
  nanoseconds?: boolean;
  /** Where the file is written; default `node:fs` (tests pass memfs). */
  fs?: FileSystem;
}

/**
 * Writes Ethernet frames to a pcap file. `write()` is synchronous and copies into one
 * preallocated buffer, written out when full and by `flush()`/`close()` (why: see
 * buffered-file.ts).
 */
export class PcapWriter {
  /** Records written (including those still in the buffer). */
  packets = 0;
  /** Sum of the frames' original lengths (what was on the wire, before snaplen truncation). */
  bytes = 0;

  /** The file being written, as given to {@link PcapWriter.open}. */
  readonly path: string;
  /** Bytes of each frame kept (written in the global header); longer frames are truncated. */
  readonly snaplen: number;
  /** Timestamps are written in nanoseconds rather than microseconds. */
  readonly nanoseconds: boolean;

  private readonly file: BufferedFile;
  /** Wall clock minus the monotonic clock, taken once, so default timestamps have ns resolution and never go backwards. */
  private readonly epochOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

  private constructor(file: BufferedFile, snaplen: number, nanoseconds: boolean) {
    this.file = file;
    this.path = file.path;
    this.snaplen = snaplen;
    this.nanoseconds = nanoseconds;
    const v = file.view;
    v.setUint32(0, nanoseconds ? PCAP_MAGIC_NANOS : PCAP_MAGIC_MICROS, true);
    v.setUint16(4, 2, true);
    v.setUint16(6, 4, true);
    // thiszone and sigfigs stay 0, as every modern writer leaves them.
    v.setUint32(16, snaplen, true);
    v.setUint32(20, LINKTYPE_ETHERNET, true);
    file.pos = PCAP_GLOBAL_HEADER_SIZE;
  }

  /** Creates (or truncates) `path` and prepares the global header. */
  static async open(path: string, options: PcapWriterOptions = {}): Promise<PcapWriter> {
    const snaplen = options.snaplen ?? 65535;
    if (!Number.isInteger(snaplen) || snaplen < 1 || snaplen > PCAP_MAX_SNAPLEN) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `pcap snaplen must be 1..${PCAP_MAX_SNAPLEN}, got ${snaplen}`);
    }
    return new PcapWriter(await BufferedFile.open(path, 'pcap', options.fs), snaplen, options.nanoseconds ?? false);
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.file.closed;
  }

  /**
   * Appends one frame. `timestamp` is nanoseconds since the Unix epoch (default:
   * now); microsecond files round it down. Frames longer than `snaplen` are
   * stored truncated, with their original length in the record.
   */
  write(frame: Uint8Array, timestamp?: bigint): void {
    this.file.checkOpen();
    const ts = timestamp ?? this.epochOffsetNs + process.hrtime.bigint();
    if (ts < 0n || ts >= MAX_TS_NS) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `pcap timestamp ${ts} ns is outside 1970..2106`);
    }
    const sec = ts / NS_PER_SEC;
    const subNs = Number(ts - sec * NS_PER_SEC);
    const len = frame.length;
    const caplen = len < this.snaplen ? len : this.snaplen;
    // snaplen ≤ 256 KiB, so after a flush any record fits.
    const file = this.file;
    const p = file.reserve(PCAP_RECORD_HEADER_SIZE + caplen);
    const v = file.view;
    v.setUint32(p, Number(sec), true);
    v.setUint32(p + 4, this.nanoseconds ? subNs : Math.floor(subNs / 1000), true);
    v.setUint32(p + 8, caplen, true);
    v.setUint32(p + 12, len, true);
    // Only a truncated frame needs a (small) subarray view; the usual case copies straight from the caller's bytes.
    file.buf.set(caplen === len ? frame : frame.subarray(0, caplen), p + PCAP_RECORD_HEADER_SIZE);
    file.pos = p + PCAP_RECORD_HEADER_SIZE + caplen;
    this.packets++;
    this.bytes += len;
  }

  /** Writes the buffered records to the file now (e.g. so tshark can read a capture still being written). */
  flush(): void {
    this.file.flush();
  }

  /** Flushes and closes the file. Idempotent; the file is closed even if the last flush fails. */
  close(): Promise<void> {
    return this.file.close();
  }
}
