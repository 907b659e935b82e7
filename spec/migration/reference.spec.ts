/**
 * migrate() between two reference back-ends in this process (two hosts' worth of
 * back-ends, each with its own guest memory): traffic or I/O runs throughout, and
 * the report's verdicts are checked against what the back-ends did: frames looped,
 * the pages the injected faults leave out of the log, the write after
 * GET_VRING_BASE, the state carried by DEVICE_STATE.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { ReferenceBackend, type Fault } from '../../lib/backend/reference-backend.js';
import type { RingKind } from '../../lib/devices/vhost-device.js';
import { migrate, type MigrateOptions } from '../../lib/migration/migrate.js';
import type { MigrationReport } from '../../lib/migration/report.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

/** Short phases: the checks do not depend on how long traffic runs. */
const QUICK: Partial<MigrateOptions> = { warmupMs: 40, roundMs: 25, maxRounds: 3, minRounds: 2, afterMs: 120 };

describe('migrate() between two reference back-ends', function () {
  this.timeout(30_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  const cleanups: (() => unknown)[] = [];
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  function pair(device: 'net' | 'blk', faults: Fault[] = []): { a: ReferenceBackend; b: ReferenceBackend; from: string; to: string } {
    const t = tempSocketPath('a.sock');
    const image = join(t.dir, 'disk.img');
    if (device === 'blk') writeFileSync(image, new Uint8Array(8 * 1024 * 1024));
    // blk: both serve the same image file, the shared storage of a real migration.
    const opts = device === 'blk' ? { device, blkImage: image } : { device };
    const a = ReferenceBackend.listen(t.path, { ...opts, faults });
    const to = join(t.dir, 'b.sock');
    const b = ReferenceBackend.listen(to, opts);
    cleanups.push(() => t.cleanup(), () => a.close(), () => b.close());
    return { a, b, from: t.path, to };
  }

  function expectVerified(r: MigrationReport): void {
    const v = r.verification;
    expect({ unlogged: r.unloggedPages, foreign: v.precision.loggedForeign, quiet: v.quiet.changed, once: v.exactlyOnce.ok }, JSON.stringify(v.exactlyOnce)).to.deep.equal({ unlogged: [], foreign: [], quiet: [], once: true });
    expect(v.completeness.differingAfterCopy).to.equal(0);
    expect(r.verified).to.equal(true);
  }

  for (const ring of ['split', 'packed'] as RingKind[]) {
    it(`net, ${ring}: verified; every frame exactly once; RARP from B; counters carried by DEVICE_STATE`, async () => {
      const { a, b, from, to } = pair('net');
      const r = await migrate({ from, to, device: 'net', ring, ...QUICK });
      process.stdout.write(`      ${ring}: ${r.rounds.length} rounds (dirty ${r.rounds.map((x) => x.dirtyPages).join(' ')}), downtime ${r.downtimeMs} ms, ${r.verification.exactlyOnce.completed} frames\n`);
      expectVerified(r);
      expect(r.rounds[0]!.copiedPages).to.equal(r.memoryBytes / 4096);
      expect(r.rounds.at(-1)!.switchover).to.equal(true);
      expect(r.rounds.slice(1).every((x) => x.loggedPages > 0)).to.equal(true);
      // The back-ends looped every frame between them; the destination's counter went on from the source's.
      const once = r.verification.exactlyOnce;
      expect(once.completed).to.equal(once.submitted);
      // The stream: its header, the MAC slot and the seven loopback counters (f64 each).
      expect(r.deviceState).to.deep.equal({ transferred: true, bytes: 20 + 8 + 7 * 8 });
      expect(b.net.frames).to.equal(once.submitted);
      expect(a.net.frames).to.be.below(b.net.frames);
      expect(r.rarp).to.deep.equal({ sent: true, framesSeen: 1 });
    });
  }

  it('blk, split, both on one image: verified; every request once; the last write of every block read back on B', async () => {
    const { a, b, from, to } = pair('blk');
    const r = await migrate({ from, to, device: 'blk', ...QUICK });
    expectVerified(r);
    expect(r.verification.exactlyOnce.submitted).to.be.above(100);
    expect(r.inFlight.takenNotDelivered).to.equal(0);
    expect(b.blk.writes).to.be.above(a.blk.writes); // carried over, then counted on
    expect(r.deviceState.transferred).to.equal(true);
  });

  it('packed rings with log_guest_addr = device event area (QEMU 7.2): the descriptor ring pages are named unlogged', async () => {
    const { from, to } = pair('net');
    const r = await migrate({ from, to, device: 'net', ring: 'packed', packedLogAddr: 'qemu', ...QUICK });
    expect(r.verified).to.equal(false);
    const names = r.verification.completeness.unlogged.flatMap((f) => f.areas).join('\n');
    expect(names).to.match(/descriptor ring: descriptor \d+ \(used\)/);
    expect(r.verification.exactlyOnce.ok).to.equal(true); // the repair kept the device working
  });

  const faultCases: { fault: Fault['name']; check: (r: MigrationReport) => void }[] = [
    {
      fault: 'unlogged-used',
      check: (r) => {
        expect(r.verification.completeness.ok).to.equal(false);
        const areas = r.verification.completeness.unlogged.flatMap((f) => f.areas);
        expect(areas).to.include.members(['ring 0 (receiveq 0) used ring', 'ring 1 (transmitq 0) used ring']);
      },
    },
    {
      fault: 'unlogged-write',
      check: (r) => {
        expect(r.verification.completeness.ok).to.equal(false);
        const areas = r.verification.completeness.unlogged.flatMap((f) => f.areas);
        expect(areas.length).to.be.above(0);
        expect(areas.every((x) => /^queue pair 0: RX buffer \d+$/.test(x)), areas.join(', ')).to.equal(true);
      },
    },
    {
      fault: 'write-after-stop',
      check: (r) => {
        expect(r.verification.completeness.ok).to.equal(true);
        expect(r.verification.quiet.ok).to.equal(false);
        expect(r.verification.quiet.changed.flatMap((f) => f.areas)).to.include('ring 0 (receiveq 0) used ring');
      },
    },
  ];
  for (const { fault, check } of faultCases) {
    it(`a source back-end with fault ${fault} fails the verification, naming the pages`, async () => {
      const { from, to } = pair('net', [{ name: fault, repeat: true }]);
      const r = await migrate({ from, to, device: 'net', ...QUICK });
      expect(r.verified).to.equal(false);
      check(r);
      expect(r.unloggedPages).to.deep.equal(r.verification.completeness.unlogged.map((f) => f.page));
    });
  }
});
