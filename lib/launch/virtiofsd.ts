/**
 * virtiofsd, the vhost-user-fs back-end: QEMU 7.2's C daemon (Debian's
 * qemu-system-common installs it as /usr/lib/qemu/virtiofsd) or the Rust one
 * (`virtiofsd` on PATH). It serves one front-end and exits with code 0 when that
 * front-end leaves: a one-shot back-end (see lib/conformance/runner.ts).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { VhostUserError } from '../errors.js';
import { BackendHandle, findExecutable, makeTempDir, spawnBackend, type BackendProcess } from './backend-process.js';

/** Where Debian's qemu-system-common (QEMU 7.2) installs the C virtiofsd; the Rust one is `virtiofsd` on PATH. */
export const VIRTIOFSD_PATHS: readonly string[] = ['virtiofsd', '/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd'];

/** How {@link startVirtiofsd} starts virtiofsd. */
export interface VirtiofsdOptions {
  /** Directory shared with the guest; default an empty directory in the temp dir. */
  sharedDir?: string;
  /** Default `<tempDir>/vhost-fs.sock`. */
  socketPath?: string;
  /**
   * Default 'chroot': the daemon is the process we started. 'namespace' (virtiofsd's own
   * default) forks into new namespaces and the parent exits with code 1 whatever killed the
   * child, so a crash by a signal cannot be told from an error exit, and /proc/PID/fd counts
   * the parent's fds, not the daemon's.
   */
  sandbox?: 'chroot' | 'namespace';
  /** `-o cache=`; default 'none' (nothing is cached between front-ends). */
  cache?: 'auto' | 'always' | 'none';
  /** Executable; default the first of {@link VIRTIOFSD_PATHS} that exists. */
  executable?: string;
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}

/** The virtiofsd executable on this machine, or null. */
export function findVirtiofsd(): string | null {
  for (const p of VIRTIOFSD_PATHS) {
    const found = findExecutable(p);
    if (found) return found;
  }
  return null;
}

/** A running virtiofsd sharing one directory. */
export class VirtiofsdBackend extends BackendHandle {
  /** @internal Use {@link startVirtiofsd}. */
  constructor(
    proc: BackendProcess,
    /** Absolute path of the directory the daemon shares (`-o source=`). */
    readonly sharedDir: string,
    /** The command line virtiofsd was started with (after the executable). */
    readonly args: readonly string[],
  ) {
    super(proc);
  }
}

/** Starts virtiofsd on a socket in a fresh temp dir and resolves once the socket exists. */
export async function startVirtiofsd(opts: VirtiofsdOptions = {}): Promise<VirtiofsdBackend> {
  const exe = opts.executable ?? findVirtiofsd();
  if (!exe) throw new VhostUserError('VHOST_SPAWN_FAILED', `virtiofsd not found (looked for ${VIRTIOFSD_PATHS.join(', ')}; apt-get install qemu-system-common)`);
  const tempDir = await makeTempDir('vhost-fs-');
  const socketPath = opts.socketPath ?? path.join(tempDir, 'vhost-fs.sock');
  const sharedDir = opts.sharedDir ?? path.join(tempDir, 'shared');
  if (opts.sharedDir === undefined) await mkdir(sharedDir);
  // QEMU 7.2's C daemon's options (the Rust daemon documents -o compatibility for them; not tried here).
  const args = [`--socket-path=${socketPath}`, '-o', `source=${sharedDir}`, '-o', `cache=${opts.cache ?? 'none'}`, '-o', `sandbox=${opts.sandbox ?? 'chroot'}`];
  const proc = await spawnBackend({ command: exe, args, socketPath, tempDir, mergeStderr: true, readyTimeoutMs: opts.readyTimeoutMs });
  return new VirtiofsdBackend(proc, sharedDir, args);
}
