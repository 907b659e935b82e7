/**
 * DPDK's vhost_blk example (rte_vhost, the library SPDK's vhost-blk is built on):
 * built once from the sources Debian's dpdk-doc installs, then started in a
 * directory of its own, where it listens on `vhost.socket` and serves a 128 MiB
 * RAM disk. It busy-polls one core while a device is up.
 *
 * Build: the sources are copied into a cache directory keyed by their content and
 * the installed DPDK version, and `make` (pkg-config libdpdk) runs there once;
 * later calls, in this process or another, reuse the binary. Concurrent builders
 * each build in a private directory and the first rename wins.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, cp, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { VhostUserError } from '../errors.js';
import { BackendHandle, makeTempDir, spawnBackend, type BackendProcess } from './backend-process.js';
import { dpdkRuntimeDir } from './dpdk-testpmd.js';

const run = promisify(execFile);

/** Where dpdk-doc installs the example. */
export const VHOST_BLK_SOURCES = '/usr/share/dpdk/examples/vhost_blk';
/** The socket name the example listens on, in its working directory (CTRLR_NAME). */
export const VHOST_BLK_SOCKET = 'vhost.socket';
/** The example's RAM disk: 128 MiB in 4096-byte blocks (hard-coded in vhost_blk.c). */
export const VHOST_BLK_CAPACITY = 128 * 1024 * 1024;
/** The example's block size in bytes (blk_size in its config space): requests must be multiples of it. */
export const VHOST_BLK_BLOCK_SIZE = 4096;

/** Where {@link buildVhostBlk} finds the sources and keeps the build. */
export interface BuildVhostBlkOptions {
  /** Default {@link VHOST_BLK_SOURCES}. */
  sourceDir?: string;
  /** Default `$VHOST_BLK_CACHE_DIR`, else `<os.tmpdir()>/vhost-user-client-cache`. */
  cacheDir?: string;
}

/**
 * Builds the example (or finds the earlier build) and returns the path of the
 * binary. Throws VHOST_SPAWN_FAILED when the sources, make, a compiler or
 * libdpdk's pkg-config file is missing, with the build's output.
 */
export async function buildVhostBlk(opts: BuildVhostBlkOptions = {}): Promise<string> {
  const src = opts.sourceDir ?? VHOST_BLK_SOURCES;
  const cache = opts.cacheDir ?? process.env['VHOST_BLK_CACHE_DIR'] ?? path.join(os.tmpdir(), 'vhost-user-client-cache');
  let files: string[];
  try {
    files = (await readdir(src)).sort();
  } catch {
    throw new VhostUserError('VHOST_SPAWN_FAILED', `DPDK's vhost_blk sources are not at ${src} (apt-get install dpdk-doc dpdk-dev)`);
  }
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update(await readFile(path.join(src, f)).catch(() => Buffer.alloc(0)));
  const dpdkVersion = await run('pkg-config', ['--modversion', 'libdpdk']).then(
    (r) => r.stdout.trim(),
    () => {
      throw new VhostUserError('VHOST_SPAWN_FAILED', 'pkg-config cannot find libdpdk (apt-get install dpdk-dev pkg-config)');
    },
  );
  hash.update(dpdkVersion);
  const dir = path.join(cache, `dpdk-vhost-blk-${dpdkVersion}-${hash.digest('hex').slice(0, 12)}`);
  const binary = path.join(dir, 'build', 'vhost-blk');
  if (await access(binary).then(() => true, () => false)) return binary;
  await mkdir(cache, { recursive: true });
  const work = `${dir}.build-${process.pid}-${randomBytes(3).toString('hex')}`;
  try {
    await cp(src, work, { recursive: true });
    try {
      await run('make', ['-C', work], { timeout: 300_000, maxBuffer: 16 << 20 });
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; message: string };
      const tail = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
      throw new VhostUserError('VHOST_SPAWN_FAILED', `building DPDK's vhost_blk failed: ${err.message}\n${tail}`);
    }
    await rename(work, dir).catch(async () => {
      // Another builder got there first: use theirs.
      if (!(await access(binary).then(() => true, () => false))) throw new VhostUserError('VHOST_SPAWN_FAILED', `cannot install the vhost_blk build at ${dir}`);
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return binary;
}

/** How {@link startVhostBlk} starts the example. */
export interface VhostBlkOptions {
  /** A built binary; default {@link buildVhostBlk}'s. */
  binary?: string;
  /** The lcore list (`-l`); default '1': the busy-polling worker is a control thread on it. */
  lcores?: string;
  /** EAL memory in MB (`-m`); default 1024 (`--no-huge`). */
  memoryMb?: number;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}

let prefixCounter = 0;

/** A running DPDK vhost_blk example. `socketPath` is `<tempDir>/vhost.socket`. */
export class VhostBlkBackend extends BackendHandle {
  /** @internal Use {@link startVhostBlk}. */
  constructor(
    proc: BackendProcess,
    /** EAL `--file-prefix`, unique per instance; its runtime directory is removed by stop(). */
    readonly filePrefix: string,
    /** The EAL arguments the example was started with. */
    readonly args: readonly string[],
  ) {
    super(proc);
  }
}

/**
 * Builds (once) and starts DPDK's vhost_blk in a fresh temp dir with a unique
 * `--file-prefix`; resolves once `vhost.socket` exists. stop() kills it by pid
 * and removes the temp dir and EAL's runtime directory.
 */
export async function startVhostBlk(opts: VhostBlkOptions = {}): Promise<VhostBlkBackend> {
  const binary = opts.binary ?? (await buildVhostBlk());
  const tempDir = await makeTempDir('vhost-blk-');
  const socketPath = path.join(tempDir, VHOST_BLK_SOCKET);
  const filePrefix = `vhb${process.pid}-${++prefixCounter}-${randomBytes(3).toString('hex')}`;
  const args = [
    '--no-huge',
    '-m', String(opts.memoryMb ?? 1024),
    '--no-pci',
    '--no-shconf',
    '--no-telemetry',
    `--file-prefix=${filePrefix}`,
    '-l', opts.lcores ?? '1',
  ];
  const proc = await spawnBackend({
    command: binary,
    args,
    socketPath,
    tempDir,
    cwd: tempDir,
    readyTimeoutMs: opts.readyTimeoutMs,
    lineBuffered: true,
    mergeStderr: true,
    cleanupPaths: [dpdkRuntimeDir(filePrefix)],
  });
  return new VhostBlkBackend(proc, filePrefix, args);
}
