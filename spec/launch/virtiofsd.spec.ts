/**
 * virtiofsd as the project runs it (QEMU 7.2's C daemon from qemu-system-common),
 * and the version probes of lib/launch/versions.ts for every back-end installed.
 * Pins what the conformance suite relies on: virtiofsd serves one front-end and
 * exits with code 0 when it leaves (a one-shot back-end), and a probe leaves no
 * file behind.
 */
import { existsSync, readdirSync } from 'node:fs';
import { expect } from 'chai';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { dpdkRuntimeDir } from '../../lib/launch/dpdk-testpmd.js';
import { liveBackends, startVirtiofsd, stopAll } from '../../lib/launch/index.js';
import { qemuStorageDaemonVersion, testpmdVersion, virtiofsdVersion } from '../../lib/launch/versions.js';
import { findVirtiofsd } from '../../lib/launch/virtiofsd.js';
import { expectGone, expectRemoved } from './helpers.js';

describe('launch/virtiofsd and version probes @integration', function () {
  this.timeout(30_000);

  afterEach(async () => {
    await stopAll();
    expect(liveBackends()).to.deep.equal([]);
  });

  it('virtiofsd serves one front-end and exits with code 0 when it leaves; its temp dir is removed', async function () {
    if (!findVirtiofsd()) {
      process.stdout.write('      skipped: virtiofsd is not installed (apt-get install qemu-system-common)\n');
      this.skip();
    }
    const fs = await startVirtiofsd();
    expect(fs.args).to.include('sandbox=chroot');
    const client = await VhostUserClient.connect(fs.socketPath, { timeoutMs: 5000 });
    const features = await client.getFeatures();
    // VIRTIO_F_VERSION_1 (32) and VHOST_USER_F_PROTOCOL_FEATURES (30).
    expect(features & ((1n << 32n) | (1n << 30n))).to.equal((1n << 32n) | (1n << 30n));
    expect(fs.running).to.equal(true);
    client.close();
    expect(await fs.exited).to.deep.equal({ code: 0, signal: null });
    await fs.stop();
    expectGone(fs.pid);
    expectRemoved(fs.tempDir);
  });

  it('reads the version of each back-end installed, leaving no DPDK runtime directory', async () => {
    const dpdkDirs = () => (existsSync(dpdkRuntimeDir('')) ? readdirSync(dpdkRuntimeDir('')).filter((d) => d.startsWith(`vhost-version-${process.pid}-`)) : []);
    const probes: [string, string | null, () => Promise<string | null>][] = [
      ['dpdk-testpmd', findExecutable('dpdk-testpmd'), testpmdVersion],
      ['qemu-storage-daemon', findExecutable('qemu-storage-daemon'), qemuStorageDaemonVersion],
      ['virtiofsd', findVirtiofsd(), virtiofsdVersion],
    ];
    for (const [name, exe, version] of probes) {
      const v = await version();
      if (exe === null) expect(v, name).to.equal(null);
      else expect(v, name).to.match(/^\d+\.\d+(\.\d+)?$/);
    }
    expect(dpdkDirs()).to.deep.equal([]);
  });
});
