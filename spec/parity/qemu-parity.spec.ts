/**
 * Parity with QEMU 7.2: for each back-end, what QEMU sends and what this library
 * sends for the same steps (init, start, migration source and destination, stop),
 * recorded through the tracing proxy and compared message by message (sequence.ts).
 * Every difference must be explained by an entry of allow-list.ts; anything else
 * fails, listed with both sequences. The table of the differences seen is printed
 * (the README's "Parity with QEMU 7.2").
 *
 * Cost: one QEMU pair per back-end (iPXE for net, about 7 s; the Linux guest for
 * blk, about 20 s) and a few seconds for the library.
 */
import { expect } from 'chai';
import { findExecutable, findKernel, qemuAvailable, stopAll } from '../../lib/launch/index.js';
import { ALLOWED, explain, parityTable } from './allow-list.js';
import { recordLibrary, recordQemu, type BackendId, type Recording } from './scenarios.js';
import { diff, itemText, PHASES, type Difference } from './sequence.js';

const BACKENDS: { id: BackendId; exe: string | null; pkg: string }[] = [
  { id: 'reference-net', exe: null, pkg: '' },
  { id: 'dpdk-testpmd', exe: 'dpdk-testpmd', pkg: 'dpdk-dev' },
  { id: 'reference-blk', exe: null, pkg: '' },
  { id: 'qemu-storage-daemon', exe: 'qemu-storage-daemon', pkg: 'qemu-system-common' },
];

function side(r: Recording, phase: (typeof PHASES)[number]): string {
  return (r.phases[phase] ?? []).map((i) => `      ${itemText(i)}`).join('\n');
}

describe('parity with QEMU 7.2: the messages QEMU and this library send @integration', function () {
  this.timeout(120_000);
  const used = new Map<string, Set<BackendId>>();

  before(function () {
    if (!qemuAvailable()) {
      process.stdout.write('      skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)\n');
      this.skip();
    }
  });

  after(() => {
    if (used.size === 0) return;
    process.stdout.write(`\n      Parity with QEMU 7.2 (${ALLOWED.filter((a) => used.has(a.id)).length} known differences):\n\n${parityTable(used)}\n\n`);
  });

  for (const b of BACKENDS) {
    it(`${b.id}: init, start, migration (source, destination) and stop match, but for the listed differences`, async function () {
      if (b.exe && !findExecutable(b.exe)) {
        process.stdout.write(`      skipped: ${b.exe} is not installed (apt-get install ${b.pkg})\n`);
        this.skip();
      }
      if (b.id.endsWith('blk') || b.id === 'qemu-storage-daemon') {
        if (!findKernel() || !findExecutable('busybox')) {
          process.stdout.write('      skipped: the blk guest needs /boot/vmlinuz-* and busybox (apt-get install linux-image-amd64 busybox-static)\n');
          this.skip();
        }
      }
      const record = async (f: typeof recordQemu) => {
        const cleanups: (() => unknown)[] = [];
        try {
          return await f(b.id, cleanups);
        } finally {
          for (const c of cleanups.reverse()) await c();
          await stopAll();
        }
      };
      const qemu = await record(recordQemu);
      const library = await record(recordLibrary);

      // Both front-ends hand the destination exactly the positions the source reported.
      expect(Object.keys(qemu.sourceBases).length, 'QEMU stopped rings at the switch-over').to.be.above(0);
      expect(qemu.destinationBases, 'QEMU: SET_VRING_BASE on the destination = GET_VRING_BASE on the source').to.deep.equal(qemu.sourceBases);
      expect(library.destinationBases, 'library: SET_VRING_BASE on the destination = GET_VRING_BASE on the source').to.deep.equal(library.sourceBases);

      const unexplained: Difference[] = [];
      for (const phase of PHASES) {
        expect(qemu.phases[phase] ?? [], `QEMU sent nothing in ${phase}`).to.have.length.above(0);
        expect(library.phases[phase] ?? [], `the library sent nothing in ${phase}`).to.have.length.above(0);
        for (const d of diff(phase, qemu.phases[phase] ?? [], library.phases[phase] ?? [])) {
          const a = explain(d, b.id);
          if (a) {
            if (!used.has(a.id)) used.set(a.id, new Set());
            used.get(a.id)!.add(b.id);
          } else unexplained.push(d);
        }
      }
      const phasesHit = [...new Set(unexplained.map((d) => d.phase))];
      expect(
        unexplained.map((d) => `${d.phase}: ${d.kind} ${d.side} ${d.key}`),
        `differences no allow-list entry explains; sequences (QEMU | library):\n${phasesHit
          .map((p) => `    ${p}\n    QEMU:\n${side(qemu, p)}\n    library:\n${side(library, p)}`)
          .join('\n')}`,
      ).to.deep.equal([]);
    });
  }
});
