#!/usr/bin/env node
// Builds native-shim/ once per shipped platform into prebuilds/<platform>-<arch>/vhost_user_shim.node.
// Runs at `prepack` (so `npm pack` and `npm publish` put the binaries in the tarball) and
// `postpack` (--clean: a checkout keeps no prebuilt that would shadow a fresh developer build).
//
// Why not node-gyp: it builds for the running machine only. The shim is Node-API (NAPI_VERSION
// from binding.gyp) and uses libuv only through uv.h, whose ABI is stable across libuv 1.x, so
// the headers of any Node >= 20 build a binary that every Node >= 20 loads; the arm64 binary is
// a plain cross-compile (Debian: gcc-aarch64-linux-gnu).
//
// Sources, defines and warning flags come from binding.gyp, so the prebuilt and the developer
// build (node-gyp) compile the same thing. Added here, as node-gyp's common.gypi does on Linux:
// -fPIC, -pthread, _FILE_OFFSET_BITS=64, BUILDING_NODE_EXTENSION, NODE_GYP_MODULE_NAME. Differences
// on purpose: -O2 only (node-gyp's Release appends -O3), -fvisibility=hidden (only the
// NAPI_MODULE_EXPORT entry points are exported; they are marked visibility("default")), linked
// with the C driver (no libstdc++), and stripped (-s): the tarball carries no debug info.
//
// Every target must build: a missing cross-compiler fails the pack instead of publishing a
// package that silently makes arm64 users compile. The loader is lib/native/shim.ts and the
// install-time check scripts/check-prebuilt-shim.mjs; both read the same layout.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'prebuilds');
const FILE = 'vhost_user_shim.node';

/** ELF e_machine values (System V gABI): what `file` and `readelf -h` print as "Machine". */
const EM_X86_64 = 62;
const EM_AARCH64 = 183;

const TARGETS = [
  { platform: 'linux', arch: 'x64', triplet: 'x86_64-linux-gnu', machine: EM_X86_64, pkg: 'gcc' },
  {
    platform: 'linux',
    arch: 'arm64',
    triplet: 'aarch64-linux-gnu',
    machine: EM_AARCH64,
    pkg: 'gcc-aarch64-linux-gnu libc6-dev-arm64-cross',
  },
];

function fail(message) {
  // A partial prebuilds/ would ship one platform, or shadow a checkout's own build: none at all.
  rmSync(OUT, { recursive: true, force: true });
  process.stderr.write(`prebuild-shim: ${message}\n`);
  process.exit(1);
}

/** The running Node's headers (node_api.h, uv.h): next to its binary, in node-gyp's cache, or the distribution's. */
function nodeIncludeDir() {
  const candidates = [
    process.env.NODE_INCLUDE_DIR,
    join(dirname(process.execPath), '..', 'include', 'node'),
    join(process.env.npm_config_devdir ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'node-gyp'),
      process.versions.node, 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter((d) => d !== undefined && d !== '');
  const found = candidates.find((d) => existsSync(join(d, 'node_api.h')) && existsSync(join(d, 'uv.h')));
  if (!found) {
    fail(`no Node.js headers (node_api.h and uv.h) in any of: ${candidates.join(', ')}; ` +
      `set NODE_INCLUDE_DIR, or fetch them with 'npx node-gyp install'`);
  }
  return found;
}

/** binding.gyp is JSON-compatible gyp: its only target gives sources, defines and warning flags. */
function gypTarget() {
  const gyp = JSON.parse(readFileSync(join(ROOT, 'native-shim', 'binding.gyp'), 'utf8'));
  const target = gyp.targets.find((t) => t.target_name === FILE.replace(/\.node$/, ''));
  if (!target) fail(`binding.gyp has no target ${FILE}`);
  return target;
}

function elfMachine(path) {
  const b = readFileSync(path);
  if (b.length < 20 || b.readUInt32BE(0) !== 0x7f454c46) fail(`${path} is not an ELF file`);
  return b.readUInt16LE(18);
}

function build(target, include, gyp) {
  const cc = `${target.triplet}-gcc`;
  try {
    execFileSync(cc, ['--version'], { stdio: 'ignore' });
  } catch {
    fail(`${cc} not found: building the ${target.platform}-${target.arch} shim needs it (apt-get install ${target.pkg})`);
  }
  const dir = join(OUT, `${target.platform}-${target.arch}`);
  mkdirSync(dir, { recursive: true });
  const out = join(dir, FILE);
  const tmp = `${out}.tmp`;
  const args = [
    '-shared', '-fPIC', '-pthread', '-fvisibility=hidden',
    ...gyp.cflags.filter((f) => !/^-O/.test(f)),
    '-O2',
    `-DNODE_GYP_MODULE_NAME=${FILE.replace(/\.node$/, '')}`,
    '-DBUILDING_NODE_EXTENSION', '-DUSING_UV_SHARED=1', '-D_FILE_OFFSET_BITS=64', '-D_LARGEFILE_SOURCE',
    ...gyp.defines.map((d) => `-D${d}`),
    `-I${include}`,
    ...gyp.sources.map((s) => join(ROOT, 'native-shim', s)),
    `-Wl,-soname=${FILE}`, '-s',
    '-o', tmp,
  ];
  try {
    execFileSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch {
    fail(`${cc} ${args.join(' ')} failed (for ${target.platform}-${target.arch}: apt-get install ${target.pkg})`);
  }
  const machine = elfMachine(tmp);
  if (machine !== target.machine) fail(`${cc} produced ELF machine ${machine}, expected ${target.machine}`);
  renameSync(tmp, out);
  return out;
}

/** The binary for the running platform must load here and export what lib/native/shim.ts uses. */
function checkLoads(path) {
  let m;
  try {
    m = createRequire(import.meta.url)(path);
  } catch (e) {
    fail(`${path} does not load in this Node: ${e instanceof Error ? e.message : String(e)}`);
  }
  for (const name of ['FdWatcher', 'externalArrayBuffer', 'detachArrayBuffer']) {
    if (typeof m[name] !== 'function') fail(`${path} loads but does not export ${name}`);
  }
}

if (process.argv.includes('--clean')) {
  rmSync(OUT, { recursive: true, force: true });
} else {
  rmSync(OUT, { recursive: true, force: true });
  const include = nodeIncludeDir();
  const gyp = gypTarget();
  for (const target of TARGETS) {
    const out = build(target, include, gyp);
    if (target.platform === process.platform && target.arch === process.arch) checkLoads(out);
    process.stderr.write(`prebuild-shim: ${target.platform}-${target.arch} ${statSync(out).size} bytes (${include})\n`);
  }
}
