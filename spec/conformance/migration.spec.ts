/**
 * The migration group against the reference back-end: it passes clean, and the
 * dirty-logging faults (lib/backend/faults.ts) each fail the check that guards
 * against them, naming the pages.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { cli } from '../helpers/cli.js';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import type { Fault } from '../../lib/backend/faults.js';
import { runConformance, type ConformanceReport } from '../../lib/conformance/index.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

async function run(device: 'net' | 'blk', faults: Fault[]): Promise<ConformanceReport> {
  const tmp = tempSocketPath();
  const backend = ReferenceBackend.listen(tmp.path, { device, faults, ...(device === 'blk' ? { blkSize: 1 << 20 } : {}) });
  try {
    return await runConformance({ socket: tmp.path, device, only: 'migration.' });
  } finally {
    backend.close();
    tmp.cleanup();
  }
}

function status(report: ConformanceReport): Record<string, string> {
  return Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
}

describe('conformance migration group against the reference back-end', function () {
  this.timeout(20_000);

  for (const device of ['net', 'blk'] as const) {
    it(`${device}: every migration check passes`, async () => {
      const report = await run(device, []);
      expect(report.checks.filter((c) => c.status !== 'pass').map((c) => `${c.id}: ${c.detail}`)).to.deep.equal([]);
      expect(report.checks.map((c) => c.id)).to.deep.equal(['migration.log-covers-writes', 'migration.log-all-clear-stops', 'migration.log-base-switch', 'migration.quiet-after-stop']);
    });
  }

  it('log-after-clear fails migration.log-all-clear-stops, naming the pages still marked', async () => {
    const report = await run('net', [{ name: 'log-after-clear', repeat: true }]);
    const c = report.checks.find((x) => x.id === 'migration.log-all-clear-stops')!;
    expect(c.status, c.detail).to.equal('fail');
    expect(c.detail).to.match(/logging went on after VHOST_F_LOG_ALL was cleared: \d+ page\(s\) at GPA 0x1/);
    expect(c.evidence.some((l) => /SET_FEATURES/.test(l))).to.equal(true);
    expect(status(report)).to.include({ 'migration.log-covers-writes': 'pass', 'migration.log-base-switch': 'pass', 'migration.quiet-after-stop': 'pass' });
  });

  it('write-after-stop fails migration.quiet-after-stop, naming the used ring bytes written', async () => {
    const report = await run('net', [{ name: 'write-after-stop', repeat: true }]);
    const c = report.checks.find((x) => x.id === 'migration.quiet-after-stop')!;
    expect(c.status, c.detail).to.equal('fail');
    // The fault flips a bit of a used ring's flags word: one byte changed.
    expect(c.detail).to.match(/guest memory written after GET_VRING_BASE of every ring: GPA 0x[0-9a-f]+\+1/);
    expect(status(report)).to.include({ 'migration.log-all-clear-stops': 'pass' });
  });

  it('serve --fault log-after-clear --fault-repeat (no target): the CLI reports the check failed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vhost-migration-conf-'));
    try {
      const socket = path.join(dir, 'net.sock');
      const main = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
      const serve = `${process.execPath} ${main} serve --socket ${socket} --device net --fault log-after-clear --fault-repeat`;
      const r = await cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', serve, '--only', 'migration.log-all-clear-stops']);
      expect(r.status, r.stderr).to.equal(0);
      expect(r.stdout).to.match(/^FAIL migration\.log-all-clear-stops \(\d+ ms\): logging went on after VHOST_F_LOG_ALL was cleared: \d+ page\(s\) at GPA 0x/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
