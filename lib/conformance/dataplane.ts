/**
 * One unit of device work, whatever the device: for net a frame sent on TX that
 * must come back on RX (the back-end loops or forwards it: the reference
 * loopback, testpmd --forward-mode=io), for blk a 512-byte read of queue 0.
 * Ring-state checks ask "does work complete now?" without caring which device
 * they drive.
 */
import type { Negotiated, VhostUserClient } from '../client/vhost-user-client.js';
import { fail } from './check.js';
import type { CheckContext } from './context.js';
import { BlkPath, BlkRequestType, NetPath, type RingSetupOptions, type Rings } from './datapath.js';

export interface DataPlane {
  readonly kind: 'net' | 'blk';
  readonly client: VhostUserClient;
  readonly rings: Rings;
  readonly net: NetPath | null;
  readonly blk: BlkPath | null;
  /** The ring the device consumes work from: net TX (1), blk request queue (0). */
  readonly inputRing: number;
  /** Submits work tagged `tag`; the returned predicate says whether it has completed. */
  attempt(tag: number): () => boolean;
  /** Submits work and waits up to `ms` for it to complete. */
  roundTrip(tag: number, ms: number): Promise<boolean>;
}

/** How long work gets to complete when it should (loopback and forwarding take microseconds). */
export const WORK_MS = 3000;
/** How long the suite watches for work that must not happen (a stopped or disabled ring). */
export const QUIET_MS = 300;

export async function openDataPlane(
  ctx: CheckContext,
  options: RingSetupOptions & { client?: VhostUserClient; n?: Negotiated } = {},
): Promise<DataPlane> {
  const { client, n } = options.client && options.n ? { client: options.client, n: options.n } : await ctx.negotiated();
  if (ctx.device === 'net') {
    const net = await NetPath.open(ctx, client, n, options);
    const plane: DataPlane = {
      kind: 'net',
      client,
      rings: net.rings,
      net,
      blk: null,
      inputRing: 1,
      attempt(tag) {
        if (!net.send(tag)) fail('the TX ring is full: the back-end consumes nothing');
        return () => (net.pollRx(), net.reapTx(), net.received.includes(tag));
      },
      roundTrip: (tag, ms) => ctx.until(plane.attempt(tag), ms),
    };
    return plane;
  }
  if (ctx.device === 'blk') {
    const blk = await BlkPath.open(ctx, client, n, options);
    const plane: DataPlane = {
      kind: 'blk',
      client,
      rings: blk.rings,
      net: null,
      blk,
      inputRing: 0,
      attempt(tag) {
        const token = blk.submit(BlkRequestType.IN, BigInt(tag % 64), 512);
        return () => (blk.poll(), blk.completed.get(token)?.status === 0);
      },
      roundTrip: (tag, ms) => ctx.until(plane.attempt(tag), ms),
    };
    return plane;
  }
  return fail(`no data path for device '${ctx.device}'`);
}
