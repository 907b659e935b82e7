/**
 * The programs in examples/ run as a user would run them (`node dist/examples/X.js`,
 * importing the package by its name), each against its real back-end when that is
 * installed, and print what they claim: frames that came back, counters read from
 * the back-end, conformance results. A back-end an example started is gone after it exits.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { startQemuStorageDaemon, type QemuStorageDaemonBackend } from '../../lib/launch/qemu-storage-daemon.js';
import { skipWithout } from '../helpers/backends.js';
import { runNode, type NodeRun } from '../helpers/cli.js';

/** What examples/blk.ts writes: 64 KiB of this pattern at 1 MiB. */
function blkPattern(): Uint8Array {
  return Uint8Array.from({ length: 64 * 1024 }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
}

type ExampleRun = NodeRun;

/** Runs dist/examples/`name`.js in a child process; SIGKILL after `killAfterMs`. */
function runExample(name: string, args: string[] = [], killAfterMs = 60_000): Promise<ExampleRun> {
  return runNode(fileURLToPath(new URL(`../../examples/${name}.js`, import.meta.url)), args, killAfterMs);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('examples/', function () {
  this.timeout(90_000);

  it('hello: three frames through the reference back-end come back as sent', async () => {
    const r = await runExample('hello');
    expect(r.stderr).to.equal('');
    expect(r.status, r.stdout).to.equal(0);
    expect(r.stdout).to.match(/^connected: split rings, 1 queue pair\(s\) of 256$/m);
    expect(r.stdout).to.match(/^sent 3 frames, received 3: hello vhost-user world$/m);
    // 42 bytes of Ethernet, IPv4 and UDP headers before each greeting.
    expect(r.stdout).to.match(/^counters: txPackets 3, rxPackets 3, rxBytes 146$/m);
  });

  for (const device of ['net', 'blk'] as const) {
    it(`check-backend ${device}: every check run against a spawned vhost-user serve passes or says why it skips`, async () => {
      const r = await runExample('check-backend', [device]);
      expect(r.stderr).to.equal('');
      expect(r.status, r.stdout).to.equal(0);
      const lines = r.stdout.split('\n').filter((l) => /^(PASS|FAIL|SKIP) /.test(l));
      expect(lines.filter((l) => l.startsWith('FAIL'))).to.deep.equal([]);
      for (const skip of lines.filter((l) => l.startsWith('SKIP'))) expect(skip).to.match(/not offered/);
      const summary = /^(\d+) checks against vhost-user serve --device (\w+) \((\w+)\): (\d+) passed, 0 failed, (\d+) skipped/m.exec(r.stdout);
      expect(summary, r.stdout).to.not.equal(null);
      const [, total, named, dev, passed, skipped] = summary!;
      expect([named, dev]).to.deep.equal([device, device]);
      expect(Number(total)).to.equal(lines.length);
      expect(Number(passed) + Number(skipped)).to.equal(lines.length);
      expect(Number(passed)).to.be.greaterThan(Number(skipped));
    });
  }

  it('migrate: a verified migration between two reference back-ends; a back-end that forgets to log is caught', async () => {
    const ok = await runExample('migrate', ['packed']);
    expect(ok.stderr).to.equal('');
    expect(ok.status, ok.stdout).to.equal(0);
    expect(ok.stdout).to.match(/^migrated net \(packed, log at descriptor-ring\): \d+ rounds/m);
    expect(ok.stdout).to.match(/^exactly once: ok \((\d+) sent, \1 back, 0 duplicates/m);
    expect(ok.stdout).to.match(/^verified$/m);
    const bad = await runExample('migrate', ['split', 'unlogged-used']);
    expect(bad.status).to.equal(1);
    expect(bad.stdout).to.match(/^completeness: FAILED, unlogged pages \d+ \(ring 0 \(receiveq 0\) used ring\)/m);
  });

  it('check-backend with a selection runs only the checks it names', async () => {
    const r = await runExample('check-backend', ['net', 'handshake.*']);
    expect(r.status, r.stdout + r.stderr).to.equal(0);
    const ids = r.stdout.split('\n').flatMap((l) => /^(?:PASS|FAIL|SKIP) (\S+)/.exec(l)?.[1] ?? []);
    expect(ids.length).to.be.greaterThan(0);
    for (const id of ids) expect(id).to.match(/^handshake\./);
  });

  for (const ring of ['split', 'packed'] as const) {
    it(`blk ${ring}: writes, reads back and compares on the built-in reference back-end, printing the config`, async () => {
      const r = await runExample('blk', ring === 'packed' ? ['packed'] : []);
      expect(r.stderr).to.equal('');
      expect(r.status, r.stdout).to.equal(0);
      expect(r.stdout).to.match(new RegExp(`^connected to the reference back-end: ${ring} rings, 1 queue\\(s\\)$`, 'm'));
      expect(r.stdout).to.match(/^capacity: 131072 sectors \(67108864 bytes\)$/m);
      expect(r.stdout).to.match(/^blk_size: 512, seg_max: \d+, /m);
      expect(r.stdout).to.match(/^writeback: .*, discard: yes, write-zeroes: yes, read-only: false$/m);
      expect(r.stdout).to.match(/^wrote 65536 bytes at 1048576, read them back: identical$/m);
      expect(r.stdout).to.match(/^requests: 2 submitted, 2 completed, 0 failed$/m);
    });
  }

  describe('blk on qemu-storage-daemon @integration', () => {
    let qsd: QemuStorageDaemonBackend | null = null;
    before(function () {
      skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
    });
    afterEach(async () => {
      await qsd?.stop();
      qsd = null;
    });

    it('blk SOCKET: the pattern it wrote is in the image file, read outside the library', async () => {
      qsd = await startQemuStorageDaemon({ imageSize: 8 << 20 });
      const r = await runExample('blk', [qsd.socketPath]);
      expect(r.stderr).to.equal('');
      expect(r.status, r.stdout).to.equal(0);
      expect(r.stdout).to.include(`connected to ${qsd.socketPath}: split rings`);
      expect(r.stdout).to.match(/^capacity: 16384 sectors \(8388608 bytes\)$/m);
      expect(r.stdout).to.match(/^wrote 65536 bytes at 1048576, read them back: identical$/m);
      const image = readFileSync(qsd.imagePath!);
      expect(image.subarray(1 << 20, (1 << 20) + 65536).equals(blkPattern()), 'the image holds the pattern at 1 MiB').to.equal(true);
    });
  });

  describe('dpdk-testpmd @integration', () => {
    before(function () {
      skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    });

    it('testpmd: 1000 frames come back intact through io forwarding; testpmd counted each once, and is gone after', async () => {
      const r = await runExample('testpmd', ['1000']);
      expect(r.status, r.stdout + r.stderr).to.equal(0);
      const started = /^dpdk-testpmd \(pid (\d+)\) on (\S+): (split|packed) rings of 256$/m.exec(r.stdout);
      expect(started, r.stdout).to.not.equal(null);
      expect(r.stdout).to.match(/^sent 1000 frames, received 1000, intact and in order 1000$/m);
      expect(r.stdout).to.match(/^testpmd port 0: RX-packets 1000, TX-packets 1000, RX-missed 0$/m);
      expect(alive(Number(started![1])), 'testpmd still running after the example exited').to.equal(false);
      expect(existsSync(started![2]!), 'socket left behind').to.equal(false);
    });
  });
});
