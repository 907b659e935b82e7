import type { RingKind } from '../../lib/devices/net/virtio-net.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import type { Virtqueue, VirtqueueOptions } from '../../lib/virtqueue/virtqueue.js';

/** Virtqueue constructors by ring kind, for tests parametrized over both layouts. */
export const ringFactories: Partial<Record<RingKind, (kind: RingKind, o: VirtqueueOptions) => Virtqueue>> = {
  split: (_kind, o) => new SplitVirtqueue(o),
  packed: (_kind, o) => new PackedVirtqueue(o),
};
