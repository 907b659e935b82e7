/**
 * The back-ends whose conformance results are pinned in spec/conformance/expected/:
 * how each is started for the suite, and how its version is read (results are kept
 * per version series, `major.minor`, since a bug fix release may change them).
 */
import { startQemuStorageDaemon, startReferenceBackend, startTestpmd, startVirtiofsd } from '../../lib/launch/index.js';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { qemuStorageDaemonVersion, testpmdVersion, virtiofsdVersion } from '../../lib/launch/versions.js';
import { findVirtiofsd } from '../../lib/launch/virtiofsd.js';
import type { SpawnedBackend } from '../../lib/conformance/index.js';

export interface PinnedBackend {
  /** Stem of its expected-results files, e.g. `dpdk-testpmd` (`dpdk-testpmd-22.11.json`). */
  readonly id: string;
  readonly device: 'net' | 'blk' | 'fs';
  /** How it runs, for the README (markdown). */
  readonly setup: string;
  /** The program, and the Debian package that installs it, for a skip message. */
  readonly program: string;
  readonly debianPackage: string;
  /** Whether its results are kept per version (every real back-end; not the reference back-end, which is this repository). */
  readonly versioned: boolean;
  installed(): boolean;
  /** The full version the program reports ('22.11.11'), null when it cannot be read. */
  version(): Promise<string | null>;
  start(): Promise<SpawnedBackend>;
}

const here = () => true;

export const PINNED_BACKENDS: readonly PinnedBackend[] = [
  {
    id: 'reference-net',
    device: 'net',
    setup: 'reference back-end (`vhost-user serve`)',
    program: 'vhost-user serve',
    debianPackage: '',
    versioned: false,
    installed: here,
    version: () => Promise.resolve(null),
    start: () => startReferenceBackend({ device: 'net' }),
  },
  {
    id: 'reference-blk',
    device: 'blk',
    setup: 'reference back-end (`vhost-user serve`)',
    program: 'vhost-user serve',
    debianPackage: '',
    versioned: false,
    installed: here,
    version: () => Promise.resolve(null),
    start: () => startReferenceBackend({ device: 'blk' }),
  },
  {
    id: 'dpdk-testpmd',
    device: 'net',
    setup: 'dpdk-testpmd (`net_vhost`, `tso=1`, io forwarding)',
    program: 'dpdk-testpmd',
    debianPackage: 'dpdk-dev',
    versioned: true,
    installed: () => findExecutable('dpdk-testpmd') !== null,
    version: testpmdVersion,
    // tso=1 offers HOST_TSO4/6 (off by default in DPDK 22.11's net_vhost), so the offload checks run.
    start: () => startTestpmd({ forwardMode: 'io', extraVdevArgs: 'tso=1' }),
  },
  {
    id: 'qemu-storage-daemon',
    device: 'blk',
    setup: 'qemu-storage-daemon (`vhost-user-blk` export, 16 MiB file)',
    program: 'qemu-storage-daemon',
    debianPackage: 'qemu-system-common',
    versioned: true,
    installed: () => findExecutable('qemu-storage-daemon') !== null,
    version: qemuStorageDaemonVersion,
    start: () => startQemuStorageDaemon({ imageSize: 16 << 20 }),
  },
  {
    id: 'virtiofsd',
    device: 'fs',
    setup: 'virtiofsd (QEMU\'s C daemon, `-o sandbox=chroot -o cache=none`, one-shot)',
    program: 'virtiofsd',
    debianPackage: 'qemu-system-common',
    versioned: true,
    installed: () => findVirtiofsd() !== null,
    version: virtiofsdVersion,
    start: () => startVirtiofsd(),
  },
];

/** `22.11.11` → `22.11`: results are kept per series. */
export function versionSeries(version: string): string {
  return version.split('.').slice(0, 2).join('.');
}

export function pinnedBackend(id: string): PinnedBackend | undefined {
  return PINNED_BACKENDS.find((b) => b.id === id);
}
