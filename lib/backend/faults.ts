/**
 * Fault injection for the reference back-end: the mistakes a buggy or hostile
 * back-end makes, on demand, so a front-end (this library's or anyone's) can be
 * tested against them. A fault is `NAME[@TARGET]`:
 *
 * - message faults target a front-end request by its spec name
 *   (`no-reply@GET_VRING_BASE`); without a target they hit the first request
 *   they apply to;
 * - ring faults target a vring index (`used-idx-jump@1`); without one, the
 *   first ring that completes a buffer.
 *
 * A fault fires once, on the first matching request or completion, and the
 * connection that got it is then left to the front-end's reaction; later
 * connections are served cleanly, so a test can check that the front-end is
 * usable again after reconnecting. `repeat: true` fires it on every match.
 */
import { VhostUserError } from '../errors.js';
import { FrontendRequest } from '../protocol/constants.js';

/**
 * Faults on the reply to one request (vhost-user.rst, "Message Specification" is what each breaks):
 * name to what the back-end then does.
 * @enum
 */
export const MESSAGE_FAULTS = {
  'disconnect-before': 'close the connection when the request arrives, before handling it',
  'disconnect-after': 'handle the request, send its reply, then close the connection',
  'wrong-code': 'reply with another request code',
  'wrong-flags': 'reply without the REPLY flag',
  'wrong-size': 'reply with 4 bytes fewer than the reply carries',
  'huge-size': 'reply with a header whose size field says 1 GiB, and no body',
  'unexpected-fds': 'attach an eventfd to the reply',
  'no-reply': 'handle the request and never reply',
  'late-reply': 'handle the request and reply after delayMs (default 1000 ms)',
  nak: 'refuse the request with a non-zero REPLY_ACK (only requests sent with NEED_REPLY)',
} as const;

/**
 * Faults on the used ring (virtio 1.2 §2.7.8 split, §2.8 packed) or on serving a ring: name to
 * what the back-end then does.
 * @enum
 */
export const RING_FAULTS = {
  'used-id-out-of-range': 'complete a buffer with id = queue size',
  'used-id-not-outstanding': 'complete a buffer with an id the driver did not make available',
  'used-len-too-large': 'complete a buffer with len one more than its writable bytes',
  'used-duplicate': 'complete the same buffer twice',
  'used-idx-jump': 'move the used index by more than the ring size (packed: one completion more than made available)',
  'stop-ring': 'stop serving the ring: kicks are ignored and nothing completes',
} as const;

/**
 * Faults on dirty logging (vhost-user.rst, "Migration"): the mistakes that make a
 * live migration silently corrupt the guest. They act only while logging is on;
 * a target is a vring index. Name to what the back-end then does.
 * @enum
 */
export const LOG_FAULTS = {
  'unlogged-write': 'leave the buffer bytes a completion wrote (RX frame, blk data and status) out of the dirty log',
  'unlogged-used': 'leave the used entry and used.idx (packed: the descriptor written back) out of the dirty log',
  'write-after-stop': 'write into the ring (split: used.flags; packed: the device event area) 30 ms after answering GET_VRING_BASE',
  'log-after-clear': 'keep logging after SET_FEATURES clears VHOST_F_LOG_ALL: completions go on marking the buffer pages they write in the old log',
} as const;

/** A fault on the reply to a request: a key of {@link MESSAGE_FAULTS}. */
export type MessageFaultName = keyof typeof MESSAGE_FAULTS;
/** A fault on a used ring: a key of {@link RING_FAULTS}. */
export type RingFaultName = keyof typeof RING_FAULTS;
/** A fault on dirty logging: a key of {@link LOG_FAULTS}. */
export type LogFaultName = keyof typeof LOG_FAULTS;
/** Any fault the reference back-end can inject (`serve --fault NAME`). */
export type FaultName = MessageFaultName | RingFaultName | LogFaultName;

/** Every fault name, message faults first: what `serve --fault` accepts. */
export const FAULT_NAMES: readonly FaultName[] = [...Object.keys(MESSAGE_FAULTS), ...Object.keys(RING_FAULTS), ...Object.keys(LOG_FAULTS)] as FaultName[];

/** One fault to inject, and where: `{ name: 'nak', request: 'SET_VRING_ENABLE' }`. */
export interface Fault {
  /** Which fault. */
  name: FaultName;
  /** Message faults: the request's spec name (e.g. 'SET_MEM_TABLE'); omitted: the first request the fault applies to. */
  request?: string;
  /** Ring faults: the vring index; omitted: the first ring that completes a buffer (or, for stop-ring, every ring). */
  ring?: number;
  /** late-reply: how long to hold the reply (default 1000 ms). */
  delayMs?: number;
  /** Fire on every match instead of once. */
  repeat?: boolean;
}

export function isRingFault(name: FaultName): name is RingFaultName {
  return name in RING_FAULTS;
}

/** Whether `name` is a dirty-logging fault (its target is a ring index). */
export function isLogFault(name: FaultName): name is LogFaultName {
  return name in LOG_FAULTS;
}

/** Parses `NAME[@REQUEST|@RING]`, the command-line form. */
export function parseFault(text: string): Fault {
  const at = text.indexOf('@');
  const name = (at < 0 ? text : text.slice(0, at)) as FaultName;
  const target = at < 0 ? undefined : text.slice(at + 1);
  if (!FAULT_NAMES.includes(name)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `unknown fault '${name}'; one of: ${FAULT_NAMES.join(', ')}`);
  }
  if (target === undefined) return { name };
  if (isRingFault(name) || isLogFault(name)) {
    const ring = Number(target);
    if (!/^\d+$/.test(target) || ring > 255) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `fault ${name} targets a ring index, not '${target}'`);
    return { name, ring };
  }
  const request = target.toUpperCase().replace(/^VHOST_USER_/, '');
  if (!(request in FrontendRequest)) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `fault ${name}: '${target}' is not a front-end request name (e.g. SET_MEM_TABLE)`);
  }
  return { name, request };
}

/** Describes a fault the way parseFault reads it. */
export function formatFault(f: Fault): string {
  const target = f.request ?? (f.ring !== undefined ? String(f.ring) : undefined);
  return target === undefined ? f.name : `${f.name}@${target}`;
}

/**
 * The faults of one back-end and whether each has fired. Sessions ask it at
 * each request and each completion; it answers with the fault to apply, if any,
 * and marks it spent.
 */
export class FaultPlan {
  /** Each fault that has fired, once, in order, with the connection it first hit (repeats go to onFire only, so this stays bounded). */
  readonly fired: {
    /** The fault. */
    fault: Fault;
    /** The connection it first fired on (1 for the first front-end). */
    connection: number;
  }[] = [];

  /**
   * @param faults the faults to inject, each firing once at its first match (unless `repeat`).
   * @param onFire called every time a fault fires, repeats included.
   */
  constructor(
    /** The faults this plan injects, as given. */
    readonly faults: readonly Fault[],
    private readonly onFire: (fault: Fault, connection: number) => void = () => {},
  ) {
    for (const f of faults) {
      if (!FAULT_NAMES.includes(f.name)) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `unknown fault '${String(f.name)}'`);
    }
  }

  /** True when the plan injects nothing: the back-end's hooks then cost one check each. */
  get isEmpty(): boolean {
    return this.faults.length === 0;
  }

  /**
   * The message fault to apply to `request` on `connection`, if one matches.
   * `needReply`: the request carries NEED_REPLY; `replies`: it gets a reply
   * body or an ack, so reply faults can apply.
   */
  takeMessageFault(connection: number, request: string, replies: boolean, needReply: boolean): Fault | null {
    return this.take(connection, (f) => {
      if (isRingFault(f.name) || isLogFault(f.name)) return false;
      if (f.request !== undefined && f.request !== request) return false;
      switch (f.name) {
        case 'disconnect-before':
        case 'disconnect-after':
          return true;
        case 'nak':
          return needReply;
        default:
          return replies;
      }
    });
  }

  /** The ring fault (other than stop-ring) to apply to the next completion on `ring`, if one matches. */
  takeRingFault(connection: number, ring: number): Fault | null {
    return this.take(connection, (f) => isRingFault(f.name) && f.name !== 'stop-ring' && (f.ring === undefined || f.ring === ring));
  }

  /**
   * Whether the logging fault `name` applies now to `ring` (it is consulted only
   * while logging is on). Fires once, or on every match with `repeat`; either
   * way `fired` and onFire see its first firing only, as these are asked on the
   * packet path.
   */
  takeLogFault(connection: number, ring: number, name: LogFaultName): boolean {
    for (const f of this.faults) {
      if (f.name !== name || (f.ring !== undefined && f.ring !== ring)) continue;
      const before = this.hasFired(f);
      if (before && !f.repeat) continue;
      if (!before) {
        this.fired.push({ fault: f, connection });
        this.onFire(f, connection);
      }
      return true;
    }
    return false;
  }

  /** Whether `ring` is not to be served (stop-ring). Fires once per connection it applies to. */
  ringStopped(connection: number, ring: number): boolean {
    const f = this.faults.find((x) => x.name === 'stop-ring' && (x.ring === undefined || x.ring === ring));
    if (!f) return false;
    const first = this.fired.find((x) => x.fault === f);
    if (first === undefined) {
      this.fired.push({ fault: f, connection });
      this.onFire(f, connection);
      return true;
    }
    return f.repeat === true || first.connection === connection;
  }

  private hasFired(f: Fault): boolean {
    return this.fired.some((x) => x.fault === f);
  }

  private take(connection: number, match: (f: Fault) => boolean): Fault | null {
    for (const f of this.faults) {
      if (!match(f)) continue;
      const before = this.hasFired(f);
      if (before && !f.repeat) continue;
      if (!before) this.fired.push({ fault: f, connection });
      this.onFire(f, connection);
      return f;
    }
    return null;
  }
}
