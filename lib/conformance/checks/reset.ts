/** Device reset: RESET_DEVICE (protocol feature RESET_DEVICE) and the virtio status byte (STATUS). */
import { bit, DeviceStatus, hasBit, ProtocolFeature, VirtioFeature } from '../../protocol/constants.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import { openDataPlane, QUIET_MS, WORK_MS } from '../dataplane.js';

const { ACKNOWLEDGE, DRIVER, FEATURES_OK } = DeviceStatus;

export const resetChecks: Check[] = [
  {
    id: 'reset.reset-device',
    rule: "vhost-user.rst, 'VHOST_USER_RESET_DEVICE': \"disable all rings and reset all internal device state to the initial state, ready to be reinitialized. The back-end retains ownership of the device throughout the reset operation\"",
    title: 'after RESET_DEVICE the old rings are idle, and the same connection sets the device up again from scratch',
    devices: ['net', 'blk'],
    timeoutMs: 15_000,
    async run(ctx) {
      const { client, n } = await ctx.negotiated();
      if (!hasBit(n.protocolFeatures, ProtocolFeature.RESET_DEVICE)) skip('protocol feature RESET_DEVICE not offered');
      const old = await openDataPlane(ctx, { client, n });
      if (!(await old.roundTrip(1, WORK_MS))) fail('no work completed before the reset');
      await client.resetDevice();
      const before = old.rings.usedIdx(old.inputRing);
      const done = old.attempt(2);
      await ctx.sleep(QUIET_MS);
      expectThat(!done() && old.rings.usedIdx(old.inputRing) === before, 'a ring set up before RESET_DEVICE still processed work after it');
      const fresh = await openDataPlane(ctx, { client, n });
      if (!(await fresh.roundTrip(3, WORK_MS))) fail('after RESET_DEVICE, rings set up again from base 0 on the same connection did no work');
      return 'old rings idle; re-initialised on the same connection';
    },
  },
  {
    id: 'status.set-get',
    rule: "vhost-user.rst, 'VHOST_USER_SET_STATUS' / 'VHOST_USER_GET_STATUS': \"notify the back-end with updated device status\" / \"query the back-end for its device status as defined in the Virtio specification\"",
    title: 'GET_STATUS returns the status bits SET_STATUS wrote, FEATURES_OK included for offered features',
    async run(ctx) {
      const { client, n } = await ctx.negotiated({ backendChannel: false });
      if (!hasBit(n.protocolFeatures, ProtocolFeature.STATUS)) skip('protocol feature STATUS not offered');
      await client.setStatus(ACKNOWLEDGE | DRIVER);
      const a = await client.getStatus();
      expectThat(a === (ACKNOWLEDGE | DRIVER), `after SET_STATUS 0x3 GET_STATUS says 0x${a.toString(16)}`);
      await client.setFeatures(n.features & (bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)));
      await client.setStatus(ACKNOWLEDGE | DRIVER | FEATURES_OK);
      const b = await client.getStatus();
      // virtio 1.2 §3.1.1: a device that rejects the features clears FEATURES_OK; these were all offered.
      expectThat(b === (ACKNOWLEDGE | DRIVER | FEATURES_OK), `after SET_STATUS 0xb GET_STATUS says 0x${b.toString(16)}`);
      await client.setStatus(0);
      return 'status 0x3 and 0xb read back';
    },
  },
];
