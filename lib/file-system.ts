/**
 * The file-system calls the library makes on files a user names (pcap captures,
 * conformance reports, the CLI's output files), gathered in one small interface
 * so a caller can pass another implementation: the tests pass memfs, an
 * in-memory file system, to exercise these paths without touching the disk.
 * `node:fs` is the default everywhere and fits this interface as it is.
 */
import * as fs from 'node:fs';

/** Callback of an fs call that yields a value (present when `err` is not). */
export type FsCallback<T> = (err: Error | null | undefined, value?: T) => void;

/** The subset of `node:fs` used by the pcap reader and writer and the CLI's output files. */
export interface FileSystem {
  /** `fs.open`: flags 'r' or 'w'. */
  open(path: string, flags: string, callback: FsCallback<number>): void;
  /** `fs.read` into `buffer[offset, offset + length)`; `position` null reads on from the current offset. */
  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null, callback: FsCallback<number>): void;
  /** `fs.writeSync`: returns the bytes written, which may be fewer than asked. */
  writeSync(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  /** `fs.close`. */
  close(fd: number, callback: (err: Error | null | undefined) => void): void;
  /**
   * `fs.readFileSync` without an encoding: the file's bytes. (memfs's typings also allow a
   * string, which it returns only when given an encoding; the library accepts either.)
   */
  readFileSync(path: string): Uint8Array | string;
  /** `fs.writeFileSync`: creates or truncates `path`. */
  writeFileSync(path: string, data: string | Uint8Array): void;
}

/** `node:fs` itself. */
export const nodeFileSystem: FileSystem = fs;

/** Calls a callback-style fs function as a promise (keeping `this`, which memfs needs). */
export function fsCall<T>(call: (callback: FsCallback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value as T))));
}

/** `fs.readFileSync(path)` as bytes. */
export function readFileBytes(fs: FileSystem, path: string): Uint8Array {
  const data = fs.readFileSync(path);
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
}
