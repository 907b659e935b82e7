import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { isVhostUserError } from '../../lib/errors.js';
import {
  BackendProcess,
  findExecutable,
  liveBackends,
  makeTempDir,
  processGroupMembers,
  spawnBackend,
  stopAll,
} from '../../lib/launch/index.js';
import { expectGone, expectGroupsGone, expectRemoved, rejectionOf } from './helpers.js';

/** A stand-in back-end: node listening on a Unix socket, optionally ignoring SIGTERM. */
function listener(socketPath: string, { ignoreTerm = false, lines = 0 } = {}): { command: string; args: string[] } {
  const script = [
    ignoreTerm ? "process.on('SIGTERM', () => {});" : '',
    `for (let i = 0; i < ${lines}; i++) console.log('line ' + i);`,
    "console.error('listening');",
    "require('net').createServer().listen(process.argv[1]);",
  ].join('\n');
  return { command: process.execPath, args: ['-e', script, socketPath] };
}

describe('launch/backend-process', function () {
  this.timeout(10_000);

  afterEach(async () => {
    await stopAll(0);
  });

  describe('findExecutable', () => {
    it('finds a program on PATH as an absolute path', () => {
      const sh = findExecutable('sh');
      expect(sh).to.be.a('string');
      expect(path.isAbsolute(sh!)).to.equal(true);
    });

    it('returns null for a missing program', () => {
      expect(findExecutable('no-such-program-vhost-user-xyz')).to.equal(null);
    });
  });

  it('resolves when the socket exists, captures output, and stop() kills by pid and removes the temp dir', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const b = await spawnBackend({ ...listener(socketPath), socketPath, tempDir });
    expect(statSync(socketPath).isSocket()).to.equal(true);
    expect(b.running).to.equal(true);
    expect(liveBackends()).to.include(b);
    for (const deadline = Date.now() + 2000; !b.output().includes('listening') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
    expect(b.output()).to.contain('listening');

    await b.stop();
    expectGone(b.pid);
    expectRemoved(tempDir);
    expect(b.exitStatus?.signal).to.equal('SIGTERM');
    expect(liveBackends()).not.to.include(b);
    await b.stop();
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const b = await spawnBackend({ ...listener(socketPath, { ignoreTerm: true }), socketPath, tempDir });
    const t0 = Date.now();
    await b.stop(300);
    expect(Date.now() - t0).to.be.at.least(250);
    expect(b.exitStatus?.signal).to.equal('SIGKILL');
    expectGone(b.pid);
    expectRemoved(tempDir);
  });

  it('kill9() keeps the temp dir; a later stop() removes it', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const b = await spawnBackend({ ...listener(socketPath), socketPath, tempDir });
    await b.kill9();
    expectGone(b.pid);
    expect(existsSync(tempDir)).to.equal(true);
    await b.stop();
    expectRemoved(tempDir);
  });

  it('keeps only the last 200 lines of output', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const b = await spawnBackend({ ...listener(socketPath, { lines: 500 }), socketPath, tempDir });
    // 'line 499' is the last line the child prints: once it is here, every line has been seen.
    for (const deadline = Date.now() + 2000; !b.output().includes('line 499') && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
    const lines = b.output().split('\n');
    expect(lines).to.have.length(200);
    expect(lines).to.include('line 499');
    expect(lines).not.to.include('line 250');
  });

  it('fails with VHOST_SPAWN_FAILED and the output when the process exits before it is ready', async () => {
    const tempDir = await makeTempDir();
    const err = await rejectionOf(
      spawnBackend({
        command: 'sh',
        args: ['-c', 'echo first; echo "bad option --frob" >&2; exit 3'],
        socketPath: path.join(tempDir, 'b.sock'),
        tempDir,
      }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_FAILED'), String(err)).to.equal(true);
    expect((err as Error).message).to.contain('exited with code 3').and.contain('bad option --frob');
    expectRemoved(tempDir);
  });

  it('fails with VHOST_SPAWN_FAILED for a program that is not installed', async () => {
    const tempDir = await makeTempDir();
    const err = await rejectionOf(
      spawnBackend({ command: 'no-such-program-vhost-user-xyz', args: [], socketPath: path.join(tempDir, 's'), tempDir }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_FAILED')).to.equal(true);
    expectRemoved(tempDir);
  });

  it('kills the process and fails with VHOST_SPAWN_TIMEOUT at the readiness deadline', async () => {
    const tempDir = await makeTempDir();
    let spawned: BackendProcess | undefined;
    const t0 = Date.now();
    const err = await rejectionOf(
      spawnBackend({
        command: 'sleep',
        args: ['30'],
        socketPath: path.join(tempDir, 'never.sock'),
        tempDir,
        readyTimeoutMs: 300,
        onSpawn: (b) => (spawned = b),
      }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_TIMEOUT'), String(err)).to.equal(true);
    expect(Date.now() - t0).to.be.within(250, 3000);
    expect(spawned).to.not.equal(undefined);
    expectGone(spawned!.pid);
    expectRemoved(tempDir);
  });

  it('does not take a stale socket file for readiness', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const first = await spawnBackend({ ...listener(socketPath, { ignoreTerm: true }), socketPath, tempDir });
    await first.kill9();
    expect(statSync(socketPath).isSocket()).to.equal(true);
    const err = await rejectionOf(
      spawnBackend({ command: 'sleep', args: ['30'], socketPath, tempDir, readyTimeoutMs: 200 }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_TIMEOUT')).to.equal(true);
  });

  it('rejects a socket path longer than sun_path', async () => {
    const tempDir = await makeTempDir();
    const err = await rejectionOf(
      spawnBackend({ command: 'sleep', args: ['1'], socketPath: path.join(tempDir, 'x'.repeat(120)), tempDir }),
    );
    expect(isVhostUserError(err, 'VHOST_INVALID_ARGUMENT')).to.equal(true);
  });

  it('kills back-ends that were never stopped when the owning process exits', async function () {
    const lib = new URL('../../lib/launch/index.js', import.meta.url).href;
    const script = `
      import path from 'node:path';
      import { makeTempDir, spawnBackend } from ${JSON.stringify(lib)};
      const tempDir = await makeTempDir();
      const socketPath = path.join(tempDir, 'b.sock');
      const b = await spawnBackend({
        command: process.execPath,
        args: ['-e', "require('net').createServer().listen(process.argv[1])", socketPath],
        socketPath, tempDir, dieWithParent: false,
      });
      console.log(JSON.stringify({ pid: b.pid, tempDir }));
      process.exit(0);`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
    const { pid, tempDir } = JSON.parse(stdout) as { pid: number; tempDir: string };
    // The orphan is reaped by init, which may take a while here: a zombie counts as dead.
    for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    expect(isAlive(pid), `pid ${pid} still running`).to.equal(false);
    expectRemoved(tempDir);
  });
});

/** A wrapper that forks: a background `sleep` in the back-end's group, then the listener. */
function forkingWrapper(socketPath: string, { exec = true } = {}): { command: string; args: string[] } {
  const l = listener(socketPath);
  const run = `'${l.command}' -e "$1" '${socketPath}'`;
  // Without exec the shell stays, as the parent of the listener (as npx and sudo do).
  return { command: 'sh', args: ['-c', `sleep 300 & ${exec ? `exec ${run}` : `${run}; exit $?`}`, 'sh', l.args[1]!] };
}

describe('launch/backend-process: process groups', function () {
  this.timeout(15_000);

  afterEach(async () => {
    await stopAll(0);
  });

  for (const exec of [true, false]) {
    it(`stop() ends everything a wrapper started (sh -c, ${exec ? 'exec' : 'forking'}), SIGTERM first`, async () => {
      const tempDir = await makeTempDir();
      const socketPath = path.join(tempDir, 'b.sock');
      const b = await spawnBackend({ ...forkingWrapper(socketPath, { exec }), socketPath, tempDir });
      expect(b.pgid).to.equal(b.pid);
      const members = processGroupMembers(b.pgid);
      expect(members, 'the wrapper, its sleep and the listener').to.have.length(exec ? 2 : 3);
      expect(members).to.include(b.pid);
      const ourGroup = Number(readFileSync('/proc/self/stat', 'latin1').split(') ')[1]!.split(' ')[2]);
      expect(b.pgid).to.not.equal(ourGroup);
      const t0 = Date.now();
      await b.stop(3000);
      expect(Date.now() - t0, 'all took SIGTERM: no wait for the grace period').to.be.below(2000);
      // Checked at once: the grace period is over, nothing may be left (orphaned zombies count as gone).
      await expectGroupsGone([b.pgid], 0);
      expectRemoved(tempDir);
    });
  }

  it('stop() ends what is left after the process it started exited by itself', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const l = listener(socketPath);
    // The shell leaves the listener running in the background and exits once the socket is there.
    const b = await spawnBackend({
      command: 'sh',
      args: ['-c', `'${l.command}' -e "$1" '${socketPath}' & while [ ! -S '${socketPath}' ]; do sleep 0.05; done; sleep 0.5`, 'sh', l.args[1]!],
      socketPath,
      tempDir,
    });
    expect(await b.exited).to.deep.equal({ code: 0, signal: null });
    const left = processGroupMembers(b.pgid);
    expect(left, 'the listener, orphaned').to.have.length(1);
    await b.stop();
    await expectGroupsGone([b.pgid], 0);
  });

  it('kill9() kills the whole group', async () => {
    const tempDir = await makeTempDir();
    const socketPath = path.join(tempDir, 'b.sock');
    const b = await spawnBackend({ ...forkingWrapper(socketPath, { exec: false }), socketPath, tempDir });
    const members = processGroupMembers(b.pgid);
    await b.kill9();
    expect(b.exitStatus?.signal).to.equal('SIGKILL');
    expect(members).to.have.length(3);
    await expectGroupsGone([b.pgid], 0);
    expect(existsSync(tempDir)).to.equal(true);
  });

  it('a readiness timeout leaves no process of the group', async () => {
    const tempDir = await makeTempDir();
    let spawned: BackendProcess | undefined;
    const err = await rejectionOf(
      spawnBackend({
        command: 'sh',
        args: ['-c', 'sleep 300 & sleep 300; exit 0'],
        socketPath: path.join(tempDir, 'never.sock'),
        tempDir,
        readyTimeoutMs: 300,
        onSpawn: (b) => (spawned = b),
      }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_TIMEOUT'), String(err)).to.equal(true);
    await expectGroupsGone([spawned!.pgid], 0);
    expectRemoved(tempDir);
  });

  for (const dieWithParent of [true, false]) {
    it(`a front-end killed with SIGKILL leaves no process of the group${dieWithParent ? '' : ' (dieWithParent: false keeps it)'}`, async () => {
      const lib = new URL('../../lib/launch/index.js', import.meta.url).href;
      const script = `
        import path from 'node:path';
        import { makeTempDir, spawnBackend } from ${JSON.stringify(lib)};
        const tempDir = await makeTempDir();
        const socketPath = path.join(tempDir, 'b.sock');
        const b = await spawnBackend({
          command: 'sh',
          args: ['-c', 'sleep 300 & ' + JSON.stringify(process.execPath) + ' -e "require(\\'net\\').createServer().listen(process.argv[1])" "$1"; exit $?', 'sh', socketPath],
          socketPath, tempDir, dieWithParent: ${dieWithParent},
        });
        console.log(JSON.stringify({ pgid: b.pgid }));
        setInterval(() => {}, 1000);`;
      const frontEnd = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const line = await new Promise<string>((resolve, reject) => {
        frontEnd.stdout.setEncoding('utf8').once('data', resolve);
        frontEnd.once('exit', (code) => reject(new Error(`front-end exited with ${code}`)));
      });
      const { pgid } = JSON.parse(line) as { pgid: number };
      expect(processGroupMembers(pgid), 'sh, sleep and the listener').to.have.length(3);
      frontEnd.kill('SIGKILL');
      await new Promise((r) => frontEnd.once('exit', r));
      if (dieWithParent) {
        await expectGroupsGone([pgid]);
      } else {
        // The owner asked for no parent-death handling: the group outlives it (stopped here by group id).
        await new Promise((r) => setTimeout(r, 300));
        const left = processGroupMembers(pgid);
        process.kill(-pgid, 'SIGKILL');
        expect(left).to.have.length(3);
        await expectGroupsGone([pgid]);
      }
    });
  }
});

function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
