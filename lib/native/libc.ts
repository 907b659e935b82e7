/**
 * The one typed table of libc functions the library calls, through koffi.
 *
 * Pointers that refer to memory this library mapped itself (scratch pages for
 * msghdr/cmsg, guest memory) are passed as plain addresses (`uintptr_t`), which
 * keeps the calls allocation-free. Pointers to short-lived JS buffers (a
 * sockaddr_un, an 8-byte eventfd counter) are passed as typed arrays, which koffi
 * pins for the duration of the call.
 *
 * Every wrapper returns the raw result; `errno()` reads the errno of the last
 * call on this thread. `syscallError()` turns it into a typed error.
 */
import koffi from 'koffi';
import { constants as osConstants } from 'node:os';
import { VhostUserError, type VhostErrorCode } from '../errors.js';

const lib = koffi.load('libc.so.6');

type Fn<A extends unknown[], R> = (...args: A) => R;

export interface Libc {
  socket: Fn<[domain: number, type: number, protocol: number], number>;
  connect: Fn<[fd: number, addr: Uint8Array, len: number], number>;
  bind: Fn<[fd: number, addr: Uint8Array, len: number], number>;
  listen: Fn<[fd: number, backlog: number], number>;
  accept4: Fn<[fd: number, addr: number, len: number, flags: number], number>;
  shutdown: Fn<[fd: number, how: number], number>;
  socketpair: Fn<[domain: number, type: number, protocol: number, sv: Int32Array], number>;
  pipe2: Fn<[fds: Int32Array, flags: number], number>;
  sendmsg: Fn<[fd: number, msghdr: number, flags: number], number>;
  recvmsg: Fn<[fd: number, msghdr: number, flags: number], number>;
  close: Fn<[fd: number], number>;
  read: Fn<[fd: number, buf: Uint8Array, len: number], number>;
  write: Fn<[fd: number, buf: Uint8Array, len: number], number>;
  eventfd: Fn<[initval: number, flags: number], number>;
  memfd_create: Fn<[name: string, flags: number], number>;
  ftruncate: Fn<[fd: number, length: number], number>;
  fallocate: Fn<[fd: number, mode: number, offset: number, len: number], number>;
  lseek: Fn<[fd: number, offset: number, whence: number], number>;
  /** fcntl(fd, cmd, int arg): the variadic third argument is always an int here. */
  fcntl: Fn<[fd: number, cmd: number, arg: number], number>;
  /** Returns -1 (MAP_FAILED) on failure, else the address. */
  mmap: Fn<[addr: number, length: number, prot: number, flags: number, fd: number, offset: number], number>;
  munmap: Fn<[addr: number, length: number], number>;
  madvise: Fn<[addr: number, length: number, advice: number], number>;
  /** poll(2) on an array of struct pollfd (8 bytes each: int fd, short events, short revents). */
  poll: Fn<[fds: Uint8Array, nfds: number, timeoutMs: number], number>;
}

const fcntlVariadic = lib.func('int fcntl(int fd, int cmd, ...)');

export const libc: Libc = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  connect: lib.func('int connect(int fd, const uint8_t *addr, uint32_t len)'),
  bind: lib.func('int bind(int fd, const uint8_t *addr, uint32_t len)'),
  listen: lib.func('int listen(int fd, int backlog)'),
  accept4: lib.func('int accept4(int fd, uintptr_t addr, uintptr_t len, int flags)'),
  shutdown: lib.func('int shutdown(int fd, int how)'),
  socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  pipe2: lib.func('int pipe2(_Out_ int *fds, int flags)'),
  sendmsg: lib.func('intptr_t sendmsg(int fd, uintptr_t msg, int flags)'),
  recvmsg: lib.func('intptr_t recvmsg(int fd, uintptr_t msg, int flags)'),
  close: lib.func('int close(int fd)'),
  read: lib.func('intptr_t read(int fd, _Out_ uint8_t *buf, size_t len)'),
  write: lib.func('intptr_t write(int fd, const uint8_t *buf, size_t len)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
  ftruncate: lib.func('int ftruncate(int fd, int64_t length)'),
  fallocate: lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  fcntl: (fd, cmd, arg) => fcntlVariadic(fd, cmd, 'int', arg) as number,
  mmap: lib.func('intptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: lib.func('int munmap(uintptr_t addr, size_t length)'),
  madvise: lib.func('int madvise(uintptr_t addr, size_t length, int advice)'),
  poll: lib.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)'),
};

export function errno(): number {
  return koffi.errno();
}

/** Linux x86_64/arm64 values; the generic ABI shares them for everything used here. */
export const C = {
  AF_UNIX: 1,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  SHUT_RDWR: 2,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  MSG_TRUNC: 0x20,
  MSG_CTRUNC: 0x8,
  EFD_NONBLOCK: 0o4000,
  POLLIN: 1,
  EFD_CLOEXEC: 0o2000000,
  MFD_CLOEXEC: 1,
  MFD_ALLOW_SEALING: 2,
  MFD_HUGETLB: 4,
  F_GETFL: 3,
  F_SETFL: 4,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  F_DUPFD_CLOEXEC: 1030,
  F_ADD_SEALS: 1033,
  F_GET_SEALS: 1034,
  F_SEAL_SEAL: 1,
  F_SEAL_SHRINK: 2,
  F_SEAL_GROW: 4,
  PROT_NONE: 0,
  PROT_READ: 1,
  PROT_WRITE: 2,
  MAP_SHARED: 0x01,
  MAP_PRIVATE: 0x02,
  MAP_FIXED: 0x10,
  MAP_ANONYMOUS: 0x20,
  MAP_NORESERVE: 0x4000,
  MAP_POPULATE: 0x8000,
  MADV_DONTDUMP: 16,
  SEEK_END: 2,
  FALLOC_FL_KEEP_SIZE: 1,
  FALLOC_FL_PUNCH_HOLE: 2,
} as const;

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name] as [number, string]),
);

export function errnoName(code: number): string {
  return errnoNames.get(code) ?? `E${code}`;
}

/** A typed error for a failed system call, with the current errno. */
export function syscallError(
  call: string,
  code: VhostErrorCode = 'VHOST_SYSCALL',
  err: number = errno(),
  context = '',
): VhostUserError {
  const name = errnoName(err);
  return new VhostUserError(code, `${call} failed: ${name}${context ? ` (${context})` : ''}`, { errno: name });
}

/** Closes an fd we own; EBADF means a bookkeeping bug, so it is not swallowed silently in tests. */
export function closeFd(fd: number): void {
  if (fd < 0) return;
  if (libc.close(fd) !== 0 && errno() === osConstants.errno.EBADF) {
    throw syscallError('close', 'VHOST_SYSCALL', osConstants.errno.EBADF, `fd ${fd}`);
  }
}
