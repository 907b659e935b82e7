/**
 * The conformance suite against the real back-ends this project supports,
 * started by the suite itself (and restarted after a crash). What a real
 * back-end does differently from the spec is a finding, reported, not a test
 * failure: these tests assert that every applicable check ran and ended in a
 * reasoned pass, fail or skip, that the report renders in every format, and
 * that no back-end process is left behind. Each run's summary is printed.
 */
import { expect } from 'chai';
import { allChecks, appliesTo, formatJson, formatJunit, formatText, runConformance, type ConformanceReport } from '../../lib/conformance/index.js';
import { liveBackends, startQemuStorageDaemon, startTestpmd } from '../../lib/launch/index.js';
import { skipWithout } from '../helpers/backends.js';

function expectComplete(report: ConformanceReport, device: 'net' | 'blk'): void {
  expect(report.checks.map((c) => c.id)).to.deep.equal(allChecks.filter((c) => appliesTo(c, device)).map((c) => c.id));
  for (const c of report.checks) {
    expect(c.detail === '' && c.status !== 'pass', `${c.id} ${c.status} without a reason`).to.equal(false);
    // A bug in a check would show as an internal error, not as a finding about the back-end.
    expect(c.detail, c.id).not.to.match(/internal error in the check/);
    if (c.status === 'fail') expect(c.evidence.length, `${c.id} has evidence`).to.be.above(0);
  }
  const { pass, fail, skip } = report.summary;
  expect(pass + fail + skip).to.equal(report.checks.length);
  const json = JSON.parse(formatJson(report)) as { checks: unknown[]; summary: unknown };
  expect(json.checks).to.have.length(report.checks.length);
  expect(json.summary).to.deep.equal(report.summary);
  expect(formatJunit(report).match(/<testcase /g)).to.have.length(report.checks.length);
  expect(formatText(report)).to.contain(`${pass} passed, ${fail} failed, ${skip} skipped`);
  expect(liveBackends()).to.deep.equal([]);
  const failed = report.checks.filter((c) => c.status === 'fail').map((c) => c.id);
  process.stdout.write(`      ${report.backend.name}: ${pass} pass, ${fail} fail, ${skip} skip, ${report.backend.crashes} crash(es)${failed.length ? `; findings: ${failed.join(', ')}` : ''}\n`);
}

describe('conformance suite against real back-ends @integration', function () {
  this.timeout(180_000);
  // The DPDK data-path checks move real traffic on a 2-core machine; one retry (printed
  // by the reporter with the first attempt's message) keeps a load spike from failing CI.
  this.retries(1);

  it('dpdk-testpmd (vhost PMD, io forwarding): every net check runs and reports', async function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    const report = await runConformance({ spawn: () => startTestpmd({ forwardMode: 'io' }), device: 'net', backendName: 'dpdk-testpmd' });
    expectComplete(report, 'net');
    // Facts of DPDK 22.11 that hold whatever else it does: it forwards, logs dirty pages, answers RARP.
    for (const id of ['rings.vring-base-after-traffic', 'log.dirty-pages', 'rarp.send-rarp']) {
      expect(report.checks.find((c) => c.id === id)!.status, id).to.equal('pass');
    }
  });

  it('qemu-storage-daemon (vhost-user-blk): every blk check runs and reports', async function () {
    skipWithout(this, 'qemu-storage-daemon', 'qemu-system-common');
    const report = await runConformance({ spawn: () => startQemuStorageDaemon({ imageSize: 16 << 20 }), device: 'blk', backendName: 'qemu-storage-daemon' });
    expectComplete(report, 'blk');
    for (const id of ['rings.vring-base-after-traffic', 'memory.replace-mem-table', 'log.dirty-pages']) {
      expect(report.checks.find((c) => c.id === id)!.status, id).to.equal('pass');
    }
  });
});
