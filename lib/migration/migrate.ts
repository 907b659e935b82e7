/**
 * A live migration of one vhost-user device between two back-ends on this host,
 * done the way QEMU does it (migration/ram.c's precopy over hw/virtio/vhost.c's
 * dirty log), with every step checked:
 *
 * 1. Dirty logging on at the source (SET_LOG_BASE, VHOST_F_LOG_ALL, rings with
 *    VHOST_VRING_F_LOG; vhost-user.rst "Migration"), traffic running.
 * 2. Round 0 copies all of guest memory into the destination memory (memfds of
 *    its own, as on another host); then rounds of log sync and copy of the dirty
 *    pages until few pages are dirty or the round limit is hit.
 * 3. Switchover: the guest pauses (the driver writes nothing more); GET_VRING_BASE
 *    on every ring; the last sync and copy; the device state (DEVICE_STATE)
 *    saved; logging off; the driver's memory becomes the destination memory
 *    (GuestMemory.swapBacking: same addresses, the destination's memfds).
 * 4. The destination back-end: handshake, the same features, its state loaded,
 *    the destination memory table, every ring from the source's base, DRIVER_OK;
 *    SEND_RARP for net (RARP negotiated, no GUEST_ANNOUNCE). The guest resumes.
 * 5. Traffic runs on, the source memory is watched for late writes, and every
 *    frame or request is accounted for.
 */
import { VhostUserError } from '../errors.js';
import type { PackedLogAddr, RingKind } from '../devices/vhost-device.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { ProtocolFeature } from '../protocol/constants.js';
import type { VhostUserClient } from '../client/vhost-user-client.js';
import { loadDeviceState, saveDeviceState } from './device-state.js';
import type { DeviceStateReport, MigrationReport, RoundReport } from './report.js';
import { MigrationVerifier } from './verifier.js';
import type { InFlightReport, MigrationWorkload } from './workload.js';

/** How migrate() proceeds; every field has a default. */
export interface PrecopyOptions {
  /** Traffic before logging starts (ms, default 100). */
  warmupMs?: number;
  /** Traffic between two log syncs (ms, default 40). */
  roundMs?: number;
  /** Most rounds after the full copy before switching over anyway (default 8). */
  maxRounds?: number;
  /**
   * Switch over once the dirty pages of a round could be copied within this
   * time at the copy rate measured so far (QEMU's downtime-limit rule; default 5 ms).
   */
  downtimeLimitMs?: number;
  /** Or once a round had at most this many dirty pages (default 0: only the time rule). */
  maxDirtyPages?: number;
  /** At least this many rounds after the full copy (default 2). */
  minRounds?: number;
  /** Traffic on the destination before the checks end (ms, default 300); the source is watched meanwhile. */
  afterMs?: number;
  /** What packed rings get as log_guest_addr (default 'descriptor-ring', where DPDK and the reference back-end log; 'qemu' as QEMU 7.2). */
  packedLogAddr?: PackedLogAddr;
  /** Carry the back-end state with DEVICE_STATE when both back-ends offer it (default true). */
  deviceState?: boolean;
  /** Progress lines (rounds, switchover), e.g. to stderr. */
  onProgress?: (line: string) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Migrates the device of `workload` (running on its source back-end) to the
 * back-end listening at `target`, with verification; returns the report. The
 * workload's device runs on the destination afterwards (the caller closes it).
 */
export async function migrateWorkload(workload: MigrationWorkload, target: string, options: PrecopyOptions = {}): Promise<MigrationReport> {
  const device = workload.device;
  const progress = options.onProgress ?? (() => {});
  const packedLogAddr = options.packedLogAddr ?? 'descriptor-ring';
  if (!device.canLogDirty) {
    throw new VhostUserError('VHOST_FEATURE_NOT_NEGOTIATED', 'the source back-end cannot log dirty pages (VHOST_F_LOG_ALL and LOG_SHMFD are needed)', { request: 'SET_LOG_BASE' });
  }
  const source = device.memory;
  const destination = GuestMemory.createLike(source);
  let old: VhostUserClient | null = null;
  try {
    workload.start();
    await sleep(options.warmupMs ?? 100);
    const verifier = new MigrationVerifier(source, destination, workload.areas());
    const t0 = performance.now();
    const at = () => performance.now() - t0;
    const marks = { loggingOn: workload.submittedCount, switchover: 0 };
    await device.startDirtyLog({ packedLogAddr });
    // Writes before this sync are in the full copy below.
    device.syncDirtyLog();
    const c0 = performance.now();
    const rounds: RoundReport[] = [{ round: 0, atMs: 0, switchover: false, ...verifier.copyAll() }];
    // The copy rate, from the full copy: what QEMU's bandwidth estimate is to its downtime rule.
    const msPerPage = (performance.now() - c0) / Math.max(1, rounds[0]!.copiedPages);
    rounds[0]!.atMs = at();
    progress(`round 0: copied all ${rounds[0]!.copiedPages} pages`);
    const maxRounds = options.maxRounds ?? 8;
    const minRounds = options.minRounds ?? 2;
    const maxDirty = options.maxDirtyPages ?? 0;
    const limitMs = options.downtimeLimitMs ?? 5;
    for (let n = 1; n <= maxRounds; n++) {
      await sleep(options.roundMs ?? 40);
      const r = verifier.round(device.syncDirtyLog(), false);
      rounds.push({ round: n, atMs: at(), switchover: false, ...r });
      const expectMs = r.dirtyPages * msPerPage;
      progress(`round ${n}: ${r.dirtyPages} dirty pages (${r.loggedPages} logged by the back-end, ${r.driverPages} by the driver), ${r.copiedPages} copied; ~${expectMs.toFixed(2)} ms to copy`);
      if (n >= minRounds && (r.dirtyPages <= maxDirty || expectMs <= limitMs)) break;
    }

    // Switchover.
    workload.pause();
    marks.switchover = workload.submittedCount;
    const tPause = performance.now();
    let inFlight: InFlightReport = { resumedOnDestination: [], takenNotDelivered: 0 };
    let bases: number[] = [];
    let state: Uint8Array | null = null;
    let afterCopy = 0;
    const parts = { stopRingsMs: 0, lastCopyMs: 0, saveStateMs: 0, startDestinationMs: 0 };
    let tStart = 0;
    const deviceState: DeviceStateReport = { transferred: false, bytes: 0, reason: 'disabled' };
    const wantState = options.deviceState ?? true;
    const hand = await workload.handOver(target, {
      keepOld: true,
      afterStop: async (b, oldClient) => {
        parts.stopRingsMs = performance.now() - tPause;
        const c0 = performance.now();
        bases = [...b];
        const r = verifier.round(device.syncDirtyLog(), true);
        rounds.push({ round: rounds.length, atMs: at(), switchover: true, ...r });
        afterCopy = verifier.differingPages();
        verifier.takeSnapshot();
        // From here the driver's views show the destination memory; `destination` holds the source's
        // memfds. Done before any await, so no driver write (a blk completion) falls between copy and swap.
        source.swapBacking(destination);
        parts.lastCopyMs = performance.now() - c0;
        inFlight = workload.switchover(b);
        const s0 = performance.now();
        if (wantState && oldClient.hasProtocolFeature(ProtocolFeature.DEVICE_STATE)) state = await saveDeviceState(oldClient);
        else deviceState.reason = wantState ? 'the source does not offer DEVICE_STATE' : 'disabled';
        parts.saveStateMs = performance.now() - s0;
        tStart = performance.now();
      },
      beforeStart: async (client) => {
        if (state === null) return;
        if (!client.hasProtocolFeature(ProtocolFeature.DEVICE_STATE)) {
          deviceState.reason = 'the destination does not offer DEVICE_STATE';
          return;
        }
        await loadDeviceState(client, state);
        deviceState.transferred = true;
        deviceState.bytes = state.length;
        delete deviceState.reason;
      },
    });
    old = hand.old;
    parts.startDestinationMs = performance.now() - tStart;
    workload.resume();
    const guestPausedMs = performance.now() - tPause;
    const totalMs = at();
    const switchRound = rounds[rounds.length - 1]!;
    progress(`switchover: ${switchRound.dirtyPages} dirty pages copied, downtime ${hand.ms.toFixed(1)} ms; running on the destination`);

    // Outside the downtime: plain guest RAM, which the switchover round did not compare.
    const plainUnlogged = verifier.sweepPlainPages();
    if (plainUnlogged.length > 0) progress(`${plainUnlogged.length} pages of plain guest RAM differ from the source: unlogged writes`);
    await sleep(options.afterMs ?? 300);
    const quiet = verifier.quietCheck();
    const exactlyOnce = await workload.finish(marks);
    const unlogged = verifier.unlogged();
    const loggedUnchanged = verifier.loggedUnchanged();
    const completeness = {
      ok: unlogged.length === 0 && afterCopy === 0,
      unlogged,
      differingAtSwitchover: verifier.differingAtSwitchover,
      differingAfterCopy: afterCopy,
      pages: verifier.pageCount,
    };
    const loggedForeign = verifier.loggedForeign();
    const precision = { ok: loggedForeign.length === 0, loggedPages: verifier.loggedCount, loggedForeign, loggedUnchanged };
    const report: MigrationReport = {
      verified: completeness.ok && precision.ok && quiet.length === 0 && exactlyOnce.ok,
      device: workload.kind,
      ring: device.ring,
      packedLogAddr,
      memoryBytes: source.totalSize,
      unloggedPages: unlogged.map((f) => f.page),
      downtimeMs: round1(hand.ms),
      downtimeParts: { stopRingsMs: round1(parts.stopRingsMs), lastCopyMs: round1(parts.lastCopyMs), saveStateMs: round1(parts.saveStateMs), startDestinationMs: round1(parts.startDestinationMs) },
      guestPausedMs: round1(guestPausedMs),
      totalMs: round1(totalMs),
      rounds: rounds.map((r) => ({ ...r, atMs: round1(r.atMs) })),
      bytesCopied: rounds.reduce((n, r) => n + r.bytes, 0),
      bases,
      inFlight,
      rarp: { sent: hand.rarp, framesSeen: workload.announcements },
      deviceState,
      verification: {
        completeness,
        precision,
        quiet: { ok: quiet.length === 0, watchedMs: options.afterMs ?? 300, changed: quiet },
        exactlyOnce,
      },
    };
    return report;
  } finally {
    old?.close();
    destination.close();
  }
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Kept for reports: the ring layout type. */
export type { RingKind };

/** What {@link migrate} opens and how it migrates. */
export interface MigrateOptions extends PrecopyOptions {
  /** The source back-end's socket. */
  from: string;
  /** The destination back-end's socket. */
  to: string;
  /** The device (default 'net'). */
  device?: 'net' | 'blk';
  /** Ring layout (default 'split'). */
  ring?: RingKind;
  /** Entries per ring (default 256). */
  queueSize?: number;
  /** Guest memory of at least this many bytes (default: what the device needs, 2 MiB and up). */
  memorySize?: number;
  /** How long to keep trying to connect to the source (ms, default 5000). */
  connectTimeoutMs?: number;
}

/**
 * Opens the device on `from`, runs traffic (net) or I/O (blk) on it, migrates
 * it to `to` while that runs (see migrateWorkload), and closes it. The report
 * says whether every verification held.
 */
export async function migrate(options: MigrateOptions): Promise<MigrationReport> {
  const workload = await openWorkload(options);
  try {
    return await migrateWorkload(workload, options.to, options);
  } finally {
    workload.close();
  }
}

async function openWorkload(o: MigrateOptions): Promise<MigrationWorkload> {
  const common = { ring: o.ring ?? 'split', queueSize: o.queueSize ?? 256, memorySize: o.memorySize, connect: { timeoutMs: o.connectTimeoutMs ?? 5000 } } as const;
  if ((o.device ?? 'net') === 'net') {
    const { VirtioNet } = await import('../devices/net/virtio-net.js');
    const { NetWorkload } = await import('./net-workload.js');
    return new NetWorkload(await VirtioNet.open(o.from, common));
  }
  const { BlkWorkload } = await import('./blk-workload.js');
  return BlkWorkload.open(o.from, common);
}
