/**
 * The 12-byte message header (vhost-user.rst, 'Header'): request, flags and
 * payload size, three little-endian u32.
 *
 * Encoding writes whatever u32 values it is given, so tests and the conformance
 * suite can build malformed headers; decoding enforces the rules.
 */
import { VhostUserError } from '../errors.js';
import {
  VHOST_USER_HDR_SIZE,
  VHOST_USER_MAX_PAYLOAD,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
} from './constants.js';

/** vhost-user.rst, 'Header': three little-endian u32s before every payload. */
export interface VhostUserHeader {
  /** The request code. */
  request: number;
  /** Version (bits 0-1), REPLY (bit 2), NEED_REPLY (bit 3). */
  flags: number;
  /** Payload bytes that follow. */
  size: number;
}

const KNOWN_FLAGS = VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK;
const HEADER_RULE = "vhost-user.rst, 'Header'";

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `header ${name} ${v} is not a u32`);
  }
}

/** Writes `h` as 12 bytes at `offset` of `target`; throws VHOST_INVALID_ARGUMENT for a field that is not a u32. */
export function encodeHeader(h: VhostUserHeader, target: Uint8Array, offset = 0): void {
  checkU32('request', h.request);
  checkU32('flags', h.flags);
  checkU32('size', h.size);
  if (!Number.isInteger(offset) || offset < 0 || offset + VHOST_USER_HDR_SIZE > target.length) {
    throw new VhostUserError(
      'VHOST_INVALID_ARGUMENT',
      `no room for a ${VHOST_USER_HDR_SIZE}-byte header at offset ${offset} of ${target.length} bytes`,
    );
  }
  const dv = new DataView(target.buffer, target.byteOffset + offset, VHOST_USER_HDR_SIZE);
  dv.setUint32(0, h.request, true);
  dv.setUint32(4, h.flags, true);
  dv.setUint32(8, h.size, true);
}

/**
 * Decodes and checks the first 12 bytes. The size check comes before anyone
 * waits for the body, so a header announcing gigabytes fails at once.
 */
export function decodeHeader(bytes: Uint8Array): VhostUserHeader {
  if (bytes.length < VHOST_USER_HDR_SIZE) {
    throw new VhostUserError(
      'VHOST_INVALID_ARGUMENT',
      `a header needs ${VHOST_USER_HDR_SIZE} bytes, got ${bytes.length}`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, VHOST_USER_HDR_SIZE);
  const h = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
  const hex = `0x${h.flags.toString(16)}`;
  if ((h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    throw new VhostUserError('VHOST_BAD_VERSION', `header flags ${hex} carry version ${h.flags & 3}, not 1`, {
      rule: `${HEADER_RULE}: lower 2 bits are the version (currently 0x01)`,
    });
  }
  if ((h.flags & ~KNOWN_FLAGS) !== 0) {
    throw new VhostUserError('VHOST_BAD_FLAGS', `header flags ${hex} set bits other than 0-3`, {
      rule: `${HEADER_RULE}: only version (0-1), reply (2) and need_reply (3) are defined`,
    });
  }
  if (h.size > VHOST_USER_MAX_PAYLOAD) {
    throw new VhostUserError(
      'VHOST_PAYLOAD_TOO_LARGE',
      `header announces ${h.size} payload bytes, more than ${VHOST_USER_MAX_PAYLOAD}`,
      { rule: `no vhost-user payload exceeds ${VHOST_USER_MAX_PAYLOAD} bytes (rust-vmm MAX_MSG_SIZE)` },
    );
  }
  return h;
}

/** Header and payload in one buffer, ready for one sendmsg. */
export function encodeMessage(request: number, flags: number, payload?: Uint8Array): Uint8Array {
  const size = payload?.length ?? 0;
  const out = new Uint8Array(VHOST_USER_HDR_SIZE + size);
  encodeHeader({ request, flags, size }, out);
  if (payload) out.set(payload, VHOST_USER_HDR_SIZE);
  return out;
}

/** Whether `flags` has the REPLY bit. */
export function isReply(flags: number): boolean {
  return (flags & VHOST_USER_REPLY_MASK) !== 0;
}

/** Whether `flags` has the NEED_REPLY bit. */
export function needsReply(flags: number): boolean {
  return (flags & VHOST_USER_NEED_REPLY_MASK) !== 0;
}
