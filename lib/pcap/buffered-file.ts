/**
 * The file under both capture writers ({@link PcapWriter}, {@link PcapngWriter}): one
 * preallocated 1 MiB buffer that records are built in, written out synchronously with
 * `fs.writeSync` when the next record would not fit, on flush() and on close().
 *
 * Why synchronous rather than a FileHandle: a capture sits in a hot RX/TX loop, and a
 * sync write keeps records in order, needs no queue of pending buffers and no await per
 * packet, and reports a failed write (ENOSPC) at the call that caused it. The price is
 * blocking for one ≤1 MiB write per MiB captured, which into the page cache is a
 * fraction of a millisecond. Opening and closing are async because they may be slow on
 * network file systems and happen once. Data is not fsync'ed: a capture is a debugging
 * artefact, not a database.
 */
import { VhostUserError } from '../errors.js';
import { fsCall, nodeFileSystem, type FileSystem } from '../file-system.js';

/** Bytes buffered before a write; every record of either format is smaller. */
export const CAPTURE_BUFFER_SIZE = 1 << 20;

/** @internal */
export class BufferedFile {
  /** The buffer records are built in, from {@link pos}. */
  readonly buf = new Uint8Array(CAPTURE_BUFFER_SIZE);
  /** A view of {@link buf}. */
  readonly view = new DataView(this.buf.buffer);
  /** Bytes of {@link buf} in use. */
  pos = 0;

  private constructor(
    private readonly fs: FileSystem,
    /** The file, as given to open(). */
    readonly path: string,
    private fd: number,
    /** What the file is, for error messages ("pcap", "pcapng"). */
    private readonly kind: string,
  ) {}

  /** Creates (or truncates) `path`. */
  static async open(path: string, kind: string, fs: FileSystem = nodeFileSystem): Promise<BufferedFile> {
    try {
      return new BufferedFile(fs, path, await fsCall<number>((cb) => fs.open(path, 'w', cb)), kind);
    } catch (e) {
      throw syscallError(`cannot create ${kind} file ${path}`, e);
    }
  }

  /** Whether close() has been called. */
  get closed(): boolean {
    return this.fd < 0;
  }

  /** Throws VHOST_INVALID_STATE once closed. */
  checkOpen(): void {
    if (this.fd < 0) throw new VhostUserError('VHOST_INVALID_STATE', `${this.kind} writer for ${this.path} is closed`);
  }

  /** Makes room for a record of `size` bytes (writing the buffer out if needed); returns where it starts. */
  reserve(size: number): number {
    if (this.pos + size > CAPTURE_BUFFER_SIZE) this.flush();
    return this.pos;
  }

  /** Writes the buffered records to the file now (e.g. so tshark can read a capture still being written). */
  flush(): void {
    this.checkOpen();
    let off = 0;
    try {
      // writeSync may write less than asked (signals, some file systems); loop until done.
      while (off < this.pos) off += this.fs.writeSync(this.fd, this.buf, off, this.pos - off);
    } catch (e) {
      // Keep what was not written, so a retried flush() does not lose or duplicate records.
      this.buf.copyWithin(0, off, this.pos);
      this.pos -= off;
      throw syscallError(`writing ${this.kind} file ${this.path}`, e);
    }
    this.pos = 0;
  }

  /** Flushes and closes the file. Idempotent; the file is closed even if the last flush fails. */
  async close(): Promise<void> {
    if (this.fd < 0) return;
    let flushError: Error | undefined;
    try {
      this.flush();
    } catch (e) {
      flushError = e instanceof Error ? e : new Error(String(e));
    }
    const fd = this.fd;
    this.fd = -1;
    try {
      await fsCall<void>((cb) => this.fs.close(fd, cb));
    } catch (e) {
      flushError ??= syscallError(`closing ${this.kind} file ${this.path}`, e);
    }
    if (flushError !== undefined) throw flushError;
  }
}

function syscallError(what: string, e: unknown): VhostUserError {
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  return new VhostUserError('VHOST_SYSCALL', `${what}: ${(e as Error).message}`, { errno, cause: e });
}
