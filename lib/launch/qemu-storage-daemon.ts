import { stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { VhostUserError } from '../errors.js';
import { BackendHandle, makeTempDir, spawnBackend, type BackendProcess } from './backend-process.js';

/** How {@link startQemuStorageDaemon} sets up the image and the vhost-user-blk export. */
export interface QemuStorageDaemonOptions {
  /** Existing image (left in place by `stop()`); default: a sparse raw file in the temp dir. */
  imagePath?: string;
  /** Size in bytes of the created image or the null-co device; default 64 MiB. */
  imageSize?: number;
  /** 'null-co' has no storage: writes are discarded and reads leave the buffer untouched (benchmarks). Default 'file'. */
  driver?: 'file' | 'null-co';
  /** Export `writable=on`; default true. */
  writable?: boolean;
  /**
   * Blockdev option `discard`: 'unmap' passes DISCARD and WRITE_ZEROES with UNMAP
   * to the file (holes punched); 'ignore', QEMU's default, drops discards.
   */
  discard?: 'ignore' | 'unmap';
  /** Export option `num-queues`. */
  numQueues?: number;
  /** file driver: `aio=` (threads, native or io_uring); default QEMU's (threads). */
  aio?: 'threads' | 'native' | 'io_uring';
  /** file driver: `cache.direct=on` (O_DIRECT; needs a file system that has it, not tmpfs). Default off. */
  cacheDirect?: boolean;
  /**
   * file driver: `locking=off`, so that a second qemu-storage-daemon can open the
   * same image (shared storage, as the two sides of a live migration). Default on.
   */
  locking?: boolean;
  /** Default `<tempDir>/vhost-blk.sock`. */
  socketPath?: string;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}

const DEFAULT_IMAGE_SIZE = 64 * 1024 * 1024;

/** QEMU option values escape a comma by doubling it. */
function qemuValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** A running `qemu-storage-daemon` exporting one vhost-user-blk device. */
export class QemuStorageDaemonBackend extends BackendHandle {
  /** @internal Use {@link startQemuStorageDaemon}. */
  constructor(
    proc: BackendProcess,
    /** The backing file; undefined for null-co. */
    readonly imagePath: string | undefined,
    /** Device size in bytes (GET_CONFIG capacity × 512). */
    readonly imageSize: number,
    /** The command line qemu-storage-daemon was started with (after the executable). */
    readonly args: readonly string[],
  ) {
    super(proc);
  }
}

/**
 * Starts `qemu-storage-daemon` with a vhost-user-blk export on a socket in a fresh temp dir
 * and resolves once the socket exists.
 */
export async function startQemuStorageDaemon(opts: QemuStorageDaemonOptions = {}): Promise<QemuStorageDaemonBackend> {
  const driver = opts.driver ?? 'file';
  if (opts.imageSize !== undefined && !(Number.isSafeInteger(opts.imageSize) && opts.imageSize > 0)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `imageSize must be a positive integer, got ${opts.imageSize}`);
  }
  if (opts.numQueues !== undefined && !(Number.isInteger(opts.numQueues) && opts.numQueues > 0)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `numQueues must be a positive integer, got ${opts.numQueues}`);
  }
  const tempDir = await makeTempDir('vhost-qsd-');
  const socketPath = opts.socketPath ?? path.join(tempDir, 'vhost-blk.sock');

  let imagePath: string | undefined;
  let imageSize = opts.imageSize ?? DEFAULT_IMAGE_SIZE;
  let blockdev: string;
  if (driver === 'null-co') {
    blockdev = `driver=null-co,node-name=f0,size=${imageSize}`;
  } else {
    if (opts.imagePath) {
      imagePath = path.resolve(opts.imagePath);
      // A missing image is left for qemu-storage-daemon to report.
      imageSize = (await stat(imagePath).catch(() => undefined))?.size ?? imageSize;
    } else {
      imagePath = path.join(tempDir, 'disk.raw');
      await writeFile(imagePath, '');
      await truncate(imagePath, imageSize);
    }
    blockdev = [
      `driver=file,node-name=f0,filename=${qemuValue(imagePath)}`,
      // A read-only export on a read-only node: the image may then be a file this process cannot write.
      ...(opts.writable === false ? ['read-only=on'] : []),
      ...(opts.discard !== undefined ? [`discard=${opts.discard}`] : []),
      ...(opts.aio ? [`aio=${opts.aio}`] : []),
      ...(opts.cacheDirect ? ['cache.direct=on'] : []),
      ...(opts.locking === false ? ['locking=off'] : []),
    ].join(',');
  }
  const exportOpt = [
    'type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix',
    `addr.path=${qemuValue(socketPath)}`,
    `writable=${opts.writable === false ? 'off' : 'on'}`,
    ...(opts.numQueues !== undefined ? [`num-queues=${opts.numQueues}`] : []),
  ].join(',');
  const args = ['--blockdev', blockdev, '--export', exportOpt];

  const proc = await spawnBackend({
    command: 'qemu-storage-daemon',
    args,
    socketPath,
    tempDir,
    readyTimeoutMs: opts.readyTimeoutMs,
  });
  return new QemuStorageDaemonBackend(proc, imagePath, imageSize, args);
}
