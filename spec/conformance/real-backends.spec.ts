/**
 * The conformance suite against the real back-ends this project supports (and the
 * reference back-end as a process), started by the suite itself and always stopped.
 * Every check must end as spec/conformance/expected/ pins it for the back-end's
 * version: a check whose status, crash or finding changed fails the test with a
 * list of what changed (a new back-end version without pinned results is skipped,
 * saying so). The report must also be complete and render in every format, and no
 * back-end process may be left behind.
 */
import { expect } from 'chai';
import { allChecks, appliesTo, formatJson, formatJunit, formatText, runConformance, type ConformanceReport } from '../../lib/conformance/index.js';
import { liveBackends } from '../../lib/launch/index.js';
import { PINNED_BACKENDS } from '../../scripts/conformance/backends.js';
import { differences, expectedFor, loadExpected } from '../../scripts/conformance/expected.js';

function expectComplete(report: ConformanceReport, device: 'net' | 'blk' | 'fs'): void {
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
  expect(report.backend.crashes).to.equal(report.checks.filter((c) => c.crash !== undefined).length);
}

describe('conformance suite against real back-ends, pinned per version @integration', function () {
  this.timeout(300_000);
  // The DPDK data-path checks move real traffic on a 2-core machine; one retry (printed
  // by the reporter with the first attempt's message) keeps a load spike from failing CI.
  this.retries(1);
  const pinned = loadExpected();

  afterEach(() => expect(liveBackends(), 'back-end processes left running').to.deep.equal([]));

  for (const b of PINNED_BACKENDS) {
    it(`${b.id} (${b.device}): every check ends as spec/conformance/expected pins it`, async function () {
      if (!b.installed()) {
        process.stdout.write(`      skipped: ${b.program} is not installed (apt-get install ${b.debianPackage})\n`);
        this.skip();
      }
      const version = b.versioned ? await b.version() : null;
      const pick = expectedFor(pinned, b.id, b.versioned, version);
      if ('reason' in pick) {
        process.stdout.write(`      skipped: ${pick.reason}\n`);
        this.skip();
      }
      const report = await runConformance({ spawn: () => b.start(), device: b.device, backendName: b.id });
      expectComplete(report, b.device);
      const changed = differences(report, pick.expected);
      const { pass, fail, skip } = report.summary;
      process.stdout.write(`      ${b.id} ${version ?? ''}: ${pass} pass, ${fail} fail, ${skip} skip, ${report.backend.crashes} crash(es)${report.backend.oneShot ? ', one-shot' : ''} in ${(report.ms / 1000).toFixed(1)} s\n`);
      if (changed.length) {
        expect.fail(
          `${changed.length} check(s) of ${b.id} ${version ?? ''} differ from spec/conformance/expected/${pick.file}:\n  ${changed.join('\n  ')}\n` +
            `(if the change is intended: npm run conformance:record -- ${b.id}, then npm run readme:conformance)`,
        );
      }
    });
  }

  it('virtiofsd is detected as one-shot: restarted for each check, its clean exits are not crashes', async function () {
    const virtiofsd = PINNED_BACKENDS.find((b) => b.id === 'virtiofsd')!;
    if (!virtiofsd.installed()) {
      process.stdout.write(`      skipped: virtiofsd is not installed (apt-get install qemu-system-common)\n`);
      this.skip();
    }
    // The checks that need a second front-end: each passes only if the runner started a new daemon.
    const only = 'reconnect.mid-handshake,negative.request-code-0,negative.log-base-overflow,handshake.version';
    const report = await runConformance({ spawn: () => virtiofsd.start(), device: 'fs', only });
    expect(report.backend.oneShot).to.equal(true);
    expect(report.checks.map((c) => [c.id, c.status, c.crash ?? null])).to.deep.equal([
      ['handshake.version-1', 'pass', null],
      ['reconnect.mid-handshake', 'pass', null],
      ['negative.request-code-0', 'pass', null],
      ['negative.log-base-overflow', 'pass', null],
    ]);
    expect(report.backend.crashes).to.equal(0);
    // One daemon per front-end: the detection probe's, one per check, one more per check that reconnects.
    expect(report.backend.restarts).to.be.at.least(report.checks.length + 3);
  });
});
