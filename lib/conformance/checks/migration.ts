/**
 * The migration group: what a live migration silently depends on. Each check
 * runs the data path with a LOG_SHMFD dirty log (log.ts) and looks at the log
 * bits and guest memory the back-end leaves behind: a page written but not
 * logged, a log written after logging stopped, or a write after GET_VRING_BASE
 * is a guest corrupted on the destination.
 */
import { bit, hasBit, ProtocolFeature, VHOST_LOG_PAGE, VirtioFeature } from '../../protocol/constants.js';
import type { Negotiated, VhostUserClient } from '../../client/vhost-user-client.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import { MEMORY_SIZE, QUEUE_SIZE } from '../datapath.js';
import { openDataPlane, QUIET_MS, WORK_MS, type DataPlane } from '../dataplane.js';
import { logView, type LogView } from './log.js';

/** One bit per 4 KiB page of the 4 MiB guest: 128 bytes; a page of log leaves room. */
const LOG_BYTES = 4096;
/**
 * Rings start at GPA 0x10000, not 0: a packed ring's log_guest_addr is its descriptor ring, and
 * DPDK 22.11 reads a log_guest_addr of 0 as "failed to map" and never starts the ring.
 */
const RING_OFFSET = 0x10000;

function requireLogging(n: Negotiated): void {
  if (!hasBit(n.protocolFeatures, ProtocolFeature.LOG_SHMFD)) skip('protocol feature LOG_SHMFD not offered');
  if (!hasBit(n.features, VirtioFeature.VHOST_F_LOG_ALL)) skip('feature VHOST_F_LOG_ALL (bit 26) not offered');
}

/** A data plane with VHOST_F_LOG_ALL, rings with VHOST_VRING_F_LOG and a log set by SET_LOG_BASE. */
async function loggingPlane(
  ctx: CheckContext,
  ring: 'split' | 'packed' = 'split',
  session?: { client: VhostUserClient; n: Negotiated },
): Promise<{ client: VhostUserClient; plane: DataPlane; log: LogView }> {
  const { client, n } = session ?? (await ctx.negotiated());
  requireLogging(n);
  const plane = await openDataPlane(ctx, { client, n, extraFeatures: bit(VirtioFeature.VHOST_F_LOG_ALL), logUsed: true, ring, ringOffset: RING_OFFSET });
  const log = logView(ctx, LOG_BYTES);
  await client.setLogBase(log.memory.regions[0]!.fd, BigInt(LOG_BYTES), 0n);
  return { client, plane, log };
}

/** Completes work `tag` and, for net, takes back the TX buffer too (so no completion is still on its way). */
async function work(ctx: CheckContext, plane: DataPlane, tag: number): Promise<void> {
  if (!(await plane.roundTrip(tag, WORK_MS))) fail(`work ${tag} did not complete`);
  if (plane.net) {
    const tx = plane.rings.queues[1]!;
    await ctx.until(() => (plane.net!.reapTx(), tx.freeCount === QUEUE_SIZE), WORK_MS);
  }
}

/** The pages work `tag` made the back-end write: its buffers and each ring's completion area. */
function writtenBy(plane: DataPlane, tag: number): [string, number][] {
  const out: [string, number][] = [];
  for (const q of plane.rings.queues) {
    const gpa = q.packed ? q.addresses.desc : q.addresses.device;
    out.push([`ring ${q.index} ${q.packed ? 'descriptor ring' : 'used ring'} (GPA 0x${gpa.toString(16)})`, gpa]);
  }
  if (plane.net) {
    const slot = plane.net.slots[plane.net.received.indexOf(tag)]!;
    out.push([`RX buffer (GPA 0x${plane.net.rxSlot(slot).toString(16)})`, plane.net.rxSlot(slot)]);
  } else {
    out.push(['read data buffer (GPA 0x200000)', 0x200000], ['status byte (GPA 0x300000)', 0x300000]);
  }
  return out;
}

/** Waits a moment for `log` to hold every page of `written`; returns the ones it lacks. */
async function unlogged(ctx: CheckContext, log: LogView, written: [string, number][]): Promise<string[]> {
  // A back-end may set bits just after it publishes a completion.
  await ctx.until(() => written.every(([, gpa]) => log.dirty(gpa)), 200);
  return written.filter(([, gpa]) => !log.dirty(gpa)).map(([what]) => what);
}

function pageList(pages: number[]): string {
  const shown = pages.slice(0, 8).map((p) => `0x${(p * VHOST_LOG_PAGE).toString(16)}`);
  return `${pages.length} page(s) at GPA ${shown.join(', ')}${pages.length > 8 ? ', ...' : ''}`;
}

export const migrationChecks: Check[] = [
  {
    id: 'migration.log-covers-writes',
    rule: "vhost-user.rst, 'Migration': \"All the modifications to memory pointed by vring 'descriptor' should be marked. Modifications to 'used' vring should be marked if VHOST_VRING_F_LOG is part of ring's flags\"",
    title: 'every page the back-end writes is logged: buffers, the used ring of each ring and (packed rings, when offered) the descriptor ring',
    devices: ['net', 'blk'],
    timeoutMs: 10_000,
    async run(ctx) {
      const session = await ctx.negotiated();
      const packed = hasBit(session.n.features, VirtioFeature.VIRTIO_F_RING_PACKED);
      const { plane, log } = await loggingPlane(ctx, packed ? 'packed' : 'split', session);
      await work(ctx, plane, 1);
      const written = writtenBy(plane, 1);
      const missing = await unlogged(ctx, log, written);
      expectThat(missing.length === 0, `${packed ? 'packed' : 'split'} rings: pages written but not logged: ${missing.join(', ')} (${log.pages().length} page bits set in all)`);
      return `${packed ? 'packed' : 'split'} rings: ${written.map(([w]) => w).join(', ')} logged`;
    },
  },
  {
    id: 'migration.log-all-clear-stops',
    rule: "vhost-user.rst, 'Migration': \"To start/stop logging of data/used ring writes, the front-end may send messages VHOST_USER_SET_FEATURES with VHOST_F_LOG_ALL and VHOST_USER_SET_VRING_ADDR with VHOST_VRING_F_LOG in ring's flags set to 1/0, respectively\"",
    title: 'after SET_FEATURES without VHOST_F_LOG_ALL and rings re-addressed without VHOST_VRING_F_LOG, traffic sets no bit in the old log',
    devices: ['net', 'blk'],
    timeoutMs: 10_000,
    async run(ctx) {
      const { client, plane, log } = await loggingPlane(ctx);
      await work(ctx, plane, 1);
      const before = log.pages().length;
      if (before === 0) fail('nothing was logged while logging was on (see log.dirty-pages)');
      // Stop logging the way QEMU does (vhost_dev_set_log): features first, then every ring's address.
      await client.setFeatures(plane.rings.features & ~bit(VirtioFeature.VHOST_F_LOG_ALL));
      const m = plane.rings.memory;
      for (const q of plane.rings.queues) {
        await client.setVringAddr({ index: q.index, descUserAddr: m.userAddr(q.addresses.desc), availUserAddr: m.userAddr(q.addresses.driver), usedUserAddr: m.userAddr(q.addresses.device) });
      }
      log.clear();
      for (let tag = 2; tag <= 4; tag++) await work(ctx, plane, tag);
      await ctx.sleep(50);
      const after = log.pages();
      expectThat(after.length === 0, `logging went on after VHOST_F_LOG_ALL was cleared: ${pageList(after)} marked by 3 more completions`);
      return `${before} page bits set while logging, none after clearing VHOST_F_LOG_ALL and 3 more completions`;
    },
  },
  {
    id: 'migration.log-base-switch',
    rule: "vhost-user.rst, 'Migration': \"The size of the log is supplied as part of VhostUserMsg which should be large enough to cover all known guest addresses\"; QEMU sends a new, larger log (SET_LOG_BASE) when guest memory grows while logging",
    title: 'SET_LOG_BASE with a new, larger log while running loses nothing: pages written after the switch are in the new log',
    devices: ['net', 'blk'],
    timeoutMs: 10_000,
    async run(ctx) {
      const { client, plane, log } = await loggingPlane(ctx);
      await work(ctx, plane, 1);
      const bigger = logView(ctx, 2 * LOG_BYTES);
      await client.setLogBase(bigger.memory.regions[0]!.fd, BigInt(bigger.size), 0n);
      log.clear();
      await work(ctx, plane, 2);
      const written = writtenBy(plane, 2);
      const missing = await unlogged(ctx, bigger, written);
      expectThat(missing.length === 0, `pages written after SET_LOG_BASE switched logs, missing from the new log: ${missing.join(', ')} (new log: ${bigger.pages().length} bits; old log: ${pageList(log.pages())})`);
      return `after the switch to a ${bigger.size}-byte log: ${written.map(([w]) => w).join(', ')} logged there; old log: ${log.pages().length} bits`;
    },
  },
  {
    id: 'migration.quiet-after-stop',
    rule: "vhost-user.rst, 'Starting and stopping rings': \"... and stop ring upon receiving VHOST_USER_GET_VRING_BASE\"; a migration copies guest memory for the last time once the rings are stopped",
    title: 'nothing is written into guest memory after GET_VRING_BASE, even with new work made available and kicked',
    devices: ['net', 'blk'],
    timeoutMs: 10_000,
    async run(ctx) {
      const { client, n } = await ctx.negotiated();
      // The rule needs no log, but the group runs as a migration does: logging on when offered.
      const logging = hasBit(n.protocolFeatures, ProtocolFeature.LOG_SHMFD) && hasBit(n.features, VirtioFeature.VHOST_F_LOG_ALL);
      const plane = logging ? (await loggingPlane(ctx, 'split', { client, n })).plane : await openDataPlane(ctx, { client, n, ringOffset: RING_OFFSET });
      await work(ctx, plane, 1);
      for (const q of plane.rings.queues) await client.getVringBase(q.index);
      const m = plane.rings.memory;
      // The driver's own writes (new work, its avail entries) come before the snapshot: every byte
      // that changes after it is the device's.
      plane.attempt(2);
      if (plane.net) plane.rings.kick(0);
      const snapshot = m.bytes(0, MEMORY_SIZE).slice();
      await ctx.sleep(QUIET_MS);
      const now = m.bytes(0, MEMORY_SIZE);
      const changed: string[] = [];
      for (let i = 0; i < MEMORY_SIZE && changed.length < 8; i++) {
        if (now[i] === snapshot[i]) continue;
        const start = i;
        while (i + 1 < MEMORY_SIZE && now[i + 1] !== snapshot[i + 1]) i++;
        changed.push(`GPA 0x${start.toString(16)}+${i - start + 1}`);
      }
      expectThat(changed.length === 0, `guest memory written after GET_VRING_BASE of every ring: ${changed.join(', ')}`);
      return `${QUIET_MS} ms after GET_VRING_BASE with work made available and kicked: no byte the device owns changed${logging ? ' (logging on)' : ''}`;
    },
  },
];
