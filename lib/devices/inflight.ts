/**
 * The inflight area a device keeps across back-end restarts (vhost-user.rst,
 * "Inflight I/O tracking"; QEMU's vhost_dev_get_inflight / vhost_dev_set_inflight
 * as vhost-user-blk uses them): asked for once with GET_INFLIGHT_FD, handed to
 * every back-end that serves the device with SET_INFLIGHT_FD at each start, so a
 * restarted back-end finds in it the requests the crashed one had taken and not
 * completed. The front-end never reads it; it only keeps the fd alive.
 */
import type { InflightArea, VhostUserClient } from '../client/vhost-user-client.js';
import { closeFd } from '../native/libc.js';
import { ProtocolFeature } from '../protocol/constants.js';

/** @internal */
export class InflightKeeper {
  private held: InflightArea | null = null;
  /** GET_INFLIGHT_FD requests sent over the device's life. */
  gets = 0;

  /** The area, once a back-end allocated one. */
  get area(): InflightArea | null {
    return this.held;
  }

  /**
   * At a start on `client`: gets the area if none is held yet, then hands it over.
   * Returns whether the back-end now has it: false when INFLIGHT_SHMFD is not
   * negotiated on this connection, or the back-end allocated nothing (size 0).
   * Must come after SET_FEATURES: the layout depends on VIRTIO_F_RING_PACKED.
   */
  async share(client: VhostUserClient, numQueues: number, queueSize: number): Promise<boolean> {
    if (!client.hasProtocolFeature(ProtocolFeature.INFLIGHT_SHMFD)) return false;
    if (this.held === null) {
      this.gets++;
      const area = await client.getInflightFd(numQueues, queueSize);
      // Nothing allocated: ask again at the next start, as QEMU does while it has no area mapped.
      if (area.fd < 0) return false;
      this.held = area;
    }
    await client.setInflightFd(this.held);
    return true;
  }

  /** Closes the area's fd. Idempotent. */
  close(): void {
    if (this.held !== null && this.held.fd >= 0) closeFd(this.held.fd);
    this.held = null;
  }
}
