/**
 * The hostile offload header checks (lib/conformance/checks/offload.ts) against
 * the reference back-end: the strict one drops every such frame, counts it and
 * goes on serving (all pass); the faulty one (`netCheckOffloads: false`), which
 * acts on offload headers as they come, fails every check with a finding that
 * says what came back.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { allChecks, runConformance } from '../../lib/conformance/index.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const OFFLOAD_IDS = allChecks.filter((c) => c.id.startsWith('offload.')).map((c) => c.id);

async function run(strict: boolean) {
  const tmp = tempSocketPath();
  const backend = ReferenceBackend.listen(tmp.path, { device: 'net', netCheckOffloads: strict });
  try {
    const report = await runConformance({ socket: tmp.path, device: 'net', backendPid: process.pid, only: 'offload' });
    return { report, stats: { ...backend.net } };
  } finally {
    backend.close();
    tmp.cleanup();
  }
}

describe('offload conformance checks against the reference back-end', function () {
  this.timeout(30_000);

  it('seven checks, each citing virtio 1.2 Packet Transmission', () => {
    expect(OFFLOAD_IDS).to.have.length(7);
    for (const c of allChecks.filter((x) => x.id.startsWith('offload.'))) expect(c.rule).to.match(/^virtio 1\.2, 'Packet Transmission'/);
  });

  it('strict: every hostile frame is dropped and counted, the valid frame after it comes back', async () => {
    const { report, stats } = await run(true);
    expect(report.checks.map((c) => [c.id, c.status])).to.deep.equal(OFFLOAD_IDS.map((id) => [id, 'pass']));
    expect(stats.offloadDrops).to.equal(OFFLOAD_IDS.length);
    expect(stats.frames).to.equal(OFFLOAD_IDS.length);
  });

  it('faulty (acts on headers unchecked): every check fails, saying what came back', async () => {
    const { report, stats } = await run(false);
    expect(report.checks.map((c) => c.status)).to.deep.equal(OFFLOAD_IDS.map(() => 'fail'));
    const by = Object.fromEntries(report.checks.map((c) => [c.id, c.detail]));
    expect(by['offload.csum-start-beyond-frame']).to.match(/delivered the frame unchanged \(its checksum never computed\)/);
    expect(by['offload.csum-headers-cut']).to.match(/2 byte\(s\) changed at 34, 35, corrupted/);
    expect(by['offload.gso-size-zero']).to.match(/changed at 50, 51, its checksums now valid/);
    for (const c of report.checks) expect(c.evidence.length, c.id).to.be.above(0);
    expect(stats.offloadDrops).to.equal(0);
  });
});
