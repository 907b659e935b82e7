/**
 * The report of one migration: the figures a user compares with QEMU's
 * (rounds, pages and bytes per round, downtime, total time) and every
 * verification with its evidence. `verified` is true only when all hold.
 */
import type { PageFinding, RoundCopy } from './verifier.js';
import type { ExactlyOnceReport, InFlightReport } from './workload.js';

/** One precopy round (round 0 is the full copy; the last one is the switchover's). */
export interface RoundReport extends RoundCopy {
  /** Round number. */
  round: number;
  /** When its copy ended, from the start of the migration. */
  atMs: number;
  /** The switchover round (after GET_VRING_BASE). */
  switchover: boolean;
}

/** The device state transfer (DEVICE_STATE). */
export interface DeviceStateReport {
  /** Whether the state went from the source to the destination. */
  transferred: boolean;
  /** Why not, when it did not. */
  reason?: string;
  /** Bytes of state. */
  bytes: number;
}

/** Everything migrate() found. */
export interface MigrationReport {
  /** Every verification held. */
  verified: boolean;
  /** net or blk. */
  device: 'net' | 'blk';
  /** Ring layout. */
  ring: 'split' | 'packed';
  /** log_guest_addr of packed rings. */
  packedLogAddr: 'qemu' | 'descriptor-ring';
  /** Bytes of guest memory. */
  memoryBytes: number;
  /** The back-end's pages written and never logged (guest page numbers): completeness failures. */
  unloggedPages: number[];
  /** From the first GET_VRING_BASE to the destination running (after DRIVER_OK and SEND_RARP). */
  downtimeMs: number;
  /** Where the downtime went: GET_VRING_BASE on every ring, the last sync and copy, saving the device state, starting the destination (connect, handshake, state load, memory, rings, DRIVER_OK, SEND_RARP). */
  downtimeParts: {
    /** Pausing the guest and GET_VRING_BASE on every ring. */
    stopRingsMs: number;
    /** The last log sync, comparison and copy, and the switch to the destination memory. */
    lastCopyMs: number;
    /** SET_DEVICE_STATE_FD (save) and CHECK_DEVICE_STATE on the source. */
    saveStateMs: number;
    /** Logging off on the source, then the destination: connect, handshake, state load, memory table, rings, DRIVER_OK, SEND_RARP. */
    startDestinationMs: number;
  };
  /** From the guest pausing to it running again on the destination. */
  guestPausedMs: number;
  /** From logging on to the destination running. */
  totalMs: number;
  /** Per round. */
  rounds: RoundReport[];
  /** Bytes copied in all rounds. */
  bytesCopied: number;
  /** Ring positions GET_VRING_BASE returned, by ring. */
  bases: number[];
  /** What was in flight at the switchover. */
  inFlight: InFlightReport;
  /** SEND_RARP sent to the destination; RARP frames the driver received. */
  rarp: {
    /** Sent. */
    sent: boolean;
    /** Frames of type RARP seen by the driver afterwards. */
    framesSeen: number;
  };
  /** DEVICE_STATE transfer. */
  deviceState: DeviceStateReport;
  /** The four checks. */
  verification: {
    /** (a) Every page the back-end wrote was logged (or copied anyway because the driver also changed it). */
    completeness: {
      /** Holds. */
      ok: boolean;
      /** Unlogged back-end writes, with what lives there. */
      unlogged: PageFinding[];
      /** Pages that differed from the destination in the switchover round, before its copy. */
      differingAtSwitchover: number;
      /** Pages that still differ after the switchover copy (0: byte for byte equal). */
      differingAfterCopy: number;
      /** Pages compared each round. */
      pages: number;
    };
    /** (b) Pages logged for writes that did not happen. */
    precision: {
      /** Holds: no page logged that holds nothing the device writes. */
      ok: boolean;
      /** Pages ever logged. */
      loggedPages: number;
      /** Logged, and nothing there is device-writable: the failures. */
      loggedForeign: PageFinding[];
      /** Logged, and never seen changed at a sync (evidence, not a failure: a write of the same bytes looks the same). */
      loggedUnchanged: PageFinding[];
    };
    /** (c) Nothing written into the source's memory after GET_VRING_BASE. */
    quiet: {
      /** Holds. */
      ok: boolean;
      /** How long the source was watched after the switchover. */
      watchedMs: number;
      /** Pages changed. */
      changed: PageFinding[];
    };
    /** (d) Every frame or request completed exactly once. */
    exactlyOnce: ExactlyOnceReport;
  };
}

/** One line per check, for the terminal. */
export function summarize(r: MigrationReport): string[] {
  const v = r.verification;
  const pages = (f: { page: number; areas: string[] }[]) => f.slice(0, 8).map((x) => `${x.page} (${x.areas.join('; ')})`).join(', ') + (f.length > 8 ? `, ... ${f.length} in all` : '');
  return [
    `migrated ${r.device} (${r.ring}${r.ring === 'packed' ? `, log at ${r.packedLogAddr}` : ''}): ${r.rounds.length} rounds, ${(r.bytesCopied / 1048576).toFixed(1)} MiB copied, downtime ${r.downtimeMs.toFixed(1)} ms (GET_VRING_BASE ${r.downtimeParts.stopRingsMs}, last copy ${r.downtimeParts.lastCopyMs}, state ${r.downtimeParts.saveStateMs}, destination start ${r.downtimeParts.startDestinationMs}), total ${r.totalMs.toFixed(0)} ms`,
    `completeness: ${v.completeness.ok ? 'ok' : `FAILED, unlogged pages ${pages(v.completeness.unlogged)}`}`,
    `precision: ${v.precision.ok ? `ok (${v.precision.loggedPages} pages logged, ${v.precision.loggedUnchanged.length} never seen changed)` : `FAILED, logged where the device writes nothing: ${pages(v.precision.loggedForeign)}`}`,
    `quiet: ${v.quiet.ok ? `ok (${v.quiet.watchedMs} ms watched)` : `FAILED, written after GET_VRING_BASE: ${pages(v.quiet.changed)}`}`,
    `exactly once: ${v.exactlyOnce.ok ? 'ok' : 'FAILED'} (${v.exactlyOnce.submitted} sent, ${v.exactlyOnce.completed} back, ${v.exactlyOnce.duplicates} duplicates, ${v.exactlyOnce.lost} lost of which ${v.exactlyOnce.lostInFlight} in flight at switchover)`,
    `device state: ${r.deviceState.transferred ? `${r.deviceState.bytes} bytes carried` : `not carried (${r.deviceState.reason})`}; RARP ${r.rarp.sent ? `sent, ${r.rarp.framesSeen} seen` : 'not sent'}`,
    r.verified ? 'verified' : 'NOT verified',
  ];
}
