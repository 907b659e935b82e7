/**
 * A small QMP (QEMU Machine Protocol) client over a Unix socket: enough to drive a
 * QEMU started by {@link startQemu} from tests (status, quit, migration).
 *
 * QMP is line-delimited JSON (QEMU's docs/interop/qmp-spec.rst): the server greets
 * with `{"QMP": {...}}`, the client must send `qmp_capabilities` before any other
 * command, and then each command `{"execute", "arguments", "id"}` is answered by
 * `{"return", "id"}` or `{"error": {"class", "desc"}, "id"}`; asynchronous events
 * `{"event", "data", "timestamp"}` may arrive between them. Answers come in command
 * order, but the id is what matches them here.
 */
import net from 'node:net';
import { VhostUserError } from '../errors.js';

/** An error QEMU answered a command with (`{"error": {"class", "desc"}}`). */
export class QmpError extends VhostUserError {
  constructor(
    /** The command that failed (`migrate`). */
    readonly command: string,
    /** QMP's error class (`GenericError`, `CommandNotFound`, `DeviceNotFound`, ...). */
    readonly errorClass: string,
    /** QEMU's human-readable description. */
    readonly desc: string,
  ) {
    super('VHOST_QMP_ERROR', `QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

/** When QEMU emitted an event (host time since the epoch). */
export interface QmpTimestamp {
  /** Whole seconds. */
  seconds: number;
  /** Microseconds within the second. */
  microseconds: number;
}

/** One asynchronous QMP event. */
export interface QmpEvent {
  /** Event name, e.g. `MIGRATION`, `STOP`, `RESUME`, `SHUTDOWN`. */
  event: string;
  /** Event data (depends on the event). */
  data: Record<string, unknown>;
  /** When QEMU emitted it. */
  timestamp: QmpTimestamp;
}

/** Options of {@link QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Deadline for connecting and the capabilities negotiation; default 10 000 ms. */
  timeoutMs?: number;
  /** Default deadline of each command; default 10 000 ms. */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const MAX_EVENTS = 1000;
/** A line longer than this is not QMP: the connection is dropped rather than buffering without bound. */
const MAX_LINE = 16 << 20;

/**
 * A QMP connection. Commands fail with {@link QmpError} (QEMU's error),
 * VHOST_TIMEOUT (no answer by the deadline) or VHOST_DISCONNECTED (QEMU closed the
 * socket or exited). Events are kept (the last 1000) and can be awaited.
 */
export class QmpClient {
  /** QEMU's greeting: `{version: {qemu: {major, minor, micro}, package}, capabilities}`. */
  greeting: Record<string, unknown> = {};
  readonly #socket: net.Socket;
  readonly #pending = new Map<number, Pending>();
  readonly #events: QmpEvent[] = [];
  readonly #eventWaiters = new Set<() => void>();
  readonly #commandTimeoutMs: number;
  #buf = '';
  #nextId = 1;
  #closed: VhostUserError | null = null;
  #onGreeting: ((g: Record<string, unknown>) => void) | null = null;

  private constructor(socket: net.Socket, commandTimeoutMs: number) {
    this.#socket = socket;
    this.#commandTimeoutMs = commandTimeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#data(chunk));
    socket.on('error', (e) => this.#fail(new VhostUserError('VHOST_DISCONNECTED', `QMP socket error: ${e.message}`, { cause: e })));
    socket.on('close', () => this.#fail(new VhostUserError('VHOST_DISCONNECTED', 'QMP connection closed by QEMU')));
  }

  /** Connects to QEMU's QMP socket and negotiates capabilities (none are enabled). */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const socket = net.createConnection(socketPath);
    const client = new QmpClient(socket, opts.commandTimeoutMs ?? 10_000);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve, reject) => {
          client.#onGreeting = (g) => {
            client.greeting = g;
            resolve();
          };
          socket.once('error', (e: NodeJS.ErrnoException) =>
            reject(new VhostUserError('VHOST_CONNECT_FAILED', `cannot connect to QMP at ${socketPath}: ${e.message}`, { errno: e.code, cause: e })),
          );
          socket.once('close', () => reject(new VhostUserError('VHOST_DISCONNECTED', `QMP at ${socketPath} closed before its greeting`)));
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new VhostUserError('VHOST_CONNECT_TIMEOUT', `no QMP greeting from ${socketPath} in ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      await client.execute('qmp_capabilities', undefined, timeoutMs);
    } catch (e) {
      client.close();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /** Whether the connection is still open. */
  get connected(): boolean {
    return this.#closed === null;
  }

  /**
   * Runs `command` with `args` and resolves with its `return` value. Rejects with
   * {@link QmpError} when QEMU reports an error, VHOST_TIMEOUT after `timeoutMs`.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = this.#commandTimeoutMs): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new VhostUserError('VHOST_TIMEOUT', `QMP ${command}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.#socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** The events received so far (the last 1000), oldest first. */
  events(): readonly QmpEvent[] {
    return this.#events;
  }

  /**
   * Resolves with the first event (already received or arriving later) named `name`
   * for which `match` holds; rejects with VHOST_TIMEOUT after `timeoutMs`, or
   * VHOST_DISCONNECTED when QMP closes first.
   */
  waitEvent(name: string, timeoutMs: number, match: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    const find = () => this.#events.find((e) => e.event === name && match(e));
    return new Promise<QmpEvent>((resolve, reject) => {
      const check = () => {
        const found = find();
        if (found) finish(() => resolve(found));
        else if (this.#closed) finish(() => reject(this.#closed!));
      };
      const timer = setTimeout(() => finish(() => reject(new VhostUserError('VHOST_TIMEOUT', `no QMP event ${name} in ${timeoutMs} ms`))), timeoutMs);
      const finish = (f: () => void) => {
        clearTimeout(timer);
        this.#eventWaiters.delete(check);
        f();
      };
      this.#eventWaiters.add(check);
      check();
    });
  }

  /** Closes the connection; pending commands reject with VHOST_DISCONNECTED. Idempotent. */
  close(): void {
    this.#fail(new VhostUserError('VHOST_DISCONNECTED', 'QMP connection closed'));
    this.#socket.destroy();
  }

  #data(chunk: string): void {
    this.#buf += chunk;
    if (this.#buf.length > MAX_LINE) {
      this.#fail(new VhostUserError('VHOST_INVALID_PAYLOAD', `QMP line longer than ${MAX_LINE} bytes`));
      this.#socket.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line) this.#message(line);
    }
  }

  #message(line: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#fail(new VhostUserError('VHOST_INVALID_PAYLOAD', `QMP sent a line that is not JSON: ${line.slice(0, 200)}`));
      this.#socket.destroy();
      return;
    }
    if ('QMP' in m) {
      this.#onGreeting?.(m['QMP'] as Record<string, unknown>);
      this.#onGreeting = null;
      return;
    }
    if (typeof m['event'] === 'string') {
      this.#events.push({
        event: m['event'],
        data: (m['data'] as Record<string, unknown> | undefined) ?? {},
        timestamp: m['timestamp'] as QmpEvent['timestamp'],
      });
      if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
      for (const w of [...this.#eventWaiters]) w();
      return;
    }
    const id = m['id'];
    const p = typeof id === 'number' ? this.#pending.get(id) : undefined;
    if (!p) return; // an answer to a command that already timed out
    this.#pending.delete(id as number);
    clearTimeout(p.timer);
    if ('error' in m) {
      const err = m['error'] as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? 'GenericError', err.desc ?? ''));
    } else {
      p.resolve(m['return']);
    }
  }

  #fail(e: VhostUserError): void {
    if (this.#closed) return;
    this.#closed = e;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.#pending.clear();
    for (const w of [...this.#eventWaiters]) w();
  }
}
