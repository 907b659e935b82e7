import { VhostUserError } from '../errors.js';
import { C } from '../native/libc.js';

/** sun_path is 108 bytes including the terminating NUL (unix(7)). */
const SUN_PATH_MAX = 107;

/** Encodes a `struct sockaddr_un` for a filesystem path. */
export function sockaddrUn(path: string): Uint8Array {
  const encoded = Buffer.from(path, 'utf8');
  if (encoded.length === 0 || encoded.length > SUN_PATH_MAX || encoded.includes(0)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `unix socket path must be 1..${SUN_PATH_MAX} bytes without NUL: ${JSON.stringify(path)}`);
  }
  const addr = new Uint8Array(2 + encoded.length + 1);
  new DataView(addr.buffer).setUint16(0, C.AF_UNIX, true);
  addr.set(encoded, 2);
  return addr;
}
