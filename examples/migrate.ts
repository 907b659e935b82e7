/**
 * A verified live migration: two reference back-ends (vhost-user net loopbacks)
 * listen in this process, as two hosts would; a virtio-net device runs numbered
 * frames through the first while it is migrated to the second the way QEMU does
 * it (dirty log, full copy, rounds, GET_VRING_BASE, the second started from the
 * same ring positions, SEND_RARP). The report says whether the dirty log was
 * complete, whether anything was written after the source stopped, and whether
 * every frame came back exactly once.
 *
 *   node dist/examples/migrate.js            # split rings
 *   node dist/examples/migrate.js packed     # packed rings
 *   node dist/examples/migrate.js split unlogged-used   # a back-end that forgets to log: caught
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrate, parseFault, ReferenceBackend, summarize, type RingKind } from 'vhost-user-client';

const ring = (process.argv[2] ?? 'split') as RingKind;
const fault = process.argv[3];
const dir = mkdtempSync(join(tmpdir(), 'vhost-migrate-'));
const [from, to] = [join(dir, 'source.sock'), join(dir, 'destination.sock')];
// The source back-end, optionally with a logging fault on every completion.
const source = ReferenceBackend.listen(from, { device: 'net', faults: fault ? [{ ...parseFault(fault), repeat: true }] : [] });
const destination = ReferenceBackend.listen(to, { device: 'net' });
try {
  const report = await migrate({ from, to, device: 'net', ring });
  for (const line of summarize(report)) console.log(line);
  console.log(`rounds (dirty pages): ${report.rounds.map((r) => r.dirtyPages).join(' ')}`);
  console.log(`frames looped: source ${source.net.frames}, destination ${destination.net.frames} (carried over with DEVICE_STATE: ${report.deviceState.transferred})`);
  process.exitCode = report.verified ? 0 : 1;
} finally {
  source.close();
  destination.close();
  rmSync(dir, { recursive: true, force: true });
}
