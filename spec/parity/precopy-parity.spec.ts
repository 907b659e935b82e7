/**
 * QEMU's live migration beside this library's migrate(), on two dpdk-testpmd each
 * (precopy.ts): both migrations complete, each destination back-end is started from
 * exactly the ring positions its source back-end reported, and the messages of the
 * migration differ only as allow-list.ts explains. One small round of what
 * `npm run bench:migrate` measures; 20-33 s on two loaded cores.
 */
import { expect } from 'chai';
import { qemuAvailable, stopAll } from '../../lib/launch/index.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { explain } from './allow-list.js';
import { PRECOPY_PHASES, precopyDiff, recordLibraryMigration, recordQemuMigration, sideBySide, type Cleanup } from './precopy.js';

async function withCleanups<T>(f: (c: Cleanup[]) => Promise<T>): Promise<T> {
  const cleanups: Cleanup[] = [];
  try {
    return await f(cleanups);
  } finally {
    for (const c of cleanups.reverse()) await c();
    await stopAll();
  }
}

describe('parity with QEMU 7.2: live migration between two dpdk-testpmd, QEMU beside migrate() @integration', function () {
  this.timeout(90_000);

  before(function () {
    if (!qemuAvailable()) {
      process.stdout.write('      skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)\n');
      this.skip();
    }
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
  });

  it('both complete; SET_VRING_BASE on each destination = GET_VRING_BASE on its source; the sequences differ only as listed; nothing leaks', async () => {
    const snap = resourceSnapshot();
    const qemu = await withCleanups((c) => recordQemuMigration(c, { qemuSettleMs: 500 }));
    const library = await withCleanups((c) => recordLibraryMigration(c, { library: { warmupMs: 60, roundMs: 30, maxRounds: 3, minRounds: 1, afterMs: 200 } }));

    expect(qemu.result.status).to.equal('completed');
    const v = library.report.verification;
    expect(library.report.verified, `migrate() verification: ${JSON.stringify({ unlogged: library.report.unloggedPages, exactlyOnce: v.exactlyOnce.rule, lost: v.exactlyOnce.lostRanges })}`).to.equal(true);
    expect(library.report.rarp.sent).to.equal(true);

    // Both stopped both rings of the pair at the switch-over and started the destination from there.
    expect(Object.keys(qemu.sourceBases), 'QEMU: GET_VRING_BASE on both rings').to.deep.equal(['0', '1']);
    expect(qemu.destinationBases, 'QEMU: SET_VRING_BASE on the destination = GET_VRING_BASE on the source').to.deep.equal(qemu.sourceBases);
    expect(Object.keys(library.sourceBases), 'library: GET_VRING_BASE on both rings').to.deep.equal(['0', '1']);
    expect(library.destinationBases, 'library: SET_VRING_BASE on the destination = GET_VRING_BASE on the source').to.deep.equal(library.sourceBases);
    expect(Object.values(library.sourceBases), "the report's bases are the back-end's answers").to.deep.equal(library.report.bases);
    // The guest moved frames before the migration: QEMU's TX position is not 0.
    expect(qemu.sourceBases[1], "iPXE's transmit ring was used").to.be.above(0);

    // Both log dirty pages the same way (vhost-user.rst 'Migration').
    for (const [who, r] of [['QEMU', qemu], ['library', library]] as const) {
      const keys = (r.phases['precopy-source'] ?? []).map((i) => i.key).filter((k) => k !== 'GET_STATUS');
      expect(keys.slice(0, 4), `${who} turns logging on`).to.deep.equal(['SET_LOG_BASE fds=1', 'SET_FEATURES LOG_ALL', 'SET_VRING_ADDR[0] log', 'SET_VRING_ADDR[1] log']);
      for (const p of PRECOPY_PHASES) expect(r.phases[p] ?? [], `${who} sent nothing in ${p}`).to.have.length.above(0);
    }

    const unexplained = precopyDiff(qemu, library).filter((d) => !explain(d, 'dpdk-testpmd'));
    expect(
      unexplained.map((d) => `${d.phase}: ${d.kind} ${d.side} ${d.key}`),
      `differences no allow-list entry explains:\n${PRECOPY_PHASES.map((p) => sideBySide(p, qemu, library)).join('\n')}`,
    ).to.deep.equal([]);
    expect(await leakedAfter(snap), 'fds and mappings given back (QEMU, testpmd, proxies, the device all stopped)').to.deep.equal({ fds: 0, maps: 0 });
    process.stdout.write(
      `      QEMU: total ${qemu.result.totalTimeMs} ms, downtime ${qemu.result.downtimeMs} ms, vhost-user gap ${qemu.vhostDowntimeMs} ms; ` +
        `library: total ${library.report.totalMs} ms, downtime ${library.report.downtimeMs} ms, vhost-user gap ${library.vhostDowntimeMs} ms\n`,
    );
  });
});
