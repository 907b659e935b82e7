/**
 * Check a vhost-user back-end against the specification: the conformance suite
 * (vhost-user.rst and virtio 1.2, one rule per check) run against a back-end that
 * the suite starts itself, here the built-in reference back-end (`vhost-user
 * serve`) as a separate process. Any other back-end goes the same way: pass
 * `spawn: () => startTestpmd({ forwardMode: 'io' })`, or a shell command and the
 * socket it listens on.
 *
 *   node dist/examples/check-backend.js [net|blk] [ID-PATTERNS]
 *
 * ID-PATTERNS selects checks by id, e.g. 'handshake,rings.*' (default: every check).
 * Exit status 0 when no check failed.
 */
import { formatConformanceText, runConformance, startReferenceBackend } from 'vhost-user-client';

const device = process.argv[2] === 'blk' ? 'blk' : 'net';
const only = process.argv[3];

const report = await runConformance({
  device,
  spawn: () => startReferenceBackend({ device }),
  backendName: `vhost-user serve --device ${device}`,
  ...(only !== undefined ? { only } : {}),
});
// One line per check (PASS/FAIL/SKIP, its id and what was seen), then each failure with the rule it breaks.
process.stdout.write(formatConformanceText(report));
process.exitCode = report.summary.fail === 0 ? 0 : 1;
