/**
 * Message sequences for the parity test: what a front-end sent (through the
 * tracing proxy), reduced to what parity is about, cut into the steps of a device's
 * life, and compared step by step.
 *
 * A message becomes one key: the request's spec name, the ring index, NEED_REPLY,
 * the fd count, and the fields whose value is protocol rather than the guest's
 * choice (VHOST_F_LOG_ALL in SET_FEATURES, the log flag of SET_VRING_ADDR, the
 * SET_STATUS value, the enable flag, GET_CONFIG's window, the protocol features
 * acknowledged). Ring sizes, addresses, bases and memory layouts are the guest's
 * or the caller's choice and are left out; a memory table's fd count is checked to
 * be its region count and written as `fds=regions`. Consecutive equal keys collapse
 * into one (QEMU sends one ADD_MEM_REG per region and SEND_RARP five times).
 */
import type { TraceMessage, TraceRecord } from '../../lib/trace/trace-record.js';
import { ProtocolFeature } from '../../lib/protocol/constants.js';

/** The steps compared. */
export type Phase = 'init' | 'start' | 'migration-source' | 'migration-destination-init' | 'migration-destination' | 'stop';
/** Every phase, in the order of a device's life. */
export const PHASES: readonly Phase[] = ['init', 'start', 'migration-source', 'migration-destination-init', 'migration-destination', 'stop'];

const LOG_ALL = 1n << 26n;
const PROTOCOL_NAMES = Object.entries(ProtocolFeature as Record<string, number>);

function protocolNames(v: bigint): string {
  return PROTOCOL_NAMES.filter(([, b]) => (v >> BigInt(b)) & 1n)
    .map(([n]) => n)
    .join('|');
}

function field(decoded: unknown, name: string): unknown {
  return decoded !== null && typeof decoded === 'object' ? (decoded as Record<string, unknown>)[name] : undefined;
}

function ringIndex(m: TraceMessage): number | undefined {
  // KICK/CALL/ERR carry a u64: bits 0-7 the ring index, bit 8 NOFD (vhost-user.rst, 'VHOST_USER_SET_VRING_KICK').
  if (typeof m.decoded === 'bigint') return /^SET_VRING_(KICK|CALL|ERR)$/.test(m.request) ? Number(m.decoded & 0xffn) : undefined;
  const i = field(m.decoded, 'index');
  return typeof i === 'number' ? i : undefined;
}

/** One message a front-end sent, reduced for comparison. */
export interface Item {
  /** Name, ring index, key fields and fd count; see the file comment. */
  key: string;
  /** NEED_REPLY (compared separately: it is a policy that runs through a whole sequence). */
  needReply: boolean;
}

/** The key of one message a front-end sent (without NEED_REPLY); see the file comment. */
export function messageKey(m: TraceMessage): string {
  const index = ringIndex(m);
  const parts = [index === undefined ? m.request : `${m.request}[${index}]`];
  const d = m.decoded;
  switch (m.request) {
    case 'SET_FEATURES':
      if (typeof d === 'bigint' && d & LOG_ALL) parts.push('LOG_ALL');
      break;
    case 'SET_PROTOCOL_FEATURES':
      if (typeof d === 'bigint') parts.push(protocolNames(d));
      break;
    case 'SET_STATUS':
      if (typeof d === 'bigint') parts.push(`0x${d.toString(16)}`);
      break;
    case 'SET_VRING_ADDR': {
      const flags = field(d, 'flags');
      if (typeof flags === 'number' && flags & 1) parts.push('log');
      break;
    }
    case 'SET_VRING_ENABLE':
      parts.push(String(field(d, 'num')));
      break;
    case 'GET_CONFIG':
      parts.push(`${String(field(d, 'offset'))}+${String(field(d, 'size'))}`);
      break;
  }
  if (m.request === 'SET_MEM_TABLE') {
    const regions = field(d, 'regions');
    parts.push(Array.isArray(regions) && regions.length === m.fds ? 'fds=regions' : `fds=${m.fds}`);
  } else if (m.fds) parts.push(`fds=${m.fds}`);
  return parts.join(' ');
}

/** The front-end's requests on the front-end channel of `connection` (default: all), in order. */
export function frontendRequests(records: readonly TraceRecord[], connection?: number): TraceMessage[] {
  return records.filter(
    (r): r is TraceMessage => r.kind === 'message' && r.from === 'frontend' && r.channel === 'frontend' && (connection === undefined || r.connection === connection),
  );
}

/**
 * The items of `messages`, with a block of 1 to 4 items that repeats the block just
 * before it dropped (QEMU sends one ADD_MEM_REG per region, SEND_RARP five times, and
 * SET_VRING_ENABLE 1 for both rings of a pair several times while a net device comes up).
 */
export function items(messages: readonly TraceMessage[]): Item[] {
  const out: Item[] = [];
  const same = (a: Item, b: Item) => a.key === b.key && a.needReply === b.needReply;
  for (const m of messages) {
    out.push({ key: messageKey(m), needReply: m.needReply });
    for (let b = 1; b <= 4 && out.length >= 2 * b; b++) {
      const n = out.length;
      let repeat = true;
      for (let k = 0; k < b && repeat; k++) repeat = same(out[n - b + k]!, out[n - 2 * b + k]!);
      if (repeat) {
        out.length = n - b;
        break;
      }
    }
  }
  return out;
}

/** An item as one line: its key, then `+NEED_REPLY` when set. */
export function itemText(i: Item): string {
  return i.needReply ? `${i.key} +NEED_REPLY` : i.key;
}

/** Splits a connection's requests at its first SET_FEATURES: the handshake before, the device start after. */
export function splitAtFeatures(messages: readonly TraceMessage[]): [TraceMessage[], TraceMessage[]] {
  const i = messages.findIndex((m) => m.request === 'SET_FEATURES');
  return i < 0 ? [[...messages], []] : [messages.slice(0, i), messages.slice(i)];
}

/** One difference between the two sequences of a phase. */
export interface Difference {
  phase: Phase;
  /**
   * `only`: one front-end sent the message and the other did not; `order`: both sent
   * it, at different places; `need-reply`: both sent it, NEED_REPLY set by one only.
   */
  kind: 'only' | 'order' | 'need-reply';
  /** Who sent it (`only`), sent it with NEED_REPLY (`need-reply`), or `both` (`order`). */
  side: 'qemu' | 'library' | 'both';
  key: string;
}

/** The differences between QEMU's and the library's items of one phase (a longest-common-subsequence diff on the keys). */
export function diff(phase: Phase, qemu: readonly Item[], library: readonly Item[]): Difference[] {
  const n = qemu.length;
  const m = library.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = qemu[i]!.key === library[j]!.key ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: Difference[] = [];
  const onlyQ: string[] = [];
  const onlyL: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && qemu[i]!.key === library[j]!.key) {
      if (qemu[i]!.needReply !== library[j]!.needReply) out.push({ phase, kind: 'need-reply', side: qemu[i]!.needReply ? 'qemu' : 'library', key: qemu[i]!.key });
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      onlyL.push(library[j++]!.key);
    } else {
      onlyQ.push(qemu[i++]!.key);
    }
  }
  // A key left over on both sides was sent by both, in another place.
  for (const k of onlyQ) {
    const at = onlyL.indexOf(k);
    if (at >= 0) {
      onlyL.splice(at, 1);
      out.push({ phase, kind: 'order', side: 'both', key: k });
    } else out.push({ phase, kind: 'only', side: 'qemu', key: k });
  }
  for (const k of onlyL) out.push({ phase, kind: 'only', side: 'library', key: k });
  return out;
}
