/**
 * Ring set-up for the device layer: building a device's virtqueues in guest
 * memory and programming them into a back-end (vhost-user.rst, "Starting and
 * stopping rings"; QEMU's vhost_virtqueue_start). Knows nothing of any device.
 */
import type { VhostUserClient, VringAddrOptions } from '../client/vhost-user-client.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VHOST_VRING_F_LOG } from '../protocol/constants.js';
import type { EventFd } from '../transport/eventfd.js';
import { PackedVirtqueue } from '../virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../virtqueue/split-queue.js';
import type { Virtqueue, VirtqueueOptions } from '../virtqueue/virtqueue.js';

/** Ring layout: split (virtio 1.2 §2.7) or packed (§2.8, needs VIRTIO_F_RING_PACKED). */
export type RingKind = 'split' | 'packed';

/** One ring of a device: its virtqueue and the eventfds the back-end is given for it. */
export interface DeviceQueue {
  /** The driver side of the ring, in the device's guest memory. */
  readonly vq: Virtqueue;
  /** The driver signals it after making buffers available (SET_VRING_KICK). */
  readonly kick: EventFd;
  /** The back-end signals it after using buffers (SET_VRING_CALL). */
  readonly call: EventFd;
}

/** @internal */
export const PAGE = 4096;

/** @internal */
export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Bytes one ring of `kind` takes in guest memory, page-aligned so no two rings share a page. @internal */
export function ringBytes(kind: RingKind, size: number, indirectMax = 0): number {
  return alignUp(kind === 'packed' ? PackedVirtqueue.footprint(size, indirectMax) : SplitVirtqueue.footprint(size, indirectMax), PAGE);
}

/** The default virtqueue factory: split or packed per `kind`. @internal */
export function defaultCreateQueue(kind: RingKind, options: VirtqueueOptions): Virtqueue {
  return kind === 'packed' ? new PackedVirtqueue(options) : new SplitVirtqueue(options);
}

/**
 * What a packed ring's log_guest_addr points at. vhost-user.rst only says
 * "log_guest_addr is the guest address of the used ring" (written for split
 * rings). 'descriptor-ring': the descriptor ring, where packed used entries are
 * written back, and which matches how DPDK logs them (log_guest_addr + 16 *
 * slot). 'qemu': the device event suppression area, what QEMU 7.2 passes
 * (vhost_virtqueue_set_addr uses the "used" area, which for packed rings is the
 * device area); DPDK's log offsets then land past it.
 */
export type PackedLogAddr = 'descriptor-ring' | 'qemu';

/**
 * SET_VRING_ADDR for `vq`; `logged`: VHOST_VRING_F_LOG with log_guest_addr where
 * the device writes completions: the used ring (split, as QEMU sets it); for
 * packed rings per `packedLogAddr` (default the descriptor ring). @internal
 */
export function ringAddr(memory: GuestMemory, vq: Virtqueue, logged: boolean, packedLogAddr: PackedLogAddr = 'descriptor-ring'): VringAddrOptions {
  const a = vq.addresses;
  const logGuestAddr = vq.packed && packedLogAddr === 'descriptor-ring' ? a.desc : a.device;
  return {
    index: vq.index,
    descUserAddr: memory.userAddr(a.desc),
    availUserAddr: memory.userAddr(a.driver),
    usedUserAddr: memory.userAddr(a.device),
    ...(logged ? { flags: VHOST_VRING_F_LOG, logGuestAddr } : {}),
  };
}

/**
 * Programs every ring: size, addresses (logged or not), `base`, call and kick
 * eventfds. The back-end starts a ring at SET_VRING_KICK; enabling is separate
 * (see enableRings). @internal
 */
export async function programRings(
  client: VhostUserClient,
  queues: readonly DeviceQueue[],
  memory: GuestMemory,
  bases: readonly number[],
  logged: boolean,
  packedLogAddr: PackedLogAddr = 'descriptor-ring',
): Promise<void> {
  for (let i = 0; i < queues.length; i++) {
    const { vq, kick, call } = queues[i]!;
    await client.setVringNum(vq.index, vq.size);
    await client.setVringAddr(ringAddr(memory, vq, logged, packedLogAddr));
    await client.setVringBase(vq.index, bases[i]!);
    await client.setVringCall(vq.index, call.fd);
    await client.setVringKick(vq.index, kick.fd);
  }
}

/** Buffers between the resume position `base` and what the driver has published: processed again by the new device. @internal */
export function resumedCount(vq: Virtqueue, base: number): number {
  if (!vq.packed) return (vq.vringBase - base) & 0xffff;
  const size = vq.size;
  const pos = (b: number) => (b & 0x7fff) + (((b >>> 15) & 1) === 1 ? size : 0);
  return (pos(vq.vringBase) - pos(base) + 2 * size) % (2 * size);
}
