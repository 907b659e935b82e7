/**
 * A back-end that crashes: the reference back-end, except that a request with an
 * unknown code kills the process (SIGKILL), as libvhost-user once exited on
 * request 0. Run as a child process by the conformance CLI tests:
 * `node crashing-backend.js SOCKET`.
 */
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';

const socket = process.argv[2];
if (!socket) {
  process.stderr.write('usage: crashing-backend.js SOCKET\n');
  process.exit(2);
}
const backend = ReferenceBackend.listen(socket, { device: 'net' });
backend.on('violation', (v) => {
  if (v.code === 'VHOST_UNKNOWN_REQUEST') {
    process.stdout.write(`crashing on ${v.message}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
});
process.on('SIGTERM', () => {
  backend.close();
  process.exit(0);
});
