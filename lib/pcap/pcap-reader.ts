/**
 * Reads classic libpcap files of Ethernet frames: both magics (microsecond and
 * nanosecond timestamps) in both byte orders. Anything malformed fails with
 * VHOST_BAD_PCAP naming the byte offset, rather than yielding garbage frames
 * into a test or onto a virtqueue.
 */
import { VhostUserError } from '../errors.js';
import { fsCall, nodeFileSystem, readFileBytes, type FileSystem } from '../file-system.js';
import {
  LINKTYPE_ETHERNET,
  PCAP_GLOBAL_HEADER_SIZE as GLOBAL,
  PCAP_MAGIC_MICROS,
  PCAP_MAGIC_NANOS,
  PCAP_MAX_SNAPLEN,
  PCAP_RECORD_HEADER_SIZE as RECORD,
} from './pcap-writer.js';

/** One captured frame. */
export interface PcapRecord {
  /** Nanoseconds since the Unix epoch (microsecond files: a multiple of 1000). */
  timestampNs: bigint;
  /** The captured bytes (`caplen` of them); shorter than `originalLength` when the capture was truncated. */
  data: Uint8Array;
  /** The frame's length on the wire. */
  originalLength: number;
}

/** What the global header says. */
export interface PcapFileInfo {
  /** Byte order the writer used, told by the magic number; every header field is read in it. */
  littleEndian: boolean;
  /** Timestamps are seconds + nanoseconds (magic 0xa1b23c4d); false: seconds + microseconds (0xa1b2c3d4). */
  nanoseconds: boolean;
  /** Format major version (2 in every file written since 1998). */
  versionMajor: number;
  /** Format minor version (4). */
  versionMinor: number;
  /** Most bytes of a frame the writer kept; longer frames were truncated to it. */
  snaplen: number;
  /** LINKTYPE_* of every record (1: Ethernet, the only one this library writes). */
  linkType: number;
}

/** Where a pcap file is read from. */
export interface PcapReadOptions {
  /** Default `node:fs` (tests pass memfs). */
  fs?: FileSystem;
}

const PCAPNG_MAGIC = 0x0a0d0d0a;
const READ_CHUNK = 1 << 20;

function bad(source: string, offset: number, what: string): VhostUserError {
  return new VhostUserError('VHOST_BAD_PCAP', `${source}: ${what} at byte offset ${offset}`);
}

/** Decodes and checks the 24-byte global header. `bytes` must hold at least 24 bytes. */
function parseGlobalHeader(bytes: Uint8Array, source: string): PcapFileInfo {
  const v = new DataView(bytes.buffer, bytes.byteOffset, GLOBAL);
  const magicLe = v.getUint32(0, true);
  const magicBe = v.getUint32(0, false);
  let littleEndian: boolean;
  let nanoseconds: boolean;
  if (magicLe === PCAP_MAGIC_MICROS || magicLe === PCAP_MAGIC_NANOS) {
    littleEndian = true;
    nanoseconds = magicLe === PCAP_MAGIC_NANOS;
  } else if (magicBe === PCAP_MAGIC_MICROS || magicBe === PCAP_MAGIC_NANOS) {
    littleEndian = false;
    nanoseconds = magicBe === PCAP_MAGIC_NANOS;
  } else {
    const hint = magicLe === PCAPNG_MAGIC ? ' (a pcapng file: convert with `editcap -F pcap`)' : '';
    throw bad(source, 0, `not a pcap file, magic 0x${magicBe.toString(16).padStart(8, '0')}${hint}`);
  }
  const info: PcapFileInfo = {
    littleEndian,
    nanoseconds,
    versionMajor: v.getUint16(4, littleEndian),
    versionMinor: v.getUint16(6, littleEndian),
    snaplen: v.getUint32(16, littleEndian),
    linkType: v.getUint32(20, littleEndian),
  };
  if (info.versionMajor !== 2) throw bad(source, 4, `unsupported pcap version ${info.versionMajor}.${info.versionMinor}`);
  // The whole 32-bit field must be 1: the upper bits would announce an FCS
  // appended to every frame, which virtio-net frames never carry.
  if (info.linkType !== LINKTYPE_ETHERNET) {
    throw bad(source, 20, `link type ${info.linkType} is not Ethernet (${LINKTYPE_ETHERNET})`);
  }
  return info;
}

/**
 * Decodes the record header at `pos` of `bytes` (which must hold 16 bytes there)
 * and checks caplen; `fileOffset` is the file offset of `bytes[0]`, for messages.
 */
function recordHeader(
  bytes: Uint8Array,
  pos: number,
  info: PcapFileInfo,
  fileOffset: number,
  source: string,
): { timestampNs: bigint; caplen: number; len: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset + pos, RECORD);
  const le = info.littleEndian;
  const sec = v.getUint32(0, le);
  const frac = v.getUint32(4, le);
  const caplen = v.getUint32(8, le);
  const len = v.getUint32(12, le);
  const at = fileOffset + pos;
  if (caplen > PCAP_MAX_SNAPLEN) throw bad(source, at, `record caplen ${caplen} exceeds ${PCAP_MAX_SNAPLEN}`);
  if (caplen > info.snaplen) throw bad(source, at, `record caplen ${caplen} exceeds the file's snaplen ${info.snaplen}`);
  if (len < caplen) throw bad(source, at, `record caplen ${caplen} exceeds its original length ${len}`);
  const timestampNs = BigInt(sec) * 1_000_000_000n + BigInt(info.nanoseconds ? frac : frac * 1000);
  return { timestampNs, caplen, len };
}

/**
 * Parses a whole pcap file held in memory. Yielded `data` are views into `bytes`
 * (no copies). `source` names the bytes in error messages.
 */
export function* parsePcap(bytes: Uint8Array, source = '<buffer>'): Generator<PcapRecord, PcapFileInfo, undefined> {
  if (bytes.length < GLOBAL) throw bad(source, 0, `truncated global header (${bytes.length} of ${GLOBAL} bytes)`);
  const info = parseGlobalHeader(bytes, source);
  let pos = GLOBAL;
  while (pos < bytes.length) {
    if (bytes.length - pos < RECORD) throw bad(source, pos, `truncated record header`);
    const h = recordHeader(bytes, pos, info, 0, source);
    const start = pos + RECORD;
    if (bytes.length - start < h.caplen) {
      throw bad(source, pos, `truncated record: ${h.caplen} bytes announced, ${bytes.length - start} present`);
    }
    yield { timestampNs: h.timestampNs, data: bytes.subarray(start, start + h.caplen), originalLength: h.len };
    pos = start + h.caplen;
  }
  return info;
}

/**
 * Streams the records of a pcap file, reading 1 MiB at a time, so captures of
 * any size can be replayed. Each yielded `data` is a view into a chunk buffer
 * that is never reused (keeping a frame keeps at most its chunk alive).
 */
export async function* readPcap(path: string, options: PcapReadOptions = {}): AsyncGenerator<PcapRecord, PcapFileInfo, undefined> {
  const fs = options.fs ?? nodeFileSystem;
  const fd = await fsCall<number>((cb) => fs.open(path, 'r', cb)).catch((e: NodeJS.ErrnoException) => {
    throw new VhostUserError('VHOST_SYSCALL', `cannot open pcap file ${path}: ${e.message}`, { errno: e.code, cause: e });
  });
  try {
    let buf: Uint8Array = new Uint8Array(0); // unconsumed bytes, starting at file offset `base`
    let base = 0;
    let eof = false;
    /** Reads until `buf` holds `need` bytes or the file ends; a new chunk starts with the leftover, the only bytes copied. */
    const fill = async (need: number): Promise<boolean> => {
      while (buf.length < need && !eof) {
        const next = new Uint8Array(buf.length + Math.max(READ_CHUNK, need - buf.length));
        next.set(buf);
        const bytesRead = await fsCall<number>((cb) => fs.read(fd, next, buf.length, next.length - buf.length, null, cb));
        if (bytesRead === 0) eof = true;
        buf = next.subarray(0, buf.length + bytesRead);
      }
      return buf.length >= need;
    };
    const consume = (n: number): void => {
      buf = buf.subarray(n);
      base += n;
    };

    if (!(await fill(GLOBAL))) throw bad(path, 0, `truncated global header (${buf.length} of ${GLOBAL} bytes)`);
    const info = parseGlobalHeader(buf, path);
    consume(GLOBAL);
    // Await only when the buffer runs short: an await per record would cost more than the parsing.
    while (buf.length > 0 || (await fill(1))) {
      if (buf.length < RECORD && !(await fill(RECORD))) throw bad(path, base, `truncated record header`);
      const h = recordHeader(buf, 0, info, base, path);
      if (buf.length < RECORD + h.caplen && !(await fill(RECORD + h.caplen))) {
        throw bad(path, base, `truncated record: ${h.caplen} bytes announced, ${buf.length - RECORD} present`);
      }
      const data = buf.subarray(RECORD, RECORD + h.caplen);
      consume(RECORD + h.caplen);
      yield { timestampNs: h.timestampNs, data, originalLength: h.len };
    }
    return info;
  } finally {
    await fsCall<void>((cb) => fs.close(fd, cb));
  }
}

/**
 * Reads every frame of a (small) pcap file at once, e.g. for `net send --pcap`.
 * The whole file is loaded into memory; use {@link readPcap} for big captures.
 */
export function readPcapFrames(path: string, options: PcapReadOptions = {}): Uint8Array[] {
  let bytes: Uint8Array;
  try {
    bytes = readFileBytes(options.fs ?? nodeFileSystem, path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new VhostUserError('VHOST_SYSCALL', `cannot read pcap file ${path}: ${err.message}`, { errno: err.code, cause: e });
  }
  return Array.from(parsePcap(bytes, path), (r) => r.data);
}
