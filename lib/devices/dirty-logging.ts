/**
 * Dirty-page logging of a running device, the way QEMU's vhost_dev_set_log does
 * it when a migration begins (vhost-user.rst, "Migration"): a log covering all
 * of guest memory, one bit per 4 KiB page, shared as a memfd (SET_LOG_BASE,
 * LOG_SHMFD); VHOST_F_LOG_ALL set with SET_FEATURES; every ring switched to
 * logging where the device writes completions (SET_VRING_ADDR with
 * VHOST_VRING_F_LOG). Both changes are allowed on running rings. A restart
 * (reconnect, stop/start) sets the same log up again as part of the start
 * sequence (VhostDevice).
 */
import type { VhostUserClient } from '../client/vhost-user-client.js';
import { VhostUserError } from '../errors.js';
import { DirtyLog } from '../memory/dirty-log.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { bit, VirtioFeature } from '../protocol/constants.js';
import { ringAddr, type DeviceQueue, type PackedLogAddr } from './vring-setup.js';

/** What logging needs of the device: the rings, their memory, the features the device runs with. @internal */
export interface LoggedDevice {
  readonly memory: GuestMemory;
  readonly queues: readonly DeviceQueue[];
  readonly features: bigint;
}

/** @internal */
export class DirtyLogging {
  private log: DirtyLog | null = null;
  /** Where packed rings are told to log (see PackedLogAddr). */
  packedLogAddr: PackedLogAddr = 'descriptor-ring';

  /** The log while logging is on, else null. */
  get active(): DirtyLog | null {
    return this.log;
  }

  /** Creates the log and turns logging on on `client`; on failure nothing is left behind. */
  async start(client: VhostUserClient, device: LoggedDevice, packedLogAddr: PackedLogAddr = 'descriptor-ring'): Promise<void> {
    if (this.log) return;
    this.packedLogAddr = packedLogAddr;
    this.log = DirtyLog.create(Math.max(...device.memory.regions.map((r) => r.guestPhysAddr + r.size)));
    try {
      await this.apply(client, device, true);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Pages written since the last sync, ascending; their bits cleared atomically. */
  sync(): number[] {
    if (!this.log) throw new VhostUserError('VHOST_INVALID_STATE', 'dirty logging is not on (startDirtyLog)');
    return this.log.sync();
  }

  /** Turns logging off on `client` (rings unlogged, LOG_ALL cleared), releases the log, returns the pages dirtied since the last sync. */
  async stop(client: VhostUserClient, device: LoggedDevice): Promise<number[]> {
    if (!this.log) return [];
    await this.apply(client, device, false);
    const pages = this.sync();
    this.close();
    return pages;
  }

  /** Releases the log. Idempotent. */
  close(): void {
    this.log?.close();
    this.log = null;
  }

  /** On: log base, LOG_ALL, logged rings; off: the reverse. */
  private async apply(client: VhostUserClient, device: LoggedDevice, on: boolean): Promise<void> {
    const log = this.log!;
    if (on) await client.setLogBase(log.fd, BigInt(log.size));
    await client.setFeatures(on ? device.features | bit(VirtioFeature.VHOST_F_LOG_ALL) : device.features);
    for (const q of device.queues) await client.setVringAddr(ringAddr(device.memory, q.vq, on, this.packedLogAddr));
  }
}
