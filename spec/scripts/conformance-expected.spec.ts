/**
 * The pinned conformance results (spec/conformance/expected/) as data: every file
 * well-formed and complete for its device, the comparison with a live report, the
 * recorder, and the README section, which must be exactly what the data renders
 * (npm run readme:conformance writes it).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { allChecks, appliesTo, type CheckResult, type ConformanceReport } from '../../lib/conformance/index.js';
import { PINNED_BACKENDS, versionSeries } from '../../scripts/conformance/backends.js';
import {
  differences,
  expectedCheck,
  expectedFileName,
  expectedFor,
  loadExpected,
  readmeSection,
  recordExpected,
  renderReadmeSection,
  replaceReadmeSection,
  README_BEGIN,
  README_END,
  type ExpectedResults,
} from '../../scripts/conformance/expected.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

function result(id: string, status: CheckResult['status'], detail = '', crash?: string): CheckResult {
  return { id, rule: 'r', title: 't', status, detail, evidence: [], ms: 1, ...(crash ? { crash } : {}) };
}

function report(checks: CheckResult[]): ConformanceReport {
  const summary = { pass: 0, fail: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  return { backend: { name: 'x', socket: '', device: 'net', spawned: true, oneShot: false, crashes: 0, restarts: 0 }, checks, summary, ms: 1 };
}

const pinned: ExpectedResults = {
  backend: 'dpdk-testpmd',
  version: '22.11',
  recordedWith: '22.11.11',
  device: 'net',
  checks: {
    'a.pass': 'pass',
    'a.skip': 'skip',
    'a.acked': { status: 'fail', finding: 'acked 0', detail: 'accepted: acknowledged with 0' },
    'a.crash': { status: 'fail', crash: 'SIGSEGV', finding: 'killed' },
    'a.maybe': { status: 'fail', mayCrash: 'SIGABRT', finding: 'acked 0, sometimes aborts', detail: 'accepted: acknowledged with 0' },
  },
};
const asPinned = () => [
  result('a.pass', 'pass'),
  result('a.skip', 'skip', 'not offered'),
  result('a.acked', 'fail', 'accepted: acknowledged with 0'),
  result('a.crash', 'fail', 'the back-end (pid 1) was killed by SIGSEGV during the check', 'SIGSEGV'),
  result('a.maybe', 'fail', 'accepted: acknowledged with 0'),
];

describe('pinned conformance results (spec/conformance/expected)', () => {
  const all = loadExpected();

  it('holds one well-formed file per pinned back-end, each complete for its device', () => {
    for (const b of PINNED_BACKENDS) expect([...all.values()].some((e) => e.backend === b.id), `results pinned for ${b.id}`).to.equal(true);
    for (const [file, e] of all) {
      const b = PINNED_BACKENDS.find((p) => p.id === e.backend);
      expect(b, `${file}: a known back-end`).not.to.equal(undefined);
      expect(e.device, file).to.equal(b!.device);
      expect(file).to.equal(expectedFileName(e.backend, e.version));
      if (b!.versioned) expect(e.version, file).to.equal(versionSeries(e.recordedWith ?? ''));
      else expect([e.version, e.recordedWith], file).to.deep.equal([null, null]);
      // Every check that applies, in the suite's order, and nothing else.
      expect(Object.keys(e.checks), file).to.deep.equal(allChecks.filter((c) => appliesTo(c, b!.device)).map((c) => c.id));
      for (const [id, raw] of Object.entries(e.checks)) {
        const x = expectedCheck(raw);
        expect(['pass', 'fail', 'skip'], `${file} ${id}`).to.include(x.status);
        if (x.status === 'fail') expect(x.finding, `${file} ${id}: a fail says what was found`).to.be.a('string').and.not.equal('');
        else expect(raw, `${file} ${id}: pass and skip are plain strings`).to.be.a('string');
        expect(x.crash !== undefined && x.mayCrash !== undefined, `${file} ${id}: crash or mayCrash, not both`).to.equal(false);
        if (x.detail !== undefined) expect(() => new RegExp(x.detail!), `${file} ${id}`).not.to.throw();
      }
    }
  });

  it('the reference back-end passes everything it offers', () => {
    for (const id of ['reference-net', 'reference-blk']) {
      const e = all.get(`${id}.json`)!;
      expect(Object.values(e.checks).filter((v) => expectedCheck(v).status === 'fail'), id).to.deep.equal([]);
    }
  });

  it('differences: none for a report as pinned; one line per changed check, with its detail', () => {
    expect(differences(report(asPinned()), pinned)).to.deep.equal([]);
    const changed = asPinned();
    changed[0] = result('a.pass', 'fail', 'accepted: acknowledged with 0');
    changed[2] = result('a.acked', 'fail', 'neither a NAK nor a close within 2000 ms');
    changed[3] = result('a.crash', 'fail', 'refused: NAK 1');
    changed[4] = result('a.maybe', 'fail', 'the back-end (pid 2) was killed by SIGABRT during the check (accepted: acknowledged with 0)', 'SIGABRT');
    changed.splice(1, 1, result('a.new', 'pass', 'fine'));
    expect(differences(report(changed), pinned)).to.deep.equal([
      'a.pass: expected pass, got fail: accepted: acknowledged with 0',
      'a.new: new check, nothing pinned; got pass: fine',
      'a.acked: fail as expected, but the detail does not match /accepted: acknowledged with 0/: neither a NAK nor a close within 2000 ms',
      'a.crash: expected a crash (SIGSEGV), got none: refused: NAK 1',
      'a.skip: expected skip, not run (the check is gone or no longer applies)',
    ]);
    // mayCrash admits that one crash only.
    const other = asPinned();
    other[4] = result('a.maybe', 'fail', 'the back-end (pid 2) was killed by SIGSEGV during the check (accepted: acknowledged with 0)', 'SIGSEGV');
    expect(differences(report(other), pinned)).to.deep.equal([
      'a.maybe: expected no crash, got a crash (SIGSEGV): the back-end (pid 2) was killed by SIGSEGV during the check (accepted: acknowledged with 0)',
    ]);
  });

  it('recording keeps hand-written findings of unchanged checks and drafts new ones', () => {
    const run = asPinned();
    run[0] = result('a.pass', 'fail', 'accepted: acknowledged with 0');
    const recorded = recordExpected(report(run), 'dpdk-testpmd', '22.11.12', pinned);
    expect(recorded).to.deep.equal({
      backend: 'dpdk-testpmd',
      version: '22.11',
      recordedWith: '22.11.12',
      device: 'net',
      checks: {
        'a.pass': { status: 'fail', finding: 'acked 0', detail: 'accepted: acknowledged with 0' },
        'a.skip': 'skip',
        'a.acked': pinned.checks['a.acked'],
        'a.crash': pinned.checks['a.crash'],
        'a.maybe': pinned.checks['a.maybe'],
      },
    });
    expect(differences(report(run), recorded)).to.deep.equal([]);
  });

  it('a version with nothing pinned is a reason to skip that names what is pinned', () => {
    const pick = expectedFor(all, 'dpdk-testpmd', true, '23.11.1');
    expect(pick).to.have.property('reason').that.matches(/^dpdk-testpmd 23\.11\.1: no pinned results \(spec\/conformance\/expected\/dpdk-testpmd-23\.11\.json; pinned: 22\.11\)/);
    expect(expectedFor(all, 'dpdk-testpmd', true, null)).to.have.property('reason').that.contains('could not be read');
    expect(expectedFor(all, 'dpdk-testpmd', true, '22.11.3')).to.have.property('file', 'dpdk-testpmd-22.11.json');
    expect(expectedFor(all, 'reference-net', false, null)).to.have.property('file', 'reference-net.json');
  });

  it("README.md's conformance results are what the data renders (npm run readme:conformance)", () => {
    const readme = readFileSync(README, 'utf8');
    const section = renderReadmeSection(all);
    expect(readmeSection(readme), 'run npm run readme:conformance').to.equal(section);
    expect(replaceReadmeSection(readme, section)).to.equal(readme);
    // The table's figures are the data's.
    const dpdk = all.get('dpdk-testpmd-22.11.json')!;
    const fails = Object.values(dpdk.checks).filter((v) => expectedCheck(v).status === 'fail').length;
    expect(section).to.match(new RegExp(`\\| dpdk-testpmd 22\\.11 [^|]*\\| net \\| \\d+ \\| ${fails} \\|`));
    expect(section.startsWith(README_BEGIN) && section.endsWith(README_END)).to.equal(true);
  });
});
