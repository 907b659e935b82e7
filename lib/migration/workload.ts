/**
 * What a migration runs on the device while it migrates: the guest's side.
 * Traffic (net) or I/O (blk) goes on through the precopy rounds, pauses for
 * the switchover (the guest is stopped: the driver writes nothing), resumes
 * on the destination, and in the end says whether every frame or request
 * completed exactly once.
 */
import type { VhostUserClient } from '../client/vhost-user-client.js';
import type { VhostDevice } from '../devices/vhost-device.js';
import type { MemoryArea } from './memory-map.js';

/** The exactly-once check (verification d). */
export interface ExactlyOnceReport {
  /** Whether every item completed exactly once (losses allowed only where the report says why). */
  ok: boolean;
  /** Frames sent or requests submitted. */
  submitted: number;
  /** Distinct frames received or requests completed. */
  completed: number;
  /** Items that came back more than once. */
  duplicates: number;
  /** Items that never came back. */
  lost: number;
  /** Of `lost`, those allowed: in flight at switchover where the device semantics permit a loss. */
  lostInFlight: number;
  /** The first lost items not allowed (sequence numbers). */
  unexpectedLosses: number[];
  /** Lost items as ranges [first, last] (at most 20), to set beside the marks. */
  lostRanges: [number, number][];
  /** Items submitted when dirty logging went on and when the guest paused for the switchover. */
  marks: WorkloadMarks;
  /** Why losses were allowed or not (the rule applied). */
  rule: string;
}

/** Items submitted by two moments of a migration (sequence numbers below were handed to the device). */
export interface WorkloadMarks {
  /** When dirty logging went on. */
  loggingOn: number;
  /** When the guest paused for the switchover. */
  switchover: number;
}

/** What a workload's hand-over did. */
export interface WorkloadHandOver {
  /** From the first GET_VRING_BASE to the destination running. */
  ms: number;
  /** Whether SEND_RARP went to the destination. */
  rarp: boolean;
  /** The source's connection, still open (keepOld), for the caller to close. */
  old: VhostUserClient | null;
}

/** What was in flight when the source stopped. */
export interface InFlightReport {
  /** Per ring: buffers made available that the source had not taken yet, handed to the destination (resumed from the base). */
  resumedOnDestination: number[];
  /** Items the source had taken and completed (TX frames) but not delivered back: the candidates for a loss. */
  takenNotDelivered: number;
  /** blk: requests submitted and not yet seen completed by the driver at the switchover (the source completed them while draining). */
  outstanding?: number;
}

/** A device and the traffic or I/O on it, as migrate() drives it. */
export interface MigrationWorkload {
  /** The device kind. */
  readonly kind: 'net' | 'blk';
  /** The device layer under the driver. */
  readonly device: VhostDevice;
  /** What lives where in guest memory. */
  areas(): MemoryArea[];
  /** Starts the traffic or I/O; it runs in the background until pause(). */
  start(): void;
  /** Stops every driver write (no new buffers, no re-posting) and returns once stopped. */
  pause(): void;
  /** Resumes after the switchover, on the destination. */
  resume(): void;
  /** After GET_VRING_BASE on every ring: records what was in flight, from the bases. */
  switchover(bases: readonly number[]): InFlightReport;
  /** Migrates the device to `target` (device-specific steps such as SEND_RARP); see VhostDevice.handOver. */
  handOver(target: string, steps: WorkloadHandOverSteps): Promise<WorkloadHandOver>;
  /** Stops submitting, waits for what is outstanding (bounded), and judges exactly-once; `marks` are put in the report. */
  finish(marks: WorkloadMarks): Promise<ExactlyOnceReport>;
  /** Items submitted so far (sequence numbers below this were handed to the device). */
  readonly submittedCount: number;
  /** Items completed so far (for progress lines). */
  readonly completedCount: number;
  /** Announcements (RARP frames) seen by the driver. */
  readonly announcements: number;
  /** Releases the device. */
  close(): void;
}

/** The steps migrate() runs inside the hand-over (see HandOverSteps). */
export interface WorkloadHandOverSteps {
  /** After GET_VRING_BASE on the source, logging still on. */
  afterStop: (bases: readonly number[], old: VhostUserClient) => Promise<void>;
  /** On the destination before its memory and rings (device state load). */
  beforeStart: (client: VhostUserClient) => Promise<void>;
  /** Keep the source connection open (returned). */
  keepOld: boolean;
}
