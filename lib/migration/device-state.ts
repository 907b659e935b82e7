/**
 * Back-end state across a migration (protocol feature DEVICE_STATE;
 * vhost-user.rst, "Migrating back-end state"): with every ring stopped, the
 * front-end hands the source back-end one end of a pipe (SET_DEVICE_STATE_FD,
 * direction save, phase stopped) and reads the state until EOF, then asks
 * CHECK_DEVICE_STATE; on the destination it hands over the other direction
 * (load), writes the state, closes its end and asks CHECK_DEVICE_STATE again.
 * Either back-end may answer with an fd of its own, which is then used instead.
 * The state is opaque to the front-end.
 */
import { read, write } from 'node:fs';
import type { VhostUserClient } from '../client/vhost-user-client.js';
import { VhostUserError } from '../errors.js';
import { C, closeFd, libc, syscallError } from '../native/libc.js';

/** The most state a transfer carries (a guard against a back-end that never closes its end). */
const MAX_STATE = 64 * 1024 * 1024;

function pipe(): [number, number] {
  const fds = new Int32Array(2);
  if (libc.pipe2(fds, C.O_CLOEXEC) !== 0) throw syscallError('pipe2');
  return [fds[0]!, fds[1]!];
}

/** Reads `fd` until EOF on the thread pool (the back-end may write after replying). */
function readAll(fd: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const next = () => {
      const buf = Buffer.allocUnsafe(65536);
      read(fd, buf, 0, buf.length, null, (err, n) => {
        if (err) return reject(new VhostUserError('VHOST_SYSCALL', `reading the device state: ${err.message}`, { request: 'SET_DEVICE_STATE_FD' }));
        if (n === 0) return resolve(Buffer.concat(chunks, total));
        total += n;
        if (total > MAX_STATE) return reject(new VhostUserError('VHOST_PAYLOAD_TOO_LARGE', `the device state exceeds ${MAX_STATE} bytes`, { request: 'SET_DEVICE_STATE_FD' }));
        chunks.push(buf.subarray(0, n));
        next();
      });
    };
    next();
  });
}

function writeAll(fd: number, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number) => {
      if (off >= data.length) return resolve();
      write(fd, data, off, data.length - off, null, (err, n) => {
        if (err) return reject(new VhostUserError('VHOST_SYSCALL', `writing the device state: ${err.message}`, { request: 'SET_DEVICE_STATE_FD' }));
        step(off + n);
      });
    };
    step(0);
  });
}

/** Saves the (stopped) back-end's state: SET_DEVICE_STATE_FD (save), read to EOF, CHECK_DEVICE_STATE. */
export async function saveDeviceState(client: VhostUserClient): Promise<Uint8Array> {
  const [r, w] = pipe();
  let readFd = r;
  try {
    let theirs: number;
    try {
      theirs = await client.setDeviceStateFd('save', w);
    } finally {
      closeFd(w);
    }
    if (theirs >= 0) {
      closeFd(r);
      readFd = theirs;
    }
    const state = await readAll(readFd);
    await client.checkDeviceState();
    return state;
  } finally {
    closeFd(readFd);
  }
}

/** Loads `state` into the (stopped) back-end: SET_DEVICE_STATE_FD (load), write, close, CHECK_DEVICE_STATE. */
export async function loadDeviceState(client: VhostUserClient, state: Uint8Array): Promise<void> {
  const [r, w] = pipe();
  let writeFd = w;
  try {
    let theirs: number;
    try {
      theirs = await client.setDeviceStateFd('load', r);
    } finally {
      closeFd(r);
    }
    if (theirs >= 0) {
      closeFd(w);
      writeFd = theirs;
    }
    await writeAll(writeFd, state);
  } finally {
    closeFd(writeFd);
  }
  // The back-end knows the stream ended only once our end is closed.
  await client.checkDeviceState();
}
