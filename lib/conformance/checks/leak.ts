/**
 * File descriptor leaks in the back-end: requests repeated many times must not
 * leave the back-end holding one more fd each time (CVE-2019-14818, CVE-2020-10726,
 * CVE-2022-0669 were of this kind). Needs the back-end's pid to count
 * /proc/PID/fd, so it runs when the suite spawned the back-end (or was told the pid).
 */
import { readdirSync } from 'node:fs';
import { closeFd } from '../../native/libc.js';
import { FrontendRequest as R, U64, VringAddr, VringState, MemoryTable } from '../../protocol/index.js';
import { EventFd } from '../../transport/eventfd.js';
import { expectThat, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import { getInflightFd, inflightSession } from './inflight.js';

const ROUNDS = 64;
/** Growth tolerated over ROUNDS requests: allocator and logging noise, never one per request. */
const SLACK = 8;

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function pidOf(ctx: CheckContext): number {
  if (ctx.backendPid === null) skip("the back-end's pid is unknown (use --spawn) so its fds cannot be counted");
  return ctx.backendPid;
}

export const leakChecks: Check[] = [
  {
    id: 'leak.set-vring-kick',
    rule: "vhost-user.rst, 'VHOST_USER_SET_VRING_KICK': \"Set the event file descriptor for adding buffers to the vring\" (a new one replaces the old, which must be closed)",
    title: `${ROUNDS} SET_VRING_KICKs on one ring leave the back-end's fd count where it was`,
    timeoutMs: 20_000,
    async run(ctx) {
      const pid = pidOf(ctx);
      const raw = await ctx.raw();
      const h = await raw.handshake();
      await raw.expectAck(R.SET_FEATURES, U64.encode(h.features & ((1n << 32n) | (1n << 30n))));
      const memory = ctx.memory({ size: 1 << 20 });
      const r = memory.regions[0]!;
      const u = BigInt(r.userAddr);
      await raw.expectAck(R.SET_MEM_TABLE, MemoryTable.encode({ regions: [{ guestPhysAddr: 0n, memorySize: BigInt(r.size), userAddr: u, mmapOffset: 0n }] }), [r.fd]);
      await raw.expectAck(R.SET_VRING_NUM, VringState.encode({ index: 0, num: 64 }));
      await raw.expectAck(R.SET_VRING_ADDR, VringAddr.encode({ index: 0, flags: 0, descUserAddr: u, availUserAddr: u + 0x1000n, usedUserAddr: u + 0x2000n, logGuestAddr: 0n }));
      const kick = async () => {
        const e = new EventFd();
        try {
          await raw.expectAck(R.SET_VRING_KICK, U64.encode(0n), [e.fd]);
        } finally {
          e.close();
        }
      };
      await kick();
      const before = fdCount(pid);
      for (let i = 0; i < ROUNDS; i++) await kick();
      const after = fdCount(pid);
      expectThat(after - before <= SLACK, `the back-end holds ${after - before} more fds after ${ROUNDS} SET_VRING_KICKs (${before} → ${after})`);
      return `fd count ${before} → ${after} over ${ROUNDS} requests`;
    },
  },
  {
    id: 'leak.get-inflight-fd',
    rule: "vhost-user.rst, 'VHOST_USER_GET_INFLIGHT_FD': \"get a shared buffer from back-end\" (a new one replaces the old; CVE-2020-10726 leaked them)",
    title: `${ROUNDS} GET_INFLIGHT_FDs leave the back-end's fd count where it was`,
    timeoutMs: 20_000,
    async run(ctx) {
      const pid = pidOf(ctx);
      const { raw, numQueues } = await inflightSession(ctx);
      const once = async () => closeFd((await getInflightFd(raw, numQueues)).fd);
      await once();
      const before = fdCount(pid);
      for (let i = 0; i < ROUNDS; i++) await once();
      const after = fdCount(pid);
      expectThat(after - before <= SLACK, `the back-end holds ${after - before} more fds after ${ROUNDS} GET_INFLIGHT_FDs (${before} → ${after})`);
      return `fd count ${before} → ${after} over ${ROUNDS} requests`;
    },
  },
];
