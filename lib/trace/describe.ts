/**
 * The one-line text of a decoded message: `SET_VRING_NUM {index: 0, num: 256}`.
 * Values come from the protocol codecs (via lib/client/trace.ts); this file only
 * chooses how to show them: u64 feature masks in hex with their bit names, the
 * KICK/CALL/ERR u64 as its ring index and NOFD bit (vhost-user.rst,
 * 'VHOST_USER_SET_VRING_KICK'), REPLY_ACK answers as `ack 0`.
 */
import type { TraceEvent } from '../client/trace.js';
import {
  BackendRequest,
  FrontendRequest as R,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  featureNames,
  protocolFeatureNames,
} from '../protocol/constants.js';

const HEX_BYTES = 32;

function hexBytes(bytes: Uint8Array): string {
  const shown = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, HEX_BYTES)).toString('hex');
  return bytes.length > HEX_BYTES ? `${shown}…` : shown;
}

/** A decoded value as `{a: 1, b: 0x10}`: bigints in hex, bytes in hex. */
export function showValue(v: unknown): string {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (v instanceof Uint8Array) return v.length ? hexBytes(v) : "''";
  if (Array.isArray(v)) return `[${v.map(showValue).join(', ')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${k}: ${showValue(x)}`)
      .join(', ')}}`;
  }
  return String(v);
}

function u64Of(e: TraceEvent): bigint | undefined {
  if (typeof e.decoded === 'bigint') return e.decoded;
  return e.payload.length === 8 ? Buffer.from(e.payload.buffer, e.payload.byteOffset, 8).readBigUInt64LE(0) : undefined;
}

/** Whether the message carries the request's payload (not its reply). */
function isRequest(e: TraceEvent): boolean {
  return (e.direction === 'send') === (e.channel === 'frontend');
}

/** The decoded part of the line (after the request name); '' for an empty payload. */
export function decodedText(e: TraceEvent): string {
  if (e.size === 0) return '';
  const request = isRequest(e);
  const code = e.code;
  if (e.channel === 'frontend') {
    const v = u64Of(e);
    if (v !== undefined) {
      if ((code === R.SET_FEATURES && request) || (code === R.GET_FEATURES && !request)) {
        return `0x${v.toString(16).padStart(16, '0')} (${featureNames(v).join(' ') || 'none'})`;
      }
      if ((code === R.SET_PROTOCOL_FEATURES && request) || (code === R.GET_PROTOCOL_FEATURES && !request)) {
        return `0x${v.toString(16).padStart(16, '0')} (${protocolFeatureNames(v).join(' ') || 'none'})`;
      }
      if (request && (code === R.SET_VRING_KICK || code === R.SET_VRING_CALL || code === R.SET_VRING_ERR)) {
        const nofd = (v & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n;
        return `{index: ${Number(v & BigInt(VHOST_USER_VRING_IDX_MASK))}${nofd ? ', nofd: true' : ''}}`;
      }
      if (request && code === R.SET_STATUS) return `{status: 0x${v.toString(16)}}`;
      if (!request && code === R.GET_STATUS) return `{status: 0x${v.toString(16)}}`;
      // A reply with no body of its own: the REPLY_ACK u64 (vhost-user.rst, 'REPLY_ACK').
      if (!request && e.decoded === undefined) return `ack ${v}`;
      if (!request && typeof e.decoded === 'bigint' && code !== R.GET_FEATURES) return `${v}`;
    }
  } else if (!request) {
    const v = u64Of(e);
    if (v !== undefined) return `ack ${v}`;
  } else if (code === BackendRequest.CONFIG_CHANGE_MSG) {
    return showValue(e.decoded ?? e.payload);
  }
  if (e.decoded === undefined) return `<${e.size} bytes, not decoded: ${hexBytes(e.payload)}>`;
  return showValue(e.decoded);
}

/** `SET_VRING_NUM {index: 0, num: 256}`. */
export function messageText(e: TraceEvent): string {
  const body = decodedText(e);
  return body ? `${e.request} ${body}` : e.request;
}
