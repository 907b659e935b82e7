/**
 * Loads native-shim/ (built by `npm install`): fd readiness on Node's event loop
 * and detachable ArrayBuffers over mmap'd memory. See native-shim/src/shim.c for
 * why these two things are not done through koffi.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserError } from '../errors.js';

export const UV_READABLE = 1;
export const UV_WRITABLE = 2;

export interface FdWatcherHandle {
  start(events: number): void;
  stop(): void;
  close(): void;
}

interface ShimModule {
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

function load(): ShimModule {
  const root = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
  const path = join(root, 'native-shim', 'build', 'Release', 'vhost_user_shim.node');
  try {
    return createRequire(import.meta.url)(path) as ShimModule;
  } catch (cause) {
    throw new VhostUserError(
      'VHOST_NATIVE',
      `native shim not loadable at ${path}; run 'npm install' (needs a C compiler and node-gyp)`,
      { cause },
    );
  }
}

export const shim: ShimModule = load();
