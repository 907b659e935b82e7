/**
 * A one-shot back-end, as virtiofsd and rust-vmm's vhost-device-* daemons are: the
 * reference back-end, serving one front-end and exiting with code 0 when it leaves.
 * With `--panic` a request with an unknown code makes it exit with code 1 instead,
 * as virtiofsd's fv_panic does. Run as a child process by the one-shot specs:
 * `node one-shot-backend.js SOCKET [--panic]`.
 */
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';

const socket = process.argv[2];
if (!socket) {
  process.stderr.write('usage: one-shot-backend.js SOCKET [--panic]\n');
  process.exit(2);
}
const panic = process.argv.includes('--panic');
const backend = ReferenceBackend.listen(socket, { device: 'net' });
backend.on('violation', (v) => {
  if (panic && v.code === 'VHOST_UNKNOWN_REQUEST') {
    process.stdout.write(`panic: ${v.message}\n`);
    process.exit(1);
  }
});
backend.on('disconnect', () => {
  backend.close();
  process.exit(0);
});
process.on('SIGTERM', () => {
  backend.close();
  process.exit(0);
});
