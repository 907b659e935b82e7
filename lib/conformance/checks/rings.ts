/**
 * The ring state machine (vhost-user.rst, 'Ring states'): rings start stopped
 * and, with PROTOCOL_FEATURES, disabled; SET_VRING_ENABLE enables and disables;
 * a kick starts a ring and GET_VRING_BASE stops it, returning where it got to.
 * Observed through real work on the rings (dataplane.ts).
 */
import { ProtocolFeature } from '../../protocol/constants.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import { openDataPlane, QUIET_MS, WORK_MS, type DataPlane } from '../dataplane.js';
import type { CheckContext } from '../context.js';

const RING_STATES = "vhost-user.rst, 'Ring states'";
const DATA = ['net', 'blk'] as const;

function noWork(plane: DataPlane): string {
  return plane.kind === 'net'
    ? 'no frame came back: the check needs a back-end that loops or forwards frames (the reference loopback, testpmd --forward-mode=io)'
    : 'the read request did not complete';
}

/** A started, enabled data plane whose first unit of work completed. */
async function running(ctx: CheckContext): Promise<DataPlane> {
  const plane = await openDataPlane(ctx);
  if (!(await plane.roundTrip(1, WORK_MS))) fail(`with every ring set up and enabled, ${noWork(plane)}`);
  return plane;
}

export const ringChecks: Check[] = [
  {
    id: 'rings.initially-disabled',
    rule: `${RING_STATES}: "If VHOST_USER_F_PROTOCOL_FEATURES has been negotiated, the ring is initialized in a disabled state"; disabled, "the back-end must not supply any new RX packets"`,
    title: 'net: no RX before SET_VRING_ENABLE 1 on the RX ring, traffic once it is enabled',
    devices: ['net'],
    timeoutMs: 10_000,
    async run(ctx) {
      const plane = await openDataPlane(ctx, { protocolFeatures: true, enable: false });
      await plane.client.setVringEnable(1, true);
      const done = plane.attempt(1);
      await ctx.sleep(QUIET_MS);
      const used = plane.rings.usedIdx(0);
      expectThat(!done() && used === 0, `RX ring 0, never enabled, received ${used} buffer(s) within ${QUIET_MS} ms`);
      await plane.client.setVringEnable(0, true);
      if (!(await plane.roundTrip(2, WORK_MS))) fail(`after SET_VRING_ENABLE 1 on both rings, ${noWork(plane)}`);
      return `RX stayed empty for ${QUIET_MS} ms while disabled; frames flowed once enabled`;
    },
  },
  {
    id: 'rings.enabled-without-protocol-features',
    rule: `${RING_STATES}: "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state"`,
    title: 'a front-end that never acknowledges PROTOCOL_FEATURES gets work done without SET_VRING_ENABLE',
    devices: DATA,
    timeoutMs: 10_000,
    async run(ctx) {
      // A legacy front-end: GET_FEATURES and SET_OWNER only, no protocol feature messages at all.
      const client = await ctx.client();
      const features = await client.getFeatures();
      await client.setOwner();
      const n = { features, offeredProtocolFeatures: 0n, protocolFeatures: 0n, queueNum: null, maxMemSlots: null };
      const plane = await openDataPlane(ctx, { client, n, protocolFeatures: false, enable: false });
      if (!(await plane.roundTrip(1, WORK_MS))) fail(`without PROTOCOL_FEATURES and without SET_VRING_ENABLE, ${noWork(plane)}`);
    },
  },
  {
    id: 'rings.disable-stops-rx',
    rule: `${RING_STATES}: "started but disabled: ... for a networking device, in the disabled state the back-end must not supply any new RX packets"`,
    title: 'net: SET_VRING_ENABLE 0 on the RX ring stops RX; 1 resumes it',
    devices: ['net'],
    timeoutMs: 10_000,
    async run(ctx) {
      const plane = await running(ctx);
      await plane.client.setVringEnable(0, false);
      const before = plane.rings.usedIdx(0);
      const done = plane.attempt(2);
      await ctx.sleep(QUIET_MS);
      const after = plane.rings.usedIdx(0);
      expectThat(!done() && after === before, `RX ring 0, disabled, received ${(after - before) & 0xffff} buffer(s) within ${QUIET_MS} ms`);
      await plane.client.setVringEnable(0, true);
      if (!(await plane.roundTrip(3, WORK_MS))) fail(`after re-enabling RX, ${noWork(plane)}`);
    },
  },
  {
    id: 'rings.get-vring-base-stops',
    rule: `${RING_STATES}: the back-end must "stop ring upon receiving VHOST_USER_GET_VRING_BASE"; "stopped: the back-end must not process the ring at all"`,
    title: 'after GET_VRING_BASE the ring consumes nothing, even when kicked',
    devices: DATA,
    timeoutMs: 10_000,
    async run(ctx) {
      const plane = await running(ctx);
      const ring = plane.inputRing;
      await plane.client.getVringBase(ring);
      const before = plane.rings.usedIdx(ring);
      const done = plane.attempt(2);
      await ctx.sleep(QUIET_MS);
      const after = plane.rings.usedIdx(ring);
      expectThat(!done() && after === before, `ring ${ring}, stopped by GET_VRING_BASE, used ${(after - before) & 0xffff} more buffer(s) after a kick`);
    },
  },
  {
    id: 'rings.vring-base-after-traffic',
    rule: "vhost-user.rst, 'VHOST_USER_GET_VRING_BASE' replies 'A vring descriptor index for split virtqueues': \"Index of the next Available Ring descriptor that the back-end will process. This is a free-running index\"",
    title: 'after N units of work GET_VRING_BASE returns N for the ring that carried them',
    devices: DATA,
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await running(ctx);
      const total = 10;
      for (let tag = 2; tag <= total; tag++) {
        if (!(await plane.roundTrip(tag, WORK_MS))) fail(`unit of work ${tag} of ${total}: ${noWork(plane)}`);
      }
      const input = await plane.client.getVringBase(plane.inputRing);
      expectThat(input.num === total, `GET_VRING_BASE(${plane.inputRing}) = ${input.num} after ${total} buffers were consumed and used`);
      if (plane.net) {
        const rxUsed = plane.rings.usedIdx(0);
        const rx = await plane.client.getVringBase(0);
        expectThat(rx.num === rxUsed, `GET_VRING_BASE(0) = ${rx.num}, but the back-end used ${rxUsed} RX buffers`);
        return `TX base ${input.num}, RX base ${rx.num}`;
      }
      return `base ${input.num}`;
    },
  },
  {
    id: 'rings.vring-base-after-status-0',
    // An interoperability rule more than a sentence of the spec: QEMU 7.2's vhost_dev_stop sends
    // SET_STATUS 0 before GET_VRING_BASE, and on live migration hands the positions it gets to the
    // destination, which refuses a ring whose position is behind the guest's used index.
    rule: "vhost-user.rst, 'Ring states': the back-end must \"stop a ring upon receiving VHOST_USER_GET_VRING_BASE\", whose reply is \"the next Available Ring descriptor that the back-end will process\"; interoperability: QEMU 7.2 stops a device with SET_STATUS 0 before GET_VRING_BASE (DPDK and qemu-storage-daemon keep the positions)",
    title: 'after N units of work, SET_STATUS 0 then GET_VRING_BASE still returns N, not 0',
    devices: DATA,
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await running(ctx);
      if (!plane.client.hasProtocolFeature(ProtocolFeature.STATUS)) skip('protocol feature STATUS not offered');
      const total = 5;
      for (let tag = 2; tag <= total; tag++) {
        if (!(await plane.roundTrip(tag, WORK_MS))) fail(`unit of work ${tag} of ${total}: ${noWork(plane)}`);
      }
      await plane.client.setStatus(0);
      const input = await plane.client.getVringBase(plane.inputRing);
      expectThat(input.num === total, `after ${total} buffers were used, SET_STATUS 0 then GET_VRING_BASE(${plane.inputRing}) = ${input.num}`);
      return `GET_VRING_BASE(${plane.inputRing}) = ${input.num} after SET_STATUS 0`;
    },
  },
  {
    id: 'rings.vring-base-packed',
    rule: "vhost-user.rst, 'Vring descriptor indices for packed virtqueues': \"Bits 0–14: Index of the next Available Ring descriptor that the back-end will process\"; \"Bit 15: Driver (Available) Ring Wrap Counter\"; \"Bits 16–30: Index of the entry in the Used Ring where the back-end will place the next descriptor\"; \"Bit 31: Device (Used) Ring Wrap Counter\"",
    title: 'packed rings: after N buffers GET_VRING_BASE returns both indexes advanced by their descriptors, wrap counters still 1',
    devices: DATA,
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await openDataPlane(ctx, { ring: 'packed' });
      const total = 10;
      for (let tag = 1; tag <= total; tag++) {
        if (!(await plane.roundTrip(tag, WORK_MS))) fail(`unit of work ${tag} of ${total} on packed rings: ${noWork(plane)}`);
      }
      // Each net frame is one descriptor; each blk request a chain of three (header, data, status).
      const perBuffer = plane.net ? 1 : 3;
      const want = { lastAvailIdx: total * perBuffer, availWrapCounter: true, lastUsedIdx: total * perBuffer, usedWrapCounter: true };
      const rings = plane.net ? [1, 0] : [0];
      const got: string[] = [];
      for (const i of rings) {
        const base = await plane.client.getVringBase(i);
        const p = base.packed!;
        got.push(`ring ${i} 0x${base.num.toString(16)}`);
        expectThat(
          p.lastAvailIdx === want.lastAvailIdx && p.availWrapCounter && p.lastUsedIdx === want.lastUsedIdx && p.usedWrapCounter,
          `GET_VRING_BASE(${i}) = 0x${base.num.toString(16)} (${JSON.stringify(p)}), expected avail and used index ${want.lastAvailIdx} with both wrap counters 1`,
        );
      }
      return got.join(', ');
    },
  },
  {
    id: 'rings.restart-after-stop',
    rule: `${RING_STATES}: "The back-end must start ring upon receiving a kick"; 'VHOST_USER_SET_VRING_BASE': "Sets the base offset in the available vring"`,
    title: 'a ring stopped by GET_VRING_BASE and set up again from that base works again after a kick',
    devices: DATA,
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await running(ctx);
      const n = plane.rings.queues.length;
      const bases: number[] = [];
      for (let i = 0; i < n; i++) bases.push((await plane.client.getVringBase(i)).num);
      for (let i = 0; i < n; i++) {
        await plane.rings.start(i, bases[i]!);
        if (plane.rings.protocolFeatures) await plane.client.setVringEnable(i, true);
      }
      if (!(await plane.roundTrip(2, WORK_MS))) fail(`after restarting the rings from bases ${bases.join(', ')}, ${noWork(plane)}`);
      const used = plane.rings.usedIdx(plane.inputRing);
      expectThat(used === bases[plane.inputRing]! + 1, `used index ${used} after one more buffer from base ${bases[plane.inputRing]}`);
      return `restarted from bases ${bases.join(', ')}`;
    },
  },
];
