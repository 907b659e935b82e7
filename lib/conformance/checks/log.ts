/** Dirty page logging for migration: SET_LOG_BASE with LOG_SHMFD, VHOST_F_LOG_ALL, VHOST_VRING_F_LOG. */
import { bit, hasBit, ProtocolFeature, VHOST_LOG_PAGE, VirtioFeature } from '../../protocol/constants.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';

/** A LOG_SHMFD dirty log the check owns, read the way vhost-user.rst 'Migration' lays it out. */
export interface LogView {
  /** The log's memfd-backed memory (regions[0].fd goes to SET_LOG_BASE). */
  readonly memory: GuestMemory;
  /** Its size in bytes. */
  readonly size: number;
  /** Whether the page holding `gpa` is marked dirty. */
  dirty(gpa: number): boolean;
  /** Every page marked dirty, ascending. */
  pages(): number[];
  /** Clears every bit. */
  clear(): void;
}

/** A new zeroed log of `size` bytes, unmapped when the check ends. */
export function logView(ctx: CheckContext, size: number): LogView {
  const memory = ctx.memory({ size });
  return {
    memory,
    size,
    dirty(gpa) {
      const page = Math.floor(gpa / VHOST_LOG_PAGE);
      return page >> 3 < size && (memory.bytes(page >> 3, 1)[0]! & (1 << (page & 7))) !== 0;
    },
    pages() {
      const out: number[] = [];
      const b = memory.bytes(0, size);
      for (let i = 0; i < size; i++) for (let j = 0; j < 8; j++) if (b[i]! & (1 << j)) out.push(i * 8 + j);
      return out;
    },
    clear() {
      memory.bytes(0, size).fill(0);
    },
  };
}

const LOG_BYTES = 4096;

export const logChecks: Check[] = [
  {
    id: 'log.dirty-pages',
    rule: "vhost-user.rst, 'Migration': \"All the modifications to memory pointed by vring 'descriptor' should be marked. Modifications to 'used' vring should be marked if VHOST_VRING_F_LOG is part of ring's flags\"; page = addr / VHOST_LOG_PAGE, log[page / 8] |= 1 << page % 8",
    title: 'with VHOST_F_LOG_ALL and a LOG_SHMFD log, the pages the back-end writes (buffers, used ring) are marked dirty',
    devices: ['net', 'blk'],
    timeoutMs: 10_000,
    async run(ctx) {
      const { client, n } = await ctx.negotiated();
      if (!hasBit(n.protocolFeatures, ProtocolFeature.LOG_SHMFD)) skip('protocol feature LOG_SHMFD not offered');
      if (!hasBit(n.features, VirtioFeature.VHOST_F_LOG_ALL)) skip('feature VHOST_F_LOG_ALL (bit 26) not offered');
      const plane = await openDataPlane(ctx, { client, n, extraFeatures: bit(VirtioFeature.VHOST_F_LOG_ALL), logUsed: true });
      const log = logView(ctx, LOG_BYTES);
      await client.setLogBase(log.memory.regions[0]!.fd, BigInt(LOG_BYTES), 0n);
      const dirty = (gpa: number) => log.dirty(gpa);
      const written: [string, number][] = [];
      if (!(await plane.roundTrip(1, WORK_MS))) fail('no work completed with logging on');
      const used0 = plane.rings.queues[0]!.addresses.device;
      written.push([`used ring 0 (GPA 0x${used0.toString(16)})`, used0]);
      if (plane.net) {
        const slot = plane.net.slots[plane.net.received.indexOf(1)]!;
        written.push([`RX buffer (GPA 0x${plane.net.rxSlot(slot).toString(16)})`, plane.net.rxSlot(slot)]);
      } else {
        written.push(['read data buffer (GPA 0x200000)', 0x200000]);
      }
      // The back-end may set bits just after it publishes the used index: give it a moment.
      await ctx.until(() => written.every(([, gpa]) => dirty(gpa)), 200);
      const missing = written.filter(([, gpa]) => !dirty(gpa)).map(([what]) => what);
      const set = log.pages().length;
      expectThat(missing.length === 0, `pages not marked dirty: ${missing.join(', ')} (${set} page bits set in all)`);
      return `${written.map(([w]) => w).join(' and ')} marked; ${set} page bits set in all`;
    },
  },
];
