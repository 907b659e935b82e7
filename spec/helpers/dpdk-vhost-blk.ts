/**
 * DPDK's vhost_blk example for tests: built once per test process from
 * Debian's dpdk-doc sources into a temp dir (removed at exit), started in a directory of its own
 * (it listens on ./vhost.socket), stopped by pid with its EAL runtime dir removed.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnBackend, type BackendProcess } from '../../lib/launch/backend-process.js';
import { dpdkRuntimeDir } from '../../lib/launch/dpdk-testpmd.js';

const SOURCES = '/usr/share/dpdk/examples/vhost_blk';
let built: string | null | undefined;
let counter = 0;

/** The built binary, or a reason it cannot be had (printed by callers that skip). */
export function buildVhostBlk(): { binary: string } | { skip: string } {
  if (built === undefined) {
    if (!existsSync(SOURCES)) return { skip: `${SOURCES} is missing (apt-get install dpdk-doc dpdk-dev)` };
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-blk-dpdk-'));
    // Shared by every test of the process; removed when it exits.
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    cpSync(SOURCES, dir, { recursive: true });
    try {
      execFileSync('make', ['-C', dir], { stdio: 'pipe', timeout: 120_000 });
      built = path.join(dir, 'build', 'vhost-blk');
    } catch (e) {
      built = null;
      return { skip: `building ${SOURCES} failed: ${String((e as { stderr?: Buffer }).stderr ?? e).split('\n')[0]}` };
    }
  }
  return built === null ? { skip: 'building the vhost_blk example failed earlier' } : { binary: built };
}

/** Starts vhost-blk (128 MiB RAM disk, busy-polling core 1 while a device is up). */
export function startVhostBlk(binary: string): Promise<BackendProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vhost-blk-dpdk-run-'));
  const prefix = `vhostblk${process.pid}x${counter++}`;
  return spawnBackend({
    command: 'sh',
    args: ['-c', `cd "${dir}" && exec "${binary}" --no-huge -m 1024 --no-pci --no-shconf --no-telemetry --file-prefix=${prefix} -l 1`],
    socketPath: path.join(dir, 'vhost.socket'),
    tempDir: dir,
    cleanupPaths: [dpdkRuntimeDir(prefix)],
  });
}
