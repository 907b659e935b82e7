/**
 * `vhost-user migrate` end to end, as a user runs it: a child process migrates a
 * device between two reference back-ends (in this process), prints the report
 * (--json), draws it (--svg), reports progress on stderr, and exits 0 only when
 * every verification holds.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { ReferenceBackend, type Fault } from '../../lib/backend/reference-backend.js';
import type { MigrationReport } from '../../lib/migration/report.js';
import { cli } from '../helpers/cli.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

describe('vhost-user migrate (CLI)', function () {
  this.timeout(30_000);
  const cleanups: (() => unknown)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  function backends(faults: Fault[] = []): { from: string; to: string; dir: string } {
    const t = tempSocketPath('a.sock');
    const to = join(t.dir, 'b.sock');
    const a = ReferenceBackend.listen(t.path, { device: 'net', faults });
    const b = ReferenceBackend.listen(to, { device: 'net' });
    cleanups.push(() => t.cleanup(), () => a.close(), () => b.close());
    return { from: t.path, to, dir: t.dir };
  }

  const quick = ['--round-ms', '20', '--max-rounds', '3', '--after-ms', '150'];

  it('--json --svg: one JSON report, verified, exit 0; the SVG shows every round and the downtime; progress on stderr', async () => {
    const { from, to, dir } = backends();
    const svg = join(dir, 'm.svg');
    const r = await cli(['migrate', '--from', from, '--to', to, '--device', 'net', '--ring', 'packed', '--json', '--svg', svg, ...quick]);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as MigrationReport;
    expect(report.verified).to.equal(true);
    expect(report.unloggedPages).to.deep.equal([]);
    expect(report.ring).to.equal('packed');
    expect(report.downtimeMs).to.be.a('number');
    expect(report.rounds.length).to.be.at.least(3);
    for (const x of report.rounds) expect(x).to.include.keys('dirtyPages', 'copiedPages', 'bytes');
    expect(r.stderr).to.match(/^round 0: copied all \d+ pages$/m);
    expect(r.stderr).to.match(/^switchover: /m);
    const pic = readFileSync(svg, 'utf8');
    expect(pic).to.match(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(pic.match(/<rect [^>]*><title>round \d+: \d+ dirty/g)?.length).to.equal(report.rounds.length);
    expect(pic).to.include(`downtime ${report.downtimeMs} ms`);
  });

  it('a source that leaves the used ring out of the log: exit 1, the pages named', async () => {
    const { from, to } = backends([{ name: 'unlogged-used', repeat: true }]);
    const r = await cli(['migrate', '--from', from, '--to', to, ...quick]);
    expect(r.status).to.equal(1);
    expect(r.stdout).to.match(/^completeness: FAILED, unlogged pages \d+ \(ring 0 \(receiveq 0\) used ring\)/m);
    expect(r.stdout).to.match(/^NOT verified$/m);
  });

  it('--help names every option', async () => {
    const r = await cli(['migrate', '--help']);
    expect(r.status).to.equal(0);
    for (const o of ['--from', '--to', '--device', '--ring', '--log-addr', '--json', '--svg']) expect(r.stdout).to.include(o);
  });
});
