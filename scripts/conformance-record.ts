/**
 * `npm run conformance:record -- [ID ...] [--runs N]`: runs the conformance suite
 * against each pinned back-end (default: every one installed), N times (default 3),
 * and writes its expected results to spec/conformance/expected/ when every run
 * agrees. A check whose outcome differs between runs is printed and nothing is
 * written for that back-end: a flaky result is fixed in the check, never pinned.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runConformance, type ConformanceReport } from '../lib/conformance/index.js';
import { stopAll } from '../lib/launch/backend-process.js';
import { PINNED_BACKENDS } from './conformance/backends.js';
import { differences, EXPECTED_DIR, expectedFileName, formatExpected, loadExpected, recordExpected } from './conformance/expected.js';

async function main(argv: string[]): Promise<number> {
  let runs = 3;
  const ids: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--runs') runs = Number(argv[++i]);
    else if (a === '--help' || a === '-h') {
      process.stdout.write(`usage: npm run conformance:record -- [ID ...] [--runs N]\nIDs: ${PINNED_BACKENDS.map((b) => b.id).join(', ')}\n`);
      return 0;
    } else ids.push(a);
  }
  if (!(Number.isInteger(runs) && runs >= 1)) throw new Error('--runs takes a positive integer');
  const unknown = ids.filter((id) => !PINNED_BACKENDS.some((b) => b.id === id));
  if (unknown.length) throw new Error(`unknown back-end(s) ${unknown.join(', ')}; known: ${PINNED_BACKENDS.map((b) => b.id).join(', ')}`);
  const all = loadExpected();
  let status = 0;
  for (const b of PINNED_BACKENDS.filter((p) => ids.length === 0 || ids.includes(p.id))) {
    if (!b.installed()) {
      process.stdout.write(`${b.id}: not installed (apt-get install ${b.debianPackage}), skipped\n`);
      continue;
    }
    const version = b.versioned ? await b.version() : null;
    if (b.versioned && version === null) {
      process.stdout.write(`${b.id}: its version could not be read, skipped\n`);
      status = 1;
      continue;
    }
    const file = expectedFileName(b.id, version);
    const reports: ConformanceReport[] = [];
    for (let i = 0; i < runs; i++) {
      const report = await runConformance({ spawn: () => b.start(), device: b.device, backendName: b.id });
      const { pass, fail, skip } = report.summary;
      process.stdout.write(`${b.id} ${version ?? ''} run ${i + 1}/${runs}: ${pass} pass, ${fail} fail, ${skip} skip, ${report.backend.crashes} crash(es) in ${(report.ms / 1000).toFixed(1)} s\n`);
      reports.push(report);
    }
    const first = recordExpected(reports[0]!, b.id, version, all.get(file));
    const flips = reports.slice(1).flatMap((r, i) => differences(r, first).map((d) => `run ${i + 2}: ${d}`));
    if (flips.length) {
      process.stdout.write(`${b.id}: the runs disagree, nothing written:\n${flips.map((f) => `  ${f}`).join('\n')}\n`);
      status = 1;
      continue;
    }
    const target = path.join(EXPECTED_DIR, file);
    const before = all.get(file);
    const changed = before ? differences(reports[0]!, before) : [];
    writeFileSync(target, formatExpected(first));
    process.stdout.write(`${b.id}: ${existsSync(target) && before ? `updated (${changed.length} check(s) changed)` : 'written'}: ${target}\n${changed.map((c) => `  ${c}`).join('\n')}${changed.length ? '\n' : ''}`);
  }
  return status;
}

main(process.argv.slice(2)).then(
  async (code) => {
    await stopAll();
    process.exitCode = code;
  },
  async (e: unknown) => {
    await stopAll();
    process.stderr.write(`conformance:record: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 2;
  },
);
