/**
 * The trace as lines: `text` for people (aligned columns), `json` for programs
 * (one object per line; bigints as `0x` hex strings, bytes as hex).
 *
 * Text columns: time in ms since the proxy started, connection number, the
 * direction (`F->B` a front-end message to the back-end, `F<-B` the back-end's
 * answer; on the back-end channel `F<=B` a back-end request and `F=>B` the
 * front-end's answer), the header flags (NEED_REPLY, REPLY), the fd count, then
 * the request and its decoded fields:
 *
 * ```
 *      0.412  #1  F->B  NEED_REPLY  fds=1  SET_BACKEND_REQ_FD
 *      0.455  #1  F<-B  REPLY       fds=0  SET_BACKEND_REQ_FD ack 0
 *      1.907  #1  F<=B  NEED_REPLY  fds=0  CONFIG_CHANGE_MSG
 *     20.113  #1  ----  frontend closed the connection after GET_VRING_BASE from the backend
 * ```
 */
import type { TraceMessage, TraceRecord } from './trace-record.js';

/** The output formats of `vhost-user trace --format`. */
export type TraceFormat = 'text' | 'json';

function arrow(r: TraceMessage): string {
  if (r.channel === 'frontend') return r.from === 'frontend' ? 'F->B' : 'F<-B';
  return r.from === 'backend' ? 'F<=B' : 'F=>B';
}

function flagNames(r: TraceMessage): string {
  if (r.needReply && r.reply) return 'REPLY|NEED';
  return r.needReply ? 'NEED_REPLY' : r.reply ? 'REPLY' : '';
}

/** One aligned line, without the newline. */
export function formatTextLine(r: TraceRecord): string {
  const head = `${r.time.toFixed(3).padStart(10)}  #${String(r.connection).padEnd(2)}`;
  if (r.kind === 'close') return `${head}  ----  ${r.text}`;
  return `${head}  ${arrow(r)}  ${flagNames(r).padEnd(10)}  fds=${r.fds}  ${r.text}`;
}

/** Plain JSON data of a decoded value: bigints as `0x...`, bytes as a hex string. */
export function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex');
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, jsonValue(x)]));
  return v;
}

/**
 * The record as plain JSON data. Messages: `kind, time, connection, channel, from,
 * request, code, flags, reply, needReply, size, fds, decoded` (null when the
 * payload does not decode), `text`, and `payload` (hex). Close records: `kind,
 * time, connection, channel, closedBy, afterRequest, afterFrom, error?, text`.
 */
export function recordJson(r: TraceRecord): Record<string, unknown> {
  // Microseconds are all the clock says; more digits are float noise.
  const time = Math.round(r.time * 1000) / 1000;
  if (r.kind === 'close') return { ...r, time };
  const { bytes, decoded, ...rest } = r;
  return { ...rest, time, decoded: decoded === undefined ? null : jsonValue(decoded), payload: jsonValue(bytes.subarray(12)) };
}

/** One line in `format`, without the newline. */
export function formatRecord(r: TraceRecord, format: TraceFormat): string {
  return format === 'json' ? JSON.stringify(recordJson(r)) : formatTextLine(r);
}
