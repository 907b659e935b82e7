/**
 * VirtioBlk against DPDK's vhost_blk example (rte_vhost, what SPDK's vhost-blk
 * is built on), built once from Debian's dpdk-doc sources by lib/launch (cached). It has
 * known bugs; these tests record them as findings and show the driver's answer:
 *
 * - used length = data length for writes (and no status byte counted for reads):
 *   strict validation (the default) breaks the ring with VHOST_RING_LEN_TOO_LARGE;
 *   `strictUsedLen: false` drives it anyway and counts each violation;
 * - packed rings: a write is never completed: VHOST_BLK_TIMEOUT, never a hang.
 *
 * It offers INFLIGHT_SHMFD: the driver hands it the inflight area.
 */
import { existsSync } from 'node:fs';
import { expect } from 'chai';
import { VirtioBlk, type VirtioBlkOptions } from '../../lib/devices/blk/virtio-blk.js';
import { isVhostUserError } from '../../lib/errors.js';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { buildVhostBlk, startVhostBlk, VHOST_BLK_SOURCES, type VhostBlkBackend } from '../../lib/launch/dpdk-vhost-blk.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 5 + seed) & 0xff;
  return b;
}

describe("VirtioBlk against DPDK's vhost_blk example @integration", function () {
  this.timeout(60_000);
  let binary = '';
  let backend: VhostBlkBackend | null = null;
  let blk: VirtioBlk | null = null;

  before(async function () {
    if (!existsSync(VHOST_BLK_SOURCES) || !findExecutable('make') || !findExecutable('pkg-config')) {
      process.stdout.write(`      skipped: DPDK's vhost_blk sources (${VHOST_BLK_SOURCES}, dpdk-doc), make or pkg-config are missing\n`);
      this.skip();
    }
    // Built once (cached by content and DPDK version); a failing build fails the suite rather than skipping it.
    binary = await buildVhostBlk();
  });

  afterEach(async () => {
    blk?.close();
    blk = null;
    await backend?.stop();
    backend = null;
  });

  async function open(options: VirtioBlkOptions): Promise<VirtioBlk> {
    backend = await startVhostBlk({ binary });
    blk = await VirtioBlk.open(backend.socketPath, { requestTimeoutMs: 2000, ...options });
    return blk;
  }

  it('strict used length (default): a write breaks the ring with VHOST_RING_LEN_TOO_LARGE (finding: used len = data length)', async () => {
    const b = await open({});
    expect(b.inflightShared, 'INFLIGHT_SHMFD area handed over').to.equal(true);
    expect(b.config.capacityBytes).to.equal(128 * 1024 * 1024);
    try {
      await b.write(4096, pattern(8192, 1));
      expect.fail('the write was accepted');
    } catch (e) {
      expect(isVhostUserError(e, 'VHOST_RING_LEN_TOO_LARGE'), String(e)).to.equal(true);
      expect((e as Error).message).to.contain('used len 8192 exceeds the 1 writable bytes');
    }
  });

  it('strict used length: a read reported without its status byte fails with VHOST_BLK_USED_LEN naming the request; the ring stays usable', async () => {
    const b = await open({});
    for (let i = 0; i < 2; i++) {
      try {
        await b.read(8192, 4096);
        expect.fail('the read was accepted');
      } catch (e) {
        expect(isVhostUserError(e, 'VHOST_BLK_USED_LEN'), String(e)).to.equal(true);
        expect((e as Error).message).to.match(/^VIRTIO_BLK_T_IN sector 16 length 4096: used len 4096; the device must report 4097/);
      }
    }
    expect(b.queue(0).error).to.equal(null);
  });

  it('strictUsedLen false: data round-trips, each wrong used length counted', async () => {
    const b = await open({ strictUsedLen: false });
    for (let i = 0; i < 8; i++) await b.write(i * 8192, pattern(8192, i));
    for (let i = 0; i < 8; i++) expect(Buffer.from(await b.read(i * 8192, 8192)).equals(Buffer.from(pattern(8192, i))), `block ${i}`).to.equal(true);
    const c = b.queue(0).counters;
    // Writes report the data length (clamped by the ring), reads the data length without the status byte.
    expect(c.usedLenViolations).to.equal(16);
    expect(b.queue(0).vq.usedLenClamped).to.equal(8);
    expect(c.failed).to.equal(0);
  });

  it('packed rings: a write is never completed (finding); VHOST_BLK_TIMEOUT within requestTimeoutMs, no hang', async () => {
    const b = await open({ ring: 'packed', strictUsedLen: false, requestTimeoutMs: 1000 });
    const t0 = Date.now();
    try {
      await b.write(0, pattern(4096, 3));
      process.stdout.write('      note: packed write completed: the back-end no longer has this bug\n');
    } catch (e) {
      expect(isVhostUserError(e, 'VHOST_BLK_TIMEOUT'), String(e)).to.equal(true);
      expect(Date.now() - t0).to.be.below(5000);
    }
  });
});
