/**
 * sendmsg/recvmsg with SCM_RIGHTS through a private scratch mapping that holds the
 * msghdr, the iovec, the control buffer and the data bytes. Each socket owns one,
 * so a message costs two copies of at most a few KiB and no allocation.
 *
 * Layout assumes LP64 Linux (x86_64, arm64): msghdr is 56 bytes, iovec 16,
 * cmsghdr 16 followed by the int fds.
 */
import { C, closeFd, errno, libc } from '../native/libc.js';
import { Mapping } from '../native/mapping.js';

const MSGHDR = 0;
const IOVEC = 64;
const CONTROL = 128;
/** Room for twice the 8 fds vhost-user allows, so an excess is seen (and closed) rather than truncated. */
export const RECV_FD_CAPACITY = 16;
const CONTROL_LEN = 16 + RECV_FD_CAPACITY * 4;
const DATA = 4096;
/** A whole vhost-user message: 12-byte header plus the 4 KiB practical payload maximum. */
export const SCRATCH_DATA_CAPACITY = 8192;
const SCRATCH_SIZE = DATA + SCRATCH_DATA_CAPACITY;

/** What one recvmsg(2) returned. */
export interface RecvResult {
  /** Bytes received; 0 means the peer closed; -1 means errno (see `error`). */
  n: number;
  /** The errno when `n` is -1, else 0. */
  error: number;
  /** fds that arrived with these bytes; the caller owns them. */
  fds: number[];
  /** The kernel dropped fds that did not fit (MSG_CTRUNC). */
  fdsTruncated: boolean;
}

export class MsgScratch {
  private readonly mapping = Mapping.anonymous(SCRATCH_SIZE);
  private readonly view = this.mapping.dataView(0, SCRATCH_SIZE);
  /** The data area, exposed so callers can encode into it or read out of it. */
  readonly data = this.mapping.bytes(DATA, SCRATCH_DATA_CAPACITY);

  private setup(dataOffset: number, length: number, controlLength: number): void {
    const base = this.mapping.address;
    const v = this.view;
    v.setBigUint64(MSGHDR + 0, 0n, true); // msg_name
    v.setUint32(MSGHDR + 8, 0, true); // msg_namelen
    v.setBigUint64(MSGHDR + 16, BigInt(base + IOVEC), true); // msg_iov
    v.setBigUint64(MSGHDR + 24, 1n, true); // msg_iovlen
    v.setBigUint64(MSGHDR + 32, controlLength ? BigInt(base + CONTROL) : 0n, true);
    v.setBigUint64(MSGHDR + 40, BigInt(controlLength), true);
    v.setInt32(MSGHDR + 48, 0, true); // msg_flags
    v.setBigUint64(IOVEC + 0, BigInt(base + DATA + dataOffset), true);
    v.setBigUint64(IOVEC + 8, BigInt(length), true);
  }

  /**
   * Sends data[dataOffset, dataOffset + length) with `fds` as SCM_RIGHTS.
   * Returns bytes sent, or -1 with errno in `lastErrno`.
   */
  sendmsg(fd: number, dataOffset: number, length: number, fds: readonly number[]): number {
    const controlLength = fds.length ? 16 + align8(fds.length * 4) : 0;
    this.setup(dataOffset, length, controlLength);
    if (fds.length) {
      const v = this.view;
      v.setBigUint64(CONTROL + 0, BigInt(16 + fds.length * 4), true); // cmsg_len = CMSG_LEN
      v.setInt32(CONTROL + 8, C.SOL_SOCKET, true);
      v.setInt32(CONTROL + 12, C.SCM_RIGHTS, true);
      fds.forEach((f, i) => v.setInt32(CONTROL + 16 + i * 4, f, true));
    }
    const n = libc.sendmsg(fd, this.mapping.address + MSGHDR, C.MSG_NOSIGNAL | C.MSG_DONTWAIT);
    this.lastErrno = n < 0 ? errno() : 0;
    return n;
  }

  lastErrno = 0;

  /** Receives up to `length` bytes into data[dataOffset...]. */
  recvmsg(fd: number, dataOffset: number, length: number): RecvResult {
    this.setup(dataOffset, length, CONTROL_LEN);
    const n = libc.recvmsg(fd, this.mapping.address + MSGHDR, C.MSG_CMSG_CLOEXEC | C.MSG_DONTWAIT);
    if (n < 0) return { n: -1, error: errno(), fds: [], fdsTruncated: false };
    const v = this.view;
    const flags = v.getInt32(MSGHDR + 48, true);
    const controlLength = Number(v.getBigUint64(MSGHDR + 40, true));
    const fds: number[] = [];
    // Walk every cmsg: a peer may send several SCM_RIGHTS headers, and fds from
    // each must be collected so that none leaks.
    let off = 0;
    while (off + 16 <= controlLength) {
      const len = Number(v.getBigUint64(CONTROL + off, true));
      if (len < 16 || off + len > controlLength) break;
      const level = v.getInt32(CONTROL + off + 8, true);
      const type = v.getInt32(CONTROL + off + 12, true);
      if (level === C.SOL_SOCKET && type === C.SCM_RIGHTS) {
        for (let p = 16; p + 4 <= len; p += 4) fds.push(v.getInt32(CONTROL + off + p, true));
      }
      off += 16 + align8(len - 16);
    }
    return { n, error: 0, fds, fdsTruncated: (flags & C.MSG_CTRUNC) !== 0 };
  }

  close(): void {
    this.mapping.close();
  }
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Closes fds a message brought but nobody wanted. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}
