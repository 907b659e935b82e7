/**
 * The evidence of a check: one line per message exchanged, in both directions,
 * as the client's trace hook and the raw session see them, decoded with the
 * request table's codecs where the bytes decode. Kept to the last MAX_LINES lines
 * so a check that loops does not grow without bound.
 */
import { traceEvent, type TraceEvent } from '../client/trace.js';

const MAX_LINES = 80;
const HEX_BYTES = 40;

function hex(bytes: Uint8Array): string {
  const shown = Buffer.from(bytes.subarray(0, HEX_BYTES)).toString('hex');
  return bytes.length > HEX_BYTES ? `${shown}…` : shown;
}

function show(v: unknown): string {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (v instanceof Uint8Array) return hex(v);
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${k}=${show(x)}`).join(' ')}}`;
  }
  return String(v);
}

/** `> SET_VRING_NUM flags=0x9 size=8 {index=0 num=64}`: `>` we sent, `<` the back-end sent. */
export function traceLine(e: TraceEvent): string {
  const arrow = e.direction === 'send' ? '>' : '<';
  const where = e.channel === 'backend' ? ' (back-end channel)' : '';
  // An 8-byte reply that is not the request's own reply body is a REPLY_ACK u64.
  const body = e.decoded !== undefined ? show(e.decoded) : e.size === 8 ? show(Buffer.from(e.payload).readBigUInt64LE(0)) : hex(e.payload);
  return `${arrow} ${e.request}${where} flags=0x${e.flags.toString(16)} size=${e.size}${e.fds ? ` fds=${e.fds}` : ''}${body ? ` ${body}` : ''}`;
}

/** The same line for a message on the main socket, decoded as the request table says. */
export function messageLine(direction: 'send' | 'recv', request: number, flags: number, payload: Uint8Array, fds: number): string {
  return traceLine(traceEvent(direction, 'frontend', request, flags, payload, fds));
}

/** Where connections write their message lines. */
export interface EvidenceSink {
  add(line: string): void;
}

export class Evidence implements EvidenceSink {
  private readonly lines: string[] = [];
  private dropped = 0;

  add(line: string): void {
    this.lines.push(line);
    if (this.lines.length > MAX_LINES) {
      this.lines.shift();
      this.dropped++;
    }
  }

  list(): string[] {
    return this.dropped ? [`(${this.dropped} earlier lines omitted)`, ...this.lines] : [...this.lines];
  }
}
