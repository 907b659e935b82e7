/** Config space: GET_CONFIG and SET_CONFIG (protocol feature CONFIG). */
import type { VhostUserClient } from '../../client/vhost-user-client.js';
import { BLK_CONFIG_SIZE, decodeBlkConfig } from '../../devices/blk/blk-config.js';
import { decodeNetConfig, NET_CONFIG_SIZE } from '../../devices/net/net-config.js';
import { isVhostUserError } from '../../errors.js';
import { hasBit, ProtocolFeature } from '../../protocol/constants.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';

async function configClient(ctx: CheckContext): Promise<{ client: VhostUserClient; features: bigint; size: number }> {
  const { client, n } = await ctx.negotiated({ backendChannel: false });
  if (!hasBit(n.protocolFeatures, ProtocolFeature.CONFIG)) skip('protocol feature CONFIG not offered');
  return { client, features: n.features, size: ctx.device === 'net' ? NET_CONFIG_SIZE : BLK_CONFIG_SIZE };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

export const configChecks: Check[] = [
  {
    id: 'config.get-config',
    rule: "vhost-user.rst, 'VHOST_USER_GET_CONFIG': \"vhost-user back-end's payload size MUST match the front-end's request\"",
    title: 'GET_CONFIG returns the device config space at the size asked for, and a sub-range agrees with it',
    devices: ['net', 'blk'],
    async run(ctx) {
      const { client, features, size } = await configClient(ctx);
      const whole = await client.getConfig(0, size);
      const part = await client.getConfig(4, 4);
      expectThat(hex(part) === hex(whole.subarray(4, 8)), `GET_CONFIG(4, 4) = ${hex(part)}, but bytes 4..8 of GET_CONFIG(0, ${size}) are ${hex(whole.subarray(4, 8))}`);
      if (ctx.device === 'blk') {
        const c = decodeBlkConfig(whole, features);
        expectThat(c.capacity > 0, 'virtio-blk capacity is 0 sectors');
        return `capacity ${c.capacity} sectors`;
      }
      const c = decodeNetConfig(whole, features);
      return `mac ${c.mac ?? '-'}, mtu ${c.mtu ?? '-'}`;
    },
  },
  {
    id: 'config.set-config-read-only',
    rule: "vhost-user.rst, 'VHOST_USER_SET_CONFIG': \"back-ends MUST NOT accept SET_CONFIG for read-only configuration space fields unless the live migration bit is set\"",
    title: 'SET_CONFIG of a read-only field (net mac, blk capacity) without the live-migration flag is refused and changes nothing',
    devices: ['net', 'blk'],
    async run(ctx) {
      const { client } = await configClient(ctx);
      // virtio 1.2 §5.1.4 / §5.2.4: mac (0..6) and capacity (0..8) are device-written only.
      const length = ctx.device === 'net' ? 6 : 8;
      const before = await client.getConfig(0, length);
      const bogus = before.map((b) => b ^ 0x5a);
      let refused = 'not acknowledged (REPLY_ACK not negotiated)';
      let accepted = false;
      try {
        await client.setConfig(0, bogus, 0);
        accepted = client.hasProtocolFeature(ProtocolFeature.REPLY_ACK);
      } catch (e) {
        if (!isVhostUserError(e, 'VHOST_NACK')) throw e;
        refused = 'refused with a non-zero ack';
      }
      let after: Uint8Array;
      try {
        after = await client.getConfig(0, length);
      } catch (e) {
        if (!isVhostUserError(e) || !accepted) throw e;
        return fail(`SET_CONFIG of ${length} read-only bytes at offset 0 was acknowledged with 0, then GET_CONFIG failed (${e.code})`);
      }
      const changed = hex(after) !== hex(before);
      if (accepted) fail(`SET_CONFIG of ${length} read-only bytes at offset 0 was acknowledged with 0 (bytes ${changed ? `changed from ${hex(before)} to ${hex(after)}` : 'unchanged'})`);
      expectThat(!changed, `read-only bytes changed from ${hex(before)} to ${hex(after)}`);
      return `${refused}; bytes unchanged`;
    },
  },
];
