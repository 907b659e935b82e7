/** The memory table: replacing it with SET_MEM_TABLE, and ADD/REM_MEM_REG up to the advertised slot count. */
import { FrontendRequest as R, hasBit, ProtocolFeature, VirtioFeature, bit } from '../../protocol/constants.js';
import { SingleMemoryRegion, U64 } from '../../protocol/payloads.js';
import type { GuestRegion } from '../../memory/guest-region.js';
import { buildUdpFrameOfSize } from '../../net/frame-builder.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import { BlkRequestType } from '../datapath.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';
import { NEED_REPLY, V1 } from '../raw-session.js';

/** More regions than this are not tried (a back-end may advertise hundreds: rust-vmm says 509). */
const SLOT_CAP = 64;
const SECOND_REGION = 16 << 20;

function region(r: GuestRegion): Uint8Array {
  return SingleMemoryRegion.encode({ guestPhysAddr: BigInt(r.guestPhysAddr), memorySize: BigInt(r.size), userAddr: BigInt(r.userAddr), mmapOffset: 0n });
}

export const memoryChecks: Check[] = [
  {
    id: 'memory.replace-mem-table',
    rule: "vhost-user.rst, 'VHOST_USER_SET_MEM_TABLE': \"Sets the memory map regions on the back-end so it can translate the vring addresses\"; 'Memory access': \"Guest addresses map to the vhost memory region containing that guest address\"",
    title: 'a second SET_MEM_TABLE adding a region replaces the table: buffers in the new region carry the right bytes',
    devices: ['net', 'blk'],
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await openDataPlane(ctx);
      if (!(await plane.roundTrip(1, WORK_MS))) fail('no work completed before the table was replaced');
      const memory = plane.rings.memory;
      memory.addRegion({ guestPhysAddr: SECOND_REGION, size: 1 << 20 });
      await plane.client.setMemTable(memory);
      if (plane.net) {
        plane.net.txBase = SECOND_REGION;
        if (!(await plane.roundTrip(2, WORK_MS))) fail('a frame in the new region did not come back after SET_MEM_TABLE');
        const got = plane.net.frames[plane.net.received.indexOf(2)]!;
        const sent = buildUdpFrameOfSize(128, 2);
        expectThat(Buffer.from(got.subarray(12)).equals(Buffer.from(sent.subarray(12))), 'the frame read from the new region came back altered');
        return 'a frame sent from the new region came back intact';
      }
      const blk = plane.blk!;
      const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 13 + 7) & 0xff);
      blk.dataGpa = SECOND_REGION;
      const w = await blk.request(BlkRequestType.OUT, 64n, 4096, WORK_MS, pattern);
      expectThat(w !== null && w.status === 0, `a write from the new region completed with ${w ? `status ${w.status}` : 'nothing'}`);
      blk.dataGpa = 0x200000;
      memory.bytes(0x200000, 4096).fill(0);
      const r = await blk.request(BlkRequestType.IN, 64n, 4096, WORK_MS);
      expectThat(r !== null && r.status === 0, `the read back completed with ${r ? `status ${r.status}` : 'nothing'}`);
      expectThat(Buffer.from(blk.read(4096)).equals(Buffer.from(pattern)), 'the sector read back differs from what was written from the new region');
      return 'a sector written from the new region read back intact';
    },
  },
  {
    id: 'memory.add-rem-mem-reg',
    rule: "vhost-user.rst, 'VHOST_USER_GET_MAX_MEM_SLOTS': \"the maximum number of memory slots\"; 'VHOST_USER_ADD_MEM_REG' / 'VHOST_USER_REM_MEM_REG': \"used to set and update the memory tables of the back-end\"",
    title: 'ADD_MEM_REG up to GET_MAX_MEM_SLOTS regions is accepted, REM_MEM_REG frees a slot, one more region than advertised is refused',
    timeoutMs: 20_000,
    async run(ctx) {
      const raw = await ctx.raw();
      const h = await raw.handshake();
      if (!hasBit(h.protocolFeatures, ProtocolFeature.CONFIGURE_MEM_SLOTS)) skip('protocol feature CONFIGURE_MEM_SLOTS not offered');
      const slots = Number(await raw.u64(R.GET_MAX_MEM_SLOTS));
      expectThat(slots >= 1, `GET_MAX_MEM_SLOTS says ${slots}`);
      const n = Math.min(slots, SLOT_CAP);
      await raw.expectAck(R.SET_FEATURES, U64.encode(h.features & (bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES))));
      const memory = ctx.memory({ regions: Array.from({ length: n + 1 }, (_, i) => ({ guestPhysAddr: i << 20, size: 64 << 10 })) });
      const regions = memory.regions;
      for (let i = 0; i < n; i++) await raw.expectAck(R.ADD_MEM_REG, region(regions[i]!), [regions[i]!.fd]);
      await raw.expectAck(R.REM_MEM_REG, region(regions[0]!));
      await raw.expectAck(R.ADD_MEM_REG, region(regions[0]!), [regions[0]!.fd]);
      if (n < slots) return `${n} of ${slots} slots filled (capped at ${SLOT_CAP}), one removed and added again`;
      if (!raw.replyAck) return `${n} slots filled, one removed and added again; REPLY_ACK not offered, so the over-limit refusal cannot be observed`;
      raw.send(R.ADD_MEM_REG, V1 | NEED_REPLY, region(regions[n]!), [regions[n]!.fd]);
      const out = await raw.next();
      if (out.kind === 'closed') return `${n} slots filled; region ${n + 1} refused by closing the connection`;
      if (out.kind === 'silent') fail(`region ${n + 1} of ${slots} slots: no ack within ${ctx.timeoutMs} ms`);
      const ack = out.message.payload.length === 8 ? U64.decode(out.message.payload) : null;
      expectThat(ack !== 0n, `region ${n + 1} accepted (ack 0) with only ${slots} slots advertised`);
      return `${n} slots filled; region ${n + 1} refused with ack ${ack}`;
    },
  },
];
