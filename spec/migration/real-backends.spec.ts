/**
 * migrate() between two real back-ends on this host, started by the tests:
 * dpdk-testpmd (io forwarding, with retry: a burst is retried rather than
 * dropped while a vhost-user request holds the ring) for net, split and packed rings
 * with both log_guest_addr choices for packed; qemu-storage-daemon serving one
 * image file (locking=off: shared storage, as a real migration has) for blk.
 * One pair of testpmd serves every net run, migrating back and forth.
 */
import { expect } from 'chai';
import type { RingKind } from '../../lib/devices/vhost-device.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { startQemuStorageDaemon, type QemuStorageDaemonBackend } from '../../lib/launch/qemu-storage-daemon.js';
import { migrate, type MigrateOptions } from '../../lib/migration/migrate.js';
import type { MigrationReport } from '../../lib/migration/report.js';
import type { PackedLogAddr } from '../../lib/devices/vring-setup.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';

const QUICK: Partial<MigrateOptions> = { warmupMs: 60, roundMs: 30, maxRounds: 3, minRounds: 2, afterMs: 200 };

function line(r: MigrationReport, what: string): string {
  const v = r.verification;
  return `      ${what}: ${r.rounds.length} rounds (dirty ${r.rounds.map((x) => x.dirtyPages).join(' ')}), downtime ${r.downtimeMs} ms, total ${r.totalMs} ms; unlogged ${JSON.stringify(v.completeness.unlogged.map((f) => `${f.page}: ${f.areas.join('; ')}`))}; foreign logged ${JSON.stringify(v.precision.loggedForeign.map((f) => `${f.page}: ${f.areas.join('; ')}`))}; frames ${v.exactlyOnce.completed}/${v.exactlyOnce.submitted}, lost ${JSON.stringify(v.exactlyOnce.lostRanges)} marks ${JSON.stringify(v.exactlyOnce.marks)}\n`;
}

describe('migrate() between two dpdk-testpmd @integration', function () {
  this.timeout(60_000);
  let a: TestpmdBackend | null = null;
  let b: TestpmdBackend | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;
  let from = '';
  let to = '';

  before(async function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    const start = async () => {
      const t = await startTestpmd({ forwardMode: 'io', interactive: true });
      await t.command('set fwd io retry');
      await t.startForwarding();
      return t;
    };
    a = await start();
    b = await start();
    [from, to] = [a.socketPath, b.socketPath];
  });
  // The back-ends run across the tests; each migration must give back what it took.
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
  });

  async function run(ring: RingKind, packedLogAddr: PackedLogAddr): Promise<MigrationReport> {
    const r = await migrate({ from, to, device: 'net', ring, packedLogAddr, ...QUICK });
    [from, to] = [to, from]; // the next run migrates back
    process.stdout.write(line(r, `${ring}, log at ${packedLogAddr}`));
    expect(r.verification.quiet.ok).to.equal(true);
    expect(r.deviceState.reason).to.match(/does not offer DEVICE_STATE/);
    expect(r.rarp.sent).to.equal(true);
    return r;
  }

  it('split: verified (no unlogged page, nothing logged where the device writes nothing, every frame exactly once, RARP seen)', async () => {
    const r = await run('split', 'descriptor-ring');
    expect(r.unloggedPages).to.deep.equal([]);
    expect(r.verification.precision.loggedForeign).to.deep.equal([]);
    expect(r.verification.exactlyOnce.ok, JSON.stringify(r.verification.exactlyOnce)).to.equal(true);
    expect(r.verified).to.equal(true);
    expect(r.rarp.framesSeen).to.be.above(0);
  });

  it('packed, log_guest_addr = descriptor ring: verified, every page DPDK writes is logged', async () => {
    const r = await run('packed', 'descriptor-ring');
    expect(r.unloggedPages).to.deep.equal([]);
    expect(r.verification.precision.loggedForeign).to.deep.equal([]);
    expect(r.verification.exactlyOnce.ok, JSON.stringify(r.verification.exactlyOnce)).to.equal(true);
    expect(r.verified).to.equal(true);
  });

  it('packed, log_guest_addr = device event area (as QEMU 7.2): pages the device never writes are logged, and what is unlogged is descriptor-ring pages', async () => {
    const r = await run('packed', 'qemu');
    expect(r.verified).to.equal(false);
    // DPDK logs a packed completion at log_guest_addr + 16 * slot: from the event area that lands on
    // pages the device never writes (TX slots) every time. Whether the descriptor ring's own page
    // is also missed depends on where the misplaced logs of the other ring land: usually it is
    // (one run in several here had those logs cover it), so it is checked only when reported.
    expect(r.verification.precision.loggedForeign.length).to.be.above(0);
    for (const f of r.verification.completeness.unlogged) expect(f.areas.join('\n')).to.match(/descriptor ring: descriptor \d+ \(used\)/);
  });
});

describe('migrate() between two qemu-storage-daemon on one image @integration', function () {
  this.timeout(60_000);
  const started: QemuStorageDaemonBackend[] = [];
  before(function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
  });
  after(async () => {
    for (const q of started) await q.stop();
  });

  it('blk, split: verified; every request once; every block read back on the destination', async () => {
    const a = await startQemuStorageDaemon({ locking: false, imageSize: 16 * 1024 * 1024 });
    started.push(a);
    const b = await startQemuStorageDaemon({ locking: false, imagePath: a.imagePath });
    started.push(b);
    const snap = resourceSnapshot();
    const r = await migrate({ from: a.socketPath, to: b.socketPath, device: 'blk', ...QUICK }).catch((e: unknown) => {
      // A back-end that hung up: say which one, how it ended and what it printed.
      const said = [a, b].map((q, i) => `qemu-storage-daemon ${'AB'[i]} (pid ${q.pid}, ${q.running ? 'running' : 'exited'}):\n${q.output()}`).join('\n');
      throw new Error(`${(e as Error).message}\n${said}`, { cause: e });
    });
    process.stdout.write(line(r, 'blk split'));
    expect(r.unloggedPages).to.deep.equal([]);
    expect(r.verification.precision.loggedForeign).to.deep.equal([]);
    expect(r.verification.quiet.ok).to.equal(true);
    expect(r.verification.exactlyOnce.ok, r.verification.exactlyOnce.rule).to.equal(true);
    expect(r.verified).to.equal(true);
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });
});
