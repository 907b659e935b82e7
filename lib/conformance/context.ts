/**
 * What a check gets to work with: the socket, the device, a deadline per reply,
 * and factories for connections, guest memory and eventfds that it never has to
 * clean up itself. Everything made through the context is closed when the check
 * ends, passes, fails or times out (close() also wakes every pending sleep, so a
 * check that overran its deadline unwinds instead of running on).
 */
import { VhostUserClient, type Negotiated, type NegotiateOptions } from '../client/vhost-user-client.js';
import { VhostUserError } from '../errors.js';
import { GuestMemory, type GuestMemoryOptions } from '../memory/guest-memory.js';
import { Connection } from '../transport/connection.js';
import { EventFd } from '../transport/eventfd.js';
import type { UnixListener } from '../transport/unix-listener.js';
import type { UnixStream } from '../transport/unix-stream.js';
import type { ConformanceDevice } from './check.js';
import { Evidence, traceLine } from './evidence.js';
import { RawSession } from './raw-session.js';

/** What {@link Check.run} is given; everything made through it is closed when the check ends. */
export interface CheckContext {
  /** Where the back-end listens now (a one-shot back-end started again may listen elsewhere). */
  readonly socketPath: string;
  /** The device the suite runs for ({@link ConformanceOptions.device}). */
  readonly device: ConformanceDevice;
  /** Deadline for each reply, and how long a back-end gets to refuse (NAK or close). */
  readonly timeoutMs: number;
  /** The back-end's pid when known (spawned by the suite): enables fd-leak checks. */
  readonly backendPid: number | null;
  /**
   * Called by a check once it has closed every connection and before it opens one that the
   * back-end must serve as a new front-end ("a fresh connection is served"). A back-end that
   * serves one front-end and exits with code 0 when it leaves (a one-shot back-end: virtiofsd,
   * rust-vmm's vhost-device-* daemons) is waited for and started again, so that its design is
   * not taken for a finding; one that exited with a non-zero code or was killed by a signal
   * fails the check (a crash). Does nothing for a back-end that keeps serving, or one the
   * suite did not start.
   */
  nextFrontEnd(): Promise<void>;
  /** Adds a line to the evidence (messages are added by the connections themselves). */
  note(line: string): void;
  /** A VhostUserClient whose messages go into the evidence. */
  client(): Promise<VhostUserClient>;
  /** A client that has run the handshake (VhostUserClient.negotiate). */
  negotiated(options?: NegotiateOptions): Promise<{
    /** The connected client, owned by the context. */
    client: VhostUserClient;
    /** What the handshake negotiated. */
    n: Negotiated;
  }>;
  /** A raw connection (see RawSession). */
  raw(): Promise<RawSession>;
  /** New guest memory, unmapped when the check ends. */
  memory(options: GuestMemoryOptions): GuestMemory;
  /** A new eventfd, closed when the check ends. */
  eventFd(): EventFd;
  /** Registers anything with close() to be closed when the check ends. */
  own<T extends {
    /** Releases the resource; called once, newest resource first. */
    close(): void;
  }>(resource: T): T;
  /** Waits; rejects once the check is over (timed out). */
  sleep(ms: number): Promise<void>;
  /** Polls `predicate` every few ms until it holds (true) or `ms` pass (false). */
  until(predicate: () => boolean, ms: number): Promise<boolean>;
}

/** @internal Where the runner's back-end is; the runner changes it when it starts the back-end again. */
export interface BackendTarget {
  readonly socketPath: string;
  readonly pid: number | null;
  /** The runner's side of CheckContext.nextFrontEnd: throws a Finding when the back-end crashed. */
  nextFrontEnd(run: CheckRun): Promise<void>;
  /**
   * Server mode (`listen`): every connection is one the back-end opens to this listener
   * (OVS dpdkvhostuserclient, DPDK client=1 reconnect by themselves about once a second).
   */
  readonly listener?: UnixListener | null;
  /** How long to wait for the back-end to connect in server mode. */
  readonly acceptTimeoutMs?: number;
}

/** @internal The runner's implementation; close() releases everything in reverse order. */
export class CheckRun implements CheckContext {
  readonly evidence = new Evidence();
  /** Connections opened to the current back-end instance (the runner resets it when it starts a new one). */
  connections = 0;
  private readonly owned: { close(): void }[] = [];
  private readonly sleepers = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly target: BackendTarget,
    readonly device: ConformanceDevice,
    readonly timeoutMs: number,
  ) {}

  get socketPath(): string {
    return this.target.socketPath;
  }

  get backendPid(): number | null {
    return this.target.pid;
  }

  async nextFrontEnd(): Promise<void> {
    this.checkOpen();
    await this.target.nextFrontEnd(this);
  }

  note(line: string): void {
    this.evidence.add(`- ${line}`);
  }

  async client(): Promise<VhostUserClient> {
    this.checkOpen();
    this.connections++;
    const options = { timeoutMs: this.timeoutMs, trace: (e: Parameters<typeof traceLine>[0]) => this.evidence.add(traceLine(e)) };
    const stream = await this.accepted();
    const client = stream
      ? new VhostUserClient(new Connection(stream), options)
      : await VhostUserClient.connect(this.socketPath, { ...options, connect: { timeoutMs: this.timeoutMs } });
    // A broken client is a finding the check reports; the event itself needs no listener.
    client.on('disconnect', (e) => this.evidence.add(`x ${e.code}: ${e.message}`));
    return this.own(client);
  }

  async negotiated(options?: NegotiateOptions): Promise<{ client: VhostUserClient; n: Negotiated }> {
    const client = await this.client();
    return { client, n: await client.negotiate(options) };
  }

  async raw(): Promise<RawSession> {
    this.checkOpen();
    this.connections++;
    const stream = await this.accepted();
    return this.own(await RawSession.open(this.socketPath, this.evidence, this.timeoutMs, stream ?? undefined));
  }

  /** Server mode: the back-end's next connection (null in client mode). */
  private async accepted(): Promise<UnixStream | null> {
    const l = this.target.listener;
    if (!l) return null;
    return l.accept(this.target.acceptTimeoutMs ?? 5000);
  }

  memory(options: GuestMemoryOptions): GuestMemory {
    this.checkOpen();
    return this.own(GuestMemory.create(options));
  }

  eventFd(): EventFd {
    this.checkOpen();
    return this.own(new EventFd());
  }

  own<T extends { close(): void }>(resource: T): T {
    if (this.closed) {
      resource.close();
      this.checkOpen();
    }
    this.owned.push(resource);
    return resource;
  }

  sleep(ms: number): Promise<void> {
    this.checkOpen();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        if (this.closed) reject(overrun());
        else resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  async until(predicate: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (predicate()) return true;
      if (Date.now() >= deadline) return false;
      await this.sleep(Math.min(5, Math.max(1, deadline - Date.now())));
    }
  }

  /** Closes what the check opened, newest first, and ends pending sleeps. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.owned.splice(0).reverse()) {
      try {
        r.close();
      } catch {
        // one failed close must not keep the others open
      }
    }
    for (const wake of [...this.sleepers]) wake();
  }

  private checkOpen(): void {
    if (this.closed) throw overrun();
  }
}

function overrun(): VhostUserError {
  return new VhostUserError('VHOST_TIMEOUT', 'the check ran past its deadline');
}
