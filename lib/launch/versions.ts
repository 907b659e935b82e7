/**
 * The version of an installed back-end program, as the program reports it, so that
 * what is expected of a back-end (its conformance results) can be picked per version.
 * Each probe runs the program once with a deadline and leaves nothing behind.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { findExecutable } from './backend-process.js';
import { dpdkRuntimeDir } from './dpdk-testpmd.js';
import { findVirtiofsd } from './virtiofsd.js';

const PROBE_TIMEOUT_MS = 15_000;

/** stdout and stderr of `exe args`, or null if it cannot be run or overruns the deadline. */
function run(exe: string, args: readonly string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(exe, args, { timeout: PROBE_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      // testpmd exits non-zero after --help on some versions: the output is what counts.
      const out = `${stdout}\n${stderr}`;
      resolve(err && (err as NodeJS.ErrnoException).code === 'ENOENT' ? null : out);
    });
  });
}

/** The first `x.y` or `x.y.z` after `prefix` in `text`. */
function versionAfter(text: string | null, prefix: RegExp): string | null {
  if (text === null) return null;
  const m = new RegExp(`${prefix.source}\\s*(\\d+\\.\\d+(?:\\.\\d+)?)`).exec(text);
  return m?.[1] ?? null;
}

/**
 * DPDK's version as dpdk-testpmd reports it (`-v`: "EAL: RTE Version: 'DPDK 22.11.11'"), e.g.
 * '22.11.11'. testpmd has no --version: EAL starts in memory (no hugepages, no PCI, a unique
 * --file-prefix whose runtime directory is removed afterwards) and testpmd's --help ends it.
 */
export async function testpmdVersion(): Promise<string | null> {
  const exe = findExecutable('dpdk-testpmd');
  if (!exe) return null;
  const prefix = `vhost-version-${process.pid}-${randomBytes(3).toString('hex')}`;
  try {
    const out = await run(exe, ['-v', '--no-huge', '-m', '64', '--no-pci', '--in-memory', `--file-prefix=${prefix}`, '-l', '0', '--', '--help']);
    return versionAfter(out, /RTE Version: 'DPDK/);
  } finally {
    await rm(dpdkRuntimeDir(prefix), { recursive: true, force: true });
  }
}

/** `qemu-storage-daemon --version`: "qemu-storage-daemon version 7.2.22 (Debian …)" gives '7.2.22'. */
export async function qemuStorageDaemonVersion(): Promise<string | null> {
  const exe = findExecutable('qemu-storage-daemon');
  return exe ? versionAfter(await run(exe, ['--version']), /qemu-storage-daemon version/) : null;
}

/** `virtiofsd --version`: "virtiofsd version 7.2.22 (Debian …)" (QEMU's C daemon) or "virtiofsd 1.10.1" (Rust). */
export async function virtiofsdVersion(): Promise<string | null> {
  const exe = findVirtiofsd();
  return exe ? versionAfter(await run(exe, ['--version']), /virtiofsd(?: version)?/) : null;
}
