/**
 * VirtioBlk against the reference back-end (lib/backend, blk device on a
 * memfd, in-process): split and packed rings, 1 and 2 queues, the request
 * types it serves, counters read from the back-end, and its ring faults:
 * a used length beyond the chain (strict: the ring breaks; lenient: counted),
 * a ring that stops (timeout), an id never made available.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ReferenceBackend, type ReferenceBackendOptions } from '../../lib/backend/reference-backend.js';
import { VirtioBlk, type VirtioBlkOptions } from '../../lib/devices/blk/virtio-blk.js';
import { isVhostUserError, type VhostErrorCode } from '../../lib/errors.js';
import { hasBit, VirtioFeature } from '../../lib/protocol/constants.js';
import { resourceSnapshot, leakedAfter } from '../helpers/resources.js';

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 29 + seed * 3 + (i >> 9)) & 0xff;
  return b;
}
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function rejects(p: Promise<unknown>, code: VhostErrorCode): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(isVhostUserError(e), String(e)).to.equal(true);
    expect((e as { code: string }).code, String(e)).to.equal(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

describe('VirtioBlk against the reference back-end', function () {
  this.timeout(20_000);
  let dir: string;
  let backend: ReferenceBackend | null = null;
  let blk: VirtioBlk | null = null;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vhost-blk-ref-'));
  });
  afterEach(() => {
    blk?.close();
    backend?.close();
    blk = null;
    backend = null;
    rmSync(dir, { recursive: true, force: true });
  });

  async function open(b: Partial<ReferenceBackendOptions>, o: VirtioBlkOptions): Promise<VirtioBlk> {
    backend = ReferenceBackend.listen(path.join(dir, 'ref.sock'), { device: 'blk', blkSize: 8 * 1024 * 1024, ...b });
    blk = await VirtioBlk.open(backend.path, o);
    return blk;
  }

  for (const ring of ['split', 'packed'] as const) {
    for (const queues of [1, 2]) {
      it(`${ring} rings, ${queues} queue(s): write, read, flush, get-id; the back-end counted them`, async () => {
        const snap = resourceSnapshot();
        const b = await open({ queueNum: queues }, { ring, queues });
        expect(hasBit(b.features, VirtioFeature.VIRTIO_F_RING_PACKED)).to.equal(ring === 'packed');
        expect(hasBit(b.features, VirtioFeature.VIRTIO_RING_F_INDIRECT_DESC)).to.equal(true);
        expect(b.config.capacityBytes).to.equal(8 * 1024 * 1024);
        const n = 64;
        await Promise.all(Array.from({ length: n }, (_, i) => b.write(i * 8192, pattern(8192, i), i % queues)));
        await b.flush();
        const got = await Promise.all(Array.from({ length: n }, (_, i) => b.read(i * 8192, 8192, (i + 1) % queues)));
        got.forEach((g, i) => expect(same(g, pattern(8192, i)), `block ${i}`).to.equal(true));
        expect(await b.getId()).to.equal('vhost-user-ref');
        expect(backend!.blk).to.deep.include({ writes: n, reads: n, flushes: 1, errors: 0 });
        if (b.limits.discard === null) await rejects(b.discard({ offset: 0, length: 512 }), 'VHOST_FEATURE_NOT_NEGOTIATED');
        b.close();
        backend!.close();
        expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
      });
    }
  }

  it('a used length beyond the chain (strict, the default): the ring breaks with VHOST_RING_LEN_TOO_LARGE', async () => {
    const b = await open({ faults: [{ name: 'used-len-too-large', ring: 0 }] }, {});
    await rejects(b.write(0, pattern(4096, 1)), 'VHOST_RING_LEN_TOO_LARGE');
    await rejects(b.read(0, 512), 'VHOST_RING_LEN_TOO_LARGE');
  });

  for (const ring of ['split', 'packed'] as const) {
    it(`a used length beyond the chain with strictUsedLen false (${ring}): counted, the request succeeds`, async () => {
      const b = await open({ faults: [{ name: 'used-len-too-large', ring: 0 }] }, { ring, strictUsedLen: false });
      await b.write(0, pattern(4096, 2));
      expect(b.queue(0).counters.usedLenViolations).to.equal(1);
      expect(b.queue(0).vq.usedLenClamped).to.equal(1);
      expect(same(await b.read(0, 4096), pattern(4096, 2))).to.equal(true);
      expect(b.queue(0).counters.usedLenViolations).to.equal(1);
    });
  }

  it('a ring that stops: VHOST_BLK_TIMEOUT in bounded time, never a hang', async () => {
    const b = await open({ faults: [{ name: 'stop-ring', ring: 0 }] }, { timeoutMs: 300 });
    const t0 = Date.now();
    await rejects(b.read(0, 512), 'VHOST_BLK_TIMEOUT');
    expect(Date.now() - t0).to.be.below(3000);
  });

  it('the back-end goes away (no reconnect): requests in flight and new ones fail with VHOST_DISCONNECTED, a disconnect event', async () => {
    const b = await open({ faults: [{ name: 'stop-ring', ring: 0 }] }, { timeoutMs: 10_000 });
    const gone = new Promise<{ code: string }>((r) => b.once('disconnect', r));
    const p = b.read(0, 512).then(() => 'ok', (e: { code: string }) => e.code);
    await new Promise((r) => setTimeout(r, 50));
    backend!.close();
    expect((await gone).code).to.equal('VHOST_DISCONNECTED');
    expect(await p).to.equal('VHOST_DISCONNECTED');
    await rejects(b.write(0, new Uint8Array(512)), 'VHOST_DISCONNECTED');
  });

  it('an id never made available: VHOST_RING_ID_NOT_OUTSTANDING fails what is in flight', async () => {
    const b = await open({ faults: [{ name: 'used-id-not-outstanding', ring: 0 }] }, {});
    await rejects(b.read(0, 512), 'VHOST_RING_ID_NOT_OUTSTANDING');
  });
});
