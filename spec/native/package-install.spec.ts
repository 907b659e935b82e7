/**
 * The package as a user gets it: `npm pack` (which runs prepack: the prebuilt shims,
 * prepare: tsc, postpack: cleanup), then `npm install <tarball>` into a fresh project
 * on a PATH holding only node, npm, npx and sh, so no C compiler, make or python3 can
 * be found by npm, its scripts or node-gyp. The prebuilt shim must make that install
 * succeed without building anything, and `npx vhost-user demo` and an ESM program
 * importing the library must then work from the project.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { SHIM_FILE } from '../../lib/native/shim.js';
import { skipWithout } from '../helpers/backends.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TOOLCHAIN = ['cc', 'gcc', 'c++', 'g++', 'clang', 'make', 'python3', 'python'];
/** ELF e_machine (System V gABI) of each shipped prebuilt. */
const MACHINES: Record<string, number> = { 'linux-x64': 62, 'linux-arm64': 183 };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in its own process group and kills the whole group if it overruns
 * (npm starts sh, which starts node): nothing it started outlives the test.
 */
function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs} ms]`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, opts.timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The environment minus what an enclosing `npm test` exported (npm_config_*, npm_lifecycle_*, ...). */
function cleanEnv(path: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'INIT_CWD') env[k] = v;
  env['PATH'] = path;
  return env;
}

/** An ESM program a user might write first: control plane and guest memory against the reference back-end. */
const ESM_PROGRAM = `
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory, ReferenceBackend, VhostUserClient, decodeNetConfig, NET_CONFIG_SIZE } from 'vhost-user-client';

const dir = mkdtempSync(join(tmpdir(), 'vhost-pkg-esm-'));
const socket = join(dir, 'net.sock');
const backend = ReferenceBackend.listen(socket, { device: 'net' });
const memory = GuestMemory.create({ size: 1 << 20 });
let client;
try {
  client = await VhostUserClient.connect(socket, { timeoutMs: 2000 });
  const n = await client.negotiate();
  memory.write(0x1000, Uint8Array.of(1, 2, 3, 4));
  await client.setMemTable(memory);
  const config = decodeNetConfig(await client.getConfig(0, NET_CONFIG_SIZE), n.features);
  console.log(JSON.stringify({ queueNum: n.queueNum, maxMemSlots: n.maxMemSlots, mac: config.mac, bytes: [...memory.read(0x1000, 4)] }));
} finally {
  client?.close();
  memory.close();
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
`;

describe('the packed package installs and runs without a C toolchain @integration', function () {
  // npm pack runs tsc (prepare) over the whole project: 15 s on a quiet machine, 45 s
  // measured with the 2 cores shared; the installs fetch 4 packages from the registry.
  this.timeout(300_000);

  const target = `${process.platform}-${process.arch}`;
  let tmp = '';
  let bin = '';
  let tarball = '';
  let packed: { path: string; size: number }[] = [];
  let tarballSize = 0;

  before(async function () {
    if (!(target in MACHINES)) {
      process.stdout.write(`      skipped: no prebuilt shim ships for ${target}\n`);
      this.skip();
    }
    // prepack builds every shipped platform; the arm64 one is a cross-compile.
    skipWithout(this, 'aarch64-linux-gnu-gcc', 'gcc-aarch64-linux-gnu libc6-dev-arm64-cross');
    tmp = mkdtempSync(join(tmpdir(), 'vhost-pkg-'));
    bin = join(tmp, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    for (const exe of ['npm', 'npx']) symlinkSync(findExecutable(exe)!, join(bin, exe));
    symlinkSync('/bin/sh', join(bin, 'sh')); // npm runs every script through `sh -c`

    const r = await run('npm', ['pack', '--json', '--pack-destination', tmp], {
      cwd: ROOT,
      env: cleanEnv(process.env['PATH'] ?? ''),
      timeoutMs: 240_000,
    });
    expect(r.status, r.stderr).to.equal(0);
    const [info] = JSON.parse(r.stdout) as { filename: string; size: number; files: { path: string; size: number }[] }[];
    tarball = join(tmp, info!.filename);
    packed = info!.files;
    tarballSize = info!.size;
    process.stdout.write(`      ${info!.filename}: ${tarballSize} bytes; ` +
      `${packed.filter((f) => f.path.startsWith('prebuilds/')).map((f) => `${f.path} ${f.size} bytes`).join(', ')}\n`);
  });

  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A fresh project directory with only a package.json, as `npm init` leaves it. */
  function freshProject(name: string): string {
    const dir = join(tmp, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }));
    return dir;
  }

  function npmInstall(dir: string, extra: string[] = []): Promise<Run> {
    return run('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', ...extra, tarball], {
      cwd: dir,
      env: cleanEnv(bin),
      timeoutMs: 120_000,
    });
  }

  it('the tarball holds a prebuilt shim per platform, the install check and the sources to build elsewhere; nothing built or private', () => {
    const paths = packed.map((f) => f.path);
    for (const t of Object.keys(MACHINES)) expect(paths).to.include(`prebuilds/${t}/${SHIM_FILE}`);
    expect(paths).to.include.members([
      'scripts/check-prebuilt-shim.mjs',
      'native-shim/binding.gyp',
      'native-shim/src/shim.c',
      'dist/lib/index.js',
      'dist/lib/index.d.ts',
      'dist/lib/cli/main.js',
    ]);
    expect(paths.filter((p) => /^(spec|dist\/spec|dist\/scripts|native-shim\/build|node_modules)\//.test(p))).to.deep.equal([]);
    // postpack removed what prepack built: a checkout keeps no prebuilt that would shadow its own build.
    expect(existsSync(join(ROOT, 'prebuilds'))).to.equal(false);
  });

  it('on a PATH with no cc, gcc, make or python3: npm install <tarball> builds nothing, and npx vhost-user demo gets every frame back', async () => {
    for (const exe of TOOLCHAIN) {
      const r = await run('/bin/sh', ['-c', `command -v ${exe}`], { cwd: tmp, env: cleanEnv(bin), timeoutMs: 10_000 });
      expect(r.status, `${exe} found at ${r.stdout}`).to.not.equal(0);
    }
    const project = freshProject('fresh');
    const install = await npmInstall(project);
    expect(install.status, install.stdout + install.stderr).to.equal(0);
    expect(install.stdout + install.stderr).to.not.match(/no prebuilt native shim|gyp info|gyp ERR/);
    const pkg = join(project, 'node_modules', 'vhost-user-client');
    expect(existsSync(join(pkg, 'native-shim', 'build')), 'node-gyp ran').to.equal(false);

    // Each binary is what it claims to be: an ELF shared object for its machine (the arm64 one cannot run here).
    for (const [t, machine] of Object.entries(MACHINES)) {
      const elf = readFileSync(join(pkg, 'prebuilds', t, SHIM_FILE));
      expect(elf.readUInt32BE(0), t).to.equal(0x7f454c46);
      expect(elf[4], `${t} ELFCLASS64`).to.equal(2);
      expect(elf.readUInt16LE(16), `${t} ET_DYN`).to.equal(3);
      expect(elf.readUInt16LE(18), `${t} e_machine`).to.equal(machine);
    }

    const demo = await run('npx', ['vhost-user', 'demo'], { cwd: project, env: cleanEnv(bin), timeoutMs: 60_000 });
    expect(demo.status, demo.stdout + demo.stderr).to.equal(0);
    expect(demo.stdout).to.match(/sent 10000 frames, 640000 bytes; received 10000 frames, 640000 bytes/);
    expect(demo.stdout).to.match(/lost 0, corrupt 0, duplicated 0/);
    expect(demo.stdout).to.match(/OK: every frame came back intact/);

    writeFileSync(join(project, 'first.mjs'), ESM_PROGRAM);
    const esm = await run('node', ['first.mjs'], { cwd: project, env: cleanEnv(bin), timeoutMs: 30_000 });
    expect(esm.status, esm.stderr).to.equal(0);
    expect(JSON.parse(esm.stdout)).to.deep.equal({ queueNum: 8, maxMemSlots: 32, mac: '52:54:00:12:34:56', bytes: [1, 2, 3, 4] });
  });

  it('with install scripts off (npm install --ignore-scripts, where npm is heading for unapproved packages) the prebuilt still serves', async () => {
    const project = freshProject('noscripts');
    const install = await npmInstall(project, ['--ignore-scripts']);
    expect(install.status, install.stdout + install.stderr).to.equal(0);
    writeFileSync(join(project, 'first.mjs'), ESM_PROGRAM);
    const esm = await run('node', ['first.mjs'], { cwd: project, env: cleanEnv(bin), timeoutMs: 30_000 });
    expect(esm.status, esm.stderr).to.equal(0);
    expect(JSON.parse(esm.stdout)).to.include({ queueNum: 8, mac: '52:54:00:12:34:56' });
  });

  it('where the prebuilt does not load: the import fails with VHOST_NATIVE naming both paths, and npm rebuild falls back to node-gyp', async function () {
    const missing = ['cc', 'make', 'python3'].filter((exe) => !findExecutable(exe));
    if (missing.length > 0) {
      process.stdout.write(`      skipped: building needs ${missing.join(', ')} (apt-get install g++ make python3)\n`);
      this.skip();
    }
    const project = freshProject('fallback');
    const install = await npmInstall(project, ['--ignore-scripts']);
    expect(install.status, install.stderr).to.equal(0);
    const pkg = join(project, 'node_modules', 'vhost-user-client');
    // A binary this platform's loader rejects stands in for one built against another libc.
    const prebuilt = join(pkg, 'prebuilds', target, SHIM_FILE);
    writeFileSync(prebuilt, 'not an ELF file');
    writeFileSync(join(project, 'first.mjs'), ESM_PROGRAM);

    const broken = await run('node', ['first.mjs'], { cwd: project, env: cleanEnv(bin), timeoutMs: 30_000 });
    expect(broken.status).to.not.equal(0);
    expect(broken.stderr).to.include('VHOST_NATIVE');
    expect(broken.stderr).to.include(prebuilt).and.include(join(pkg, 'native-shim', 'build', 'Release', SHIM_FILE));

    // With a toolchain on PATH, the install script notices the misfit and builds.
    const rebuild = await run('npm', ['rebuild', '--foreground-scripts', 'vhost-user-client'], {
      cwd: project,
      env: cleanEnv(process.env['PATH'] ?? ''),
      timeoutMs: 120_000,
    });
    expect(rebuild.status, rebuild.stdout + rebuild.stderr).to.equal(0);
    expect(rebuild.stderr).to.include(`no prebuilt native shim for ${target}`);
    expect(existsSync(join(pkg, 'native-shim', 'build', 'Release', SHIM_FILE))).to.equal(true);
    const esm = await run('node', ['first.mjs'], { cwd: project, env: cleanEnv(bin), timeoutMs: 30_000 });
    expect(esm.status, esm.stderr).to.equal(0);
    expect(JSON.parse(esm.stdout)).to.include({ queueNum: 8, mac: '52:54:00:12:34:56' });
  });
});
