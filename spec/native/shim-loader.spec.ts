import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { isVhostUserError } from '../../lib/errors.js';
import { loadShim, shimCandidates, SHIM_FILE } from '../../lib/native/shim.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TARGET = `${process.platform}-${process.arch}`;

/** A package root in a temp dir, with whichever shim files a case puts there. */
function fakeRoot(): { root: string; put(path: string, from?: string): void; cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'vhost-shim-'));
  return {
    root,
    put(path, from) {
      mkdirSync(dirname(path), { recursive: true });
      if (from) copyFileSync(from, path);
      else writeFileSync(path, 'not an ELF file');
    },
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}

function loads(path: string): boolean {
  try {
    createRequire(import.meta.url)(path);
    return true;
  } catch {
    return false;
  }
}

function loadError(root: string): Error {
  try {
    loadShim(root);
  } catch (e) {
    return e as Error;
  }
  throw new Error('loadShim succeeded');
}

describe('native shim loader', () => {
  // A binary that loads here: this process already loaded one of these to import lib/native/shim.js.
  const working = shimCandidates(ROOT).find((p) => existsSync(p) && loads(p))!;

  it('tries prebuilds/<platform>-<arch> first, then the node-gyp build', () => {
    expect(shimCandidates('/pkg', 'linux-arm64')).to.deep.equal([
      `/pkg/prebuilds/linux-arm64/${SHIM_FILE}`,
      `/pkg/native-shim/build/Release/${SHIM_FILE}`,
    ]);
  });

  it('with neither present: VHOST_NATIVE naming both paths and how to build', () => {
    const f = fakeRoot();
    try {
      const e = loadError(f.root);
      expect(isVhostUserError(e, 'VHOST_NATIVE'), String(e)).to.equal(true);
      const [prebuilt, built] = shimCandidates(f.root);
      expect(e.message).to.include(`${prebuilt} (not present)`).and.include(`${built} (not present)`);
      expect(e.message).to.include('npm rebuild vhost-user-client');
    } finally {
      f.cleanup();
    }
  });

  it('a prebuilt that does not load is passed over for the developer build', () => {
    const f = fakeRoot();
    try {
      const [prebuilt, built] = shimCandidates(f.root);
      f.put(prebuilt!);
      f.put(built!, working);
      const shim = loadShim(f.root);
      expect(typeof shim.FdWatcher).to.equal('function');
      const ab = shim.externalArrayBuffer(0n, 0);
      expect(ab.byteLength).to.equal(0);
    } finally {
      f.cleanup();
    }
  });

  it('when nothing loads, each path says why (dlopen reason) and the causes are kept', () => {
    const f = fakeRoot();
    try {
      const [prebuilt, built] = shimCandidates(f.root);
      f.put(prebuilt!);
      const e = loadError(f.root);
      expect(isVhostUserError(e, 'VHOST_NATIVE')).to.equal(true);
      expect(e.message).to.match(new RegExp(`${prebuilt!.replace(/[.]/g, '\\.')} \\((invalid ELF header|file too short)\\)`));
      expect(e.message).to.include(`${built} (not present)`);
      expect((e.cause as Error).message).to.include(prebuilt);
    } finally {
      f.cleanup();
    }
  });

  it(`prefers the prebuilt for ${TARGET} when it loads`, () => {
    const f = fakeRoot();
    try {
      const [prebuilt, built] = shimCandidates(f.root);
      f.put(prebuilt!, working);
      f.put(built!); // would fail if it were tried
      expect(typeof loadShim(f.root).detachArrayBuffer).to.equal('function');
    } finally {
      f.cleanup();
    }
  });
});
