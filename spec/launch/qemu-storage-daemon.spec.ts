import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { skipWithout } from '../helpers/backends.js';
import { isVhostUserError } from '../../lib/errors.js';
import {
  type BackendProcess,
  makeTempDir,
  spawnBackend,
  startQemuStorageDaemon,
  stopAll,
} from '../../lib/launch/index.js';
import { expectGone, expectRemoved, rejectionOf, tmpEntries } from './helpers.js';
import { BLK_T, BlkRig } from '../helpers/blk-rig.js';
import { hasBit, VirtioBlkFeature } from '../../lib/protocol/constants.js';
import { parsePidStat } from '../../scripts/bench/cpu.js';

describe('launch/qemu-storage-daemon @integration', function () {
  this.timeout(20_000);
  const extraDirs: string[] = [];

  before(function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
  });

  afterEach(async () => {
    await stopAll();
    await Promise.all(extraDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('exports a sparse 64 MiB raw image; stop() kills by pid and removes the temp dir', async () => {
    const b = await startQemuStorageDaemon();
    expect(statSync(b.socketPath).isSocket()).to.equal(true);
    expect(b.imageSize).to.equal(64 * 1024 * 1024);
    expect(b.imagePath).to.equal(path.join(b.tempDir, 'disk.raw'));
    const st = statSync(b.imagePath!);
    expect(st.size).to.equal(b.imageSize);
    expect(st.blocks * 512).to.be.below(b.imageSize);
    await b.stop();
    expectGone(b.pid);
    expect(b.process.exitStatus).to.deep.equal({ code: 0, signal: null });
    expectRemoved(b.tempDir);
  });

  it('null-co with num-queues and a read-only export', async () => {
    const b = await startQemuStorageDaemon({ driver: 'null-co', imageSize: 1 << 30, numQueues: 2, writable: false });
    expect(b.imagePath).to.equal(undefined);
    expect(b.imageSize).to.equal(1 << 30);
    expect(b.args[1]).to.equal('driver=null-co,node-name=f0,size=1073741824');
    expect(b.args[3]).to.match(/writable=off,num-queues=2$/);
    expect(statSync(b.socketPath).isSocket()).to.equal(true);
  });

  it("discard: 'unmap' is passed to the file blockdev (its effect is tested in spec/devices/virtio-blk-qsd)", async () => {
    const b = await startQemuStorageDaemon({ imageSize: 1 << 20, discard: 'unmap' });
    expect(b.args[1]).to.match(/^driver=file,node-name=f0,filename=.*,discard=unmap$/);
    expect(statSync(b.socketPath).isSocket()).to.equal(true);
  });

  it('a read-only file export with io_uring and O_DIRECT: RO offered, reads the file, refuses writes; its pid is accountable', async () => {
    // O_DIRECT needs a disk file system (/tmp may be tmpfs).
    const direct = await mkdtemp('/var/tmp/vhost-qsd-spec-');
    extraDirs.push(direct);
    const img = path.join(direct, 'disk.raw');
    await writeFile(img, Buffer.alloc(1 << 20, 0x5a));
    const b = await startQemuStorageDaemon({ imagePath: img, writable: false, numQueues: 2, aio: 'io_uring', cacheDirect: true });
    expect(b.args[1]).to.equal(`driver=file,node-name=f0,filename=${img},read-only=on,aio=io_uring,cache.direct=on`);
    const rig = new BlkRig(64, 4);
    try {
      const n = await rig.attach(b.socketPath);
      expect(n.queueNum).to.equal(2);
      expect(hasBit(n.features, VirtioBlkFeature.VIRTIO_BLK_F_RO)).to.equal(true);
      expect((await rig.request(0, BLK_T.IN, 8n)).status).to.equal(0);
      expect(rig.data(0).every((x) => x === 0x5a)).to.equal(true);
      rig.data(1).fill(1);
      expect((await rig.request(1, BLK_T.OUT, 8n)).status).to.equal(1, 'IOERR');
      // CPU accounting reads /proc/PID/stat of the daemon itself.
      expect(parsePidStat(readFileSync(`/proc/${b.pid}/stat`, 'utf8'))).to.be.a('number').and.at.least(0);
      expect(readFileSync(`/proc/${b.pid}/comm`, 'utf8').trim()).to.match(/^qemu-storage-d/);
    } finally {
      rig.close();
    }
    expect((await readFile(img)).every((x) => x === 0x5a)).to.equal(true);
  });

  it('leaves a caller-supplied image in place', async () => {
    const dir = await makeTempDir();
    extraDirs.push(dir);
    const img = path.join(dir, 'my,disk.raw');
    await writeFile(img, Buffer.alloc(1 << 20));
    const b = await startQemuStorageDaemon({ imagePath: img });
    expect(b.imageSize).to.equal(1 << 20);
    await b.stop();
    expectRemoved(b.tempDir);
    expect(existsSync(img)).to.equal(true);
  });

  it('kill9() leaves the temp dir (and the stale socket) until stop()', async () => {
    const b = await startQemuStorageDaemon();
    await b.kill9();
    expectGone(b.pid);
    expect(b.process.exitStatus?.signal).to.equal('SIGKILL');
    expect(existsSync(b.socketPath)).to.equal(true);
    await b.stop();
    expectRemoved(b.tempDir);
  });

  it('fails fast with VHOST_SPAWN_FAILED and its error output for a missing image', async () => {
    const before = await tmpEntries('vhost-qsd-');
    const t0 = Date.now();
    const err = await rejectionOf(startQemuStorageDaemon({ imagePath: '/nonexistent/vhost-user-test.img' }));
    expect(isVhostUserError(err, 'VHOST_SPAWN_FAILED'), String(err)).to.equal(true);
    expect((err as Error).message).to.contain("Could not open '/nonexistent/vhost-user-test.img'");
    expect(Date.now() - t0).to.be.below(2000);
    expect([...(await tmpEntries('vhost-qsd-'))].filter((n) => !before.has(n))).to.deep.equal([]);
  });

  it('a readiness timeout kills the real back-end', async () => {
    const tempDir = await makeTempDir();
    let spawned: BackendProcess | undefined;
    const err = await rejectionOf(
      spawnBackend({
        command: 'qemu-storage-daemon',
        args: [
          '--blockdev', 'driver=null-co,node-name=f0,size=1048576',
          '--export', `type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path=${tempDir}/real.sock`,
        ],
        socketPath: path.join(tempDir, 'expected.sock'),
        tempDir,
        readyTimeoutMs: 500,
        onSpawn: (b) => (spawned = b),
      }),
    );
    expect(isVhostUserError(err, 'VHOST_SPAWN_TIMEOUT'), String(err)).to.equal(true);
    expectGone(spawned!.pid);
    expectRemoved(tempDir);
  });
});
