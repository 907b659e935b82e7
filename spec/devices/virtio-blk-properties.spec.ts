/**
 * Property test: random mixes of read, write, flush, discard and write-zeroes,
 * several in flight at once on several queues, against a model of the disk.
 * Requests in flight together never overlap a write-like request (the device
 * may run them in any order); reads must return what the model holds. After a
 * discard the bytes are unknown until written again (virtio 1.2 §5.2.6 leaves
 * their contents to the device); write-zeroes must read back as zeroes.
 *
 * Runs on the reference back-end (in-process; split and packed, 2 queues; it
 * has no DISCARD/WRITE_ZEROES, so those are left out there) and on
 * qemu-storage-daemon (split only, 2 queues, discard=unmap), and on DPDK's
 * vhost_blk example (split, 1 queue, read and write only, lenient used lengths).
 * fast-check prints the seed and the shrunk counterexample on failure.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import fc from 'fast-check';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import { startQemuStorageDaemon, stopAll } from '../../lib/launch/index.js';
import { findExecutable } from '../../lib/launch/backend-process.js';
import { buildVhostBlk, startVhostBlk, VHOST_BLK_SOURCES } from '../../lib/launch/dpdk-vhost-blk.js';

const RUNS = Number(process.env.PROP_RUNS ?? 100);
const BLOCK = 512;
/** The window the operations touch: 2048 sectors (1 MiB). */
const BLOCKS = 2048;
const MAX_BLOCKS = 64;

type Kind = 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';
interface Op {
  kind: Kind;
  block: number;
  blocks: number;
  queue: number;
  seed: number;
  unmap: boolean;
}

function opArb(kinds: readonly Kind[], queues: number): fc.Arbitrary<Op> {
  return fc
    .record({
      kind: fc.constantFrom(...kinds),
      block: fc.integer({ min: 0, max: BLOCKS - 1 }),
      blocks: fc.integer({ min: 1, max: MAX_BLOCKS }),
      queue: fc.integer({ min: 0, max: queues - 1 }),
      seed: fc.integer({ min: 0, max: 255 }),
      unmap: fc.boolean(),
    })
    .map((o) => ({ ...o, blocks: Math.min(o.blocks, BLOCKS - o.block) }));
}

function fill(n: number, seed: number, at: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = ((at + i) * 7 + seed * 31 + ((at + i) >> 9)) & 0xff;
  return b;
}

const writes = (o: Op) => o.kind === 'write' || o.kind === 'discard' || o.kind === 'writeZeroes';
const overlap = (a: Op, b: Op) => a.kind !== 'flush' && b.kind !== 'flush' && a.block < b.block + b.blocks && b.block < a.block + a.blocks;

/** Consecutive ops grouped so that no two in a group conflict (two reads may overlap). */
function rounds(ops: readonly Op[]): Op[][] {
  const out: Op[][] = [];
  let cur: Op[] = [];
  for (const o of ops) {
    if (cur.some((c) => overlap(c, o) && (writes(c) || writes(o)))) {
      out.push(cur);
      cur = [];
    }
    cur.push(o);
  }
  if (cur.length) out.push(cur);
  return out;
}

async function runOps(blk: VirtioBlk, ops: readonly Op[], lenient = false): Promise<void> {
  const bytes = BLOCKS * BLOCK;
  const model = await blk.read(0, bytes);
  /** 1 where the model knows the byte. */
  const known = new Uint8Array(bytes).fill(1);
  for (const round of rounds(ops)) {
    await Promise.all(
      round.map(async (o) => {
        const at = o.block * BLOCK;
        const len = o.blocks * BLOCK;
        switch (o.kind) {
          case 'read': {
            const got = await blk.read(at, len, o.queue);
            for (let i = 0; i < len; i++) {
              if (known[at + i] && got[i] !== model[at + i]) expect.fail(`byte ${at + i}: read ${got[i]}, the model holds ${model[at + i]} (${JSON.stringify(o)})`);
            }
            return;
          }
          case 'write':
            return blk.write(at, fill(len, o.seed, at), o.queue);
          case 'flush':
            return blk.flush(o.queue);
          case 'discard':
            return blk.discard({ offset: at, length: len }, o.queue);
          case 'writeZeroes':
            return blk.writeZeroes({ offset: at, length: len }, { unmap: o.unmap, queue: o.queue });
        }
      }),
    );
    for (const o of round) {
      const at = o.block * BLOCK;
      const len = o.blocks * BLOCK;
      if (o.kind === 'write') {
        model.set(fill(len, o.seed, at), at);
        known.fill(1, at, at + len);
      } else if (o.kind === 'writeZeroes') {
        model.fill(0, at, at + len);
        known.fill(1, at, at + len);
      } else if (o.kind === 'discard') {
        known.fill(0, at, at + len);
      }
    }
  }
  const t = blk.totals();
  expect([t.failed, lenient ? 0 : t.usedLenViolations, t.timeouts]).to.deep.equal([0, 0, 0]);
}

describe('VirtioBlk property: random request mixes against a disk model', function () {
  this.timeout(180_000);

  for (const ring of ['split', 'packed'] as const) {
    it(`reference back-end, ${ring} rings, 2 queues: read, write, flush`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'vhost-blk-prop-'));
      const backend = ReferenceBackend.listen(path.join(dir, 'ref.sock'), { device: 'blk', queueNum: 2, blkSize: 4 * 1024 * 1024 });
      const blk = await VirtioBlk.open(backend.path, { queues: 2, ring, queueSize: 64 });
      try {
        const kinds: Kind[] = ['read', 'write', 'flush'];
        if (blk.limits.discard) kinds.push('discard');
        if (blk.limits.writeZeroes) kinds.push('writeZeroes');
        await fc.assert(fc.asyncProperty(fc.array(opArb(kinds, 2), { minLength: 1, maxLength: 40 }), (ops) => runOps(blk, ops)), { numRuns: RUNS });
        expect(backend.blk.errors).to.equal(0);
        expect(backend.blk.writes).to.be.greaterThan(0);
      } finally {
        blk.close();
        backend.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("DPDK's vhost_blk example @integration, split rings, strictUsedLen false (its used lengths are wrong): read, write", async function () {
    if (!existsSync(VHOST_BLK_SOURCES) || !findExecutable('make') || !findExecutable('pkg-config')) {
      process.stdout.write(`      skipped: DPDK's vhost_blk sources (${VHOST_BLK_SOURCES}, dpdk-doc), make or pkg-config are missing\n`);
      this.skip();
    }
    const proc = await startVhostBlk({ binary: await buildVhostBlk() });
    const blk = await VirtioBlk.open(proc.socketPath, { strictUsedLen: false });
    try {
      // It has one queue and no FLUSH, DISCARD or WRITE_ZEROES.
      await fc.assert(fc.asyncProperty(fc.array(opArb(['read', 'write'], 1), { minLength: 1, maxLength: 40 }), (ops) => runOps(blk, ops, true)), { numRuns: Math.ceil(RUNS / 4) });
      expect(blk.totals().usedLenViolations).to.be.greaterThan(0);
    } finally {
      blk.close();
      await proc.stop();
    }
  });

  it('qemu-storage-daemon @integration, split rings, 2 queues: read, write, flush, discard, write-zeroes', async function () {
    if (!findExecutable('qemu-storage-daemon')) {
      process.stdout.write('      skipped: qemu-storage-daemon is not installed (apt-get install qemu-system-common)\n');
      this.skip();
    }
    const qsd = await startQemuStorageDaemon({ numQueues: 2, imageSize: 4 * 1024 * 1024, discard: 'unmap' });
    const blk = await VirtioBlk.open(qsd.socketPath, { queues: 2 });
    try {
      const kinds: Kind[] = ['read', 'write', 'flush', 'discard', 'writeZeroes'];
      await fc.assert(fc.asyncProperty(fc.array(opArb(kinds, 2), { minLength: 1, maxLength: 40 }), (ops) => runOps(blk, ops)), { numRuns: RUNS });
    } finally {
      blk.close();
      await stopAll();
    }
  });
});
