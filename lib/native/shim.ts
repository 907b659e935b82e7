/**
 * Loads native-shim/: fd readiness on Node's event loop and detachable ArrayBuffers
 * over mmap'd memory. See native-shim/src/shim.c for why these two things are not
 * done through koffi.
 *
 * Where the binary comes from, in the order tried:
 *  1. prebuilds/<platform>-<arch>/vhost_user_shim.node, shipped in the package
 *     (scripts/prebuild-shim.mjs builds it at `npm pack`; linux-x64 and linux-arm64).
 *     It is Node-API, so one binary serves every Node version the package supports.
 *  2. native-shim/build/Release/vhost_user_shim.node, built by node-gyp: in a
 *     checkout, or by the package's install script where no prebuilt binary loads
 *     (another architecture, a libc the prebuilt does not link against).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserError } from '../errors.js';

export const UV_READABLE = 1;
export const UV_WRITABLE = 2;

/** The shim's file name, as binding.gyp's target_name makes it. */
export const SHIM_FILE = 'vhost_user_shim.node';

export interface FdWatcherHandle {
  start(events: number): void;
  stop(): void;
  close(): void;
}

/** What native-shim/src/shim.c exports. */
export interface ShimModule {
  FdWatcher: new (fd: number, callback: (status: number, events: number) => void) => FdWatcherHandle;
  externalArrayBuffer(address: bigint, length: number): ArrayBuffer;
  detachArrayBuffer(buffer: ArrayBuffer): void;
}

function findPackageRoot(start: string): string {
  let dir = start;
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new VhostUserError('VHOST_NATIVE', `package.json not found above ${start}`);
    dir = parent;
  }
  return dir;
}

const SHIM_EXPORTS = ['FdWatcher', 'externalArrayBuffer', 'detachArrayBuffer'] as const satisfies readonly (keyof ShimModule)[];

/** The paths loadShim() tries under a package root, in order. */
export function shimCandidates(root: string, target = `${process.platform}-${process.arch}`): string[] {
  return [join(root, 'prebuilds', target, SHIM_FILE), join(root, 'native-shim', 'build', 'Release', SHIM_FILE)];
}

/**
 * Loads the first candidate that exists and loads in this process. A prebuilt binary
 * that is present but does not load (wrong libc, corrupt file) is passed over for the
 * developer build; when neither loads, the error names every path and why it failed.
 */
export function loadShim(root: string, target = `${process.platform}-${process.arch}`): ShimModule {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  const causes: unknown[] = [];
  for (const path of shimCandidates(root, target)) {
    if (!existsSync(path)) {
      tried.push(`${path} (not present)`);
      continue;
    }
    try {
      const shim = require(path) as Partial<ShimModule>;
      const missing = SHIM_EXPORTS.filter((name) => typeof shim[name] !== 'function');
      if (missing.length > 0) throw new Error(`does not export ${missing.join(', ')}`);
      return shim as ShimModule;
    } catch (cause) {
      // dlopen's message starts with the path again; keep only its reason.
      const reason = cause instanceof Error ? cause.message.split('\n')[0]!.replace(`${path}: `, '') : String(cause);
      tried.push(`${path} (${reason})`);
      causes.push(cause);
    }
  }
  throw new VhostUserError(
    'VHOST_NATIVE',
    `native shim not loadable for ${target}; tried ${tried.join(', ')}. Prebuilt binaries ship for linux-x64 and ` +
      `linux-arm64 (glibc); elsewhere the package's install script builds native-shim/ with node-gyp, which needs a ` +
      `C compiler, make and python3: install them and run 'npm rebuild vhost-user-client' ('npm install' in a ` +
      `checkout of its repository)`,
    causes.length === 0 ? {} : { cause: causes.length === 1 ? causes[0] : new AggregateError(causes) },
  );
}

export const shim: ShimModule = loadShim(findPackageRoot(dirname(fileURLToPath(import.meta.url))));
