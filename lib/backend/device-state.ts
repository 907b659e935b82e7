/**
 * The reference back-end's side of "Migrating back-end state" (vhost-user.rst;
 * protocol feature DEVICE_STATE): SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE.
 *
 * Saving writes the whole state into the front-end's pipe at once (it is a few
 * dozen bytes, far below a pipe's buffer) and closes it; loading keeps the fd
 * and reads it at CHECK_DEVICE_STATE, which the front-end sends only after
 * closing its end, so the stream is complete by then (or was cut short).
 *
 * The stream: "VUDS", u32 version 1, u32 virtio device ID, u32 payload length, the
 * device model's payload, u32 FNV-1a of everything before it. A stream that is
 * truncated, too long, of another device or with a wrong checksum is refused,
 * and CHECK_DEVICE_STATE then answers non-zero.
 */
import { readSync, writeSync } from 'node:fs';
import { C, closeFd, libc } from '../native/libc.js';
import type { DeviceModel } from './devices/device.js';

const MAGIC = 0x53445556; // "VUDS" little-endian
const VERSION = 1;
const HEADER = 16;
const MAX_STATE = 1 << 20;

/** vhost-user.rst, 'Device state transfer parameters': direction. */
export const SAVE = 0;

function fnv1a(b: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193) >>> 0;
  return h;
}

/** One connection's transfer in progress: what CHECK_DEVICE_STATE reports. */
export class DeviceStateTransfer {
  private loadFd = -1;
  private result: string | null = null;

  constructor(private readonly device: DeviceModel) {}

  /** The virtio device ID (virtio 1.2 §5: net 1, blk 2) the stream is tagged with. */
  private get kind(): number {
    return this.device.deviceId ?? 0;
  }

  /** SET_DEVICE_STATE_FD: a save writes the state now; a load keeps `fd` until CHECK_DEVICE_STATE. Takes `fd`. */
  begin(direction: number, fd: number): void {
    this.abort();
    if (direction === SAVE) {
      try {
        const payload = this.device.saveState!();
        const out = new Uint8Array(HEADER + payload.length + 4);
        const dv = new DataView(out.buffer);
        dv.setUint32(0, MAGIC, true);
        dv.setUint32(4, VERSION, true);
        dv.setUint32(8, this.kind, true);
        dv.setUint32(12, payload.length, true);
        out.set(payload, HEADER);
        dv.setUint32(HEADER + payload.length, fnv1a(out.subarray(0, HEADER + payload.length)), true);
        for (let off = 0; off < out.length; ) off += writeSync(fd, out, off);
        this.result = null;
      } catch (e) {
        this.result = `saving failed: ${(e as Error).message}`;
      } finally {
        closeFd(fd);
      }
      return;
    }
    // Non-blocking, so a front-end that asks CHECK_DEVICE_STATE before closing its end is refused, not waited for.
    libc.fcntl(fd, C.F_SETFL, C.O_NONBLOCK);
    this.loadFd = fd;
    this.result = 'the state was not checked yet';
  }

  /** CHECK_DEVICE_STATE: null on success, else why it failed. */
  check(): string | null {
    if (this.loadFd >= 0) {
      const fd = this.loadFd;
      this.loadFd = -1;
      try {
        this.result = this.load(fd);
      } finally {
        closeFd(fd);
      }
    }
    return this.result;
  }

  private load(fd: number): string | null {
    const buf = Buffer.alloc(MAX_STATE + 1);
    let n = 0;
    try {
      for (;;) {
        const r = readSync(fd, buf, n, buf.length - n, null);
        if (r === 0) break;
        n += r;
        if (n > MAX_STATE) return 'the state stream is too long';
      }
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EAGAIN' ? 'the state stream was not closed by the front-end' : `reading the state failed: ${(e as Error).message}`;
    }
    if (n < HEADER + 4) return `the state stream is truncated (${n} bytes)`;
    const dv = new DataView(buf.buffer, buf.byteOffset, n);
    if (dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== VERSION) return 'the state stream has no valid header';
    if (dv.getUint32(8, true) !== this.kind) return 'the state is of another device';
    const len = dv.getUint32(12, true);
    if (n !== HEADER + len + 4) return `the state stream is ${n} bytes, its header says ${HEADER + len + 4}`;
    if (dv.getUint32(HEADER + len, true) !== fnv1a(buf.subarray(0, HEADER + len))) return 'the state stream is corrupt (checksum)';
    try {
      this.device.loadState!(buf.subarray(HEADER, HEADER + len));
    } catch (e) {
      return `the state was refused: ${(e as Error).message}`;
    }
    return null;
  }

  /** Drops a load not checked. Idempotent. */
  abort(): void {
    if (this.loadFd >= 0) closeFd(this.loadFd);
    this.loadFd = -1;
  }
}
