/** SEND_RARP (protocol feature RARP): the back-end announces the guest's MAC after migration. */
import { hasBit, ProtocolFeature } from '../../protocol/constants.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';
import { isRarpFrame } from '../../net/frame-builder.js';

const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xc0, 0xff, 0xee);

export const rarpChecks: Check[] = [
  {
    id: 'rarp.send-rarp',
    rule: "vhost-user.rst, 'VHOST_USER_SEND_RARP': \"Ask vhost user back-end to broadcast a fake RARP\"; \"The first 6 bytes of the payload contain the mac address of the guest\"",
    title: 'after SEND_RARP a broadcast RARP frame from the given MAC comes back through a forwarding back-end',
    devices: ['net'],
    timeoutMs: 10_000,
    async run(ctx) {
      const { client, n } = await ctx.negotiated();
      if (!hasBit(n.protocolFeatures, ProtocolFeature.RARP)) skip('protocol feature RARP not offered');
      const plane = await openDataPlane(ctx, { client, n });
      const net = plane.net!;
      if (!(await plane.roundTrip(1, WORK_MS))) fail('no frame came back before SEND_RARP: the check needs a forwarding back-end (testpmd --forward-mode=io)');
      await client.sendRarp(MAC);
      const seen = await ctx.until(() => (net.pollRx(), net.frames.some(isRarpFrame)), WORK_MS);
      expectThat(seen, `no RARP frame (ethertype 0x8035) arrived within ${WORK_MS} ms of SEND_RARP`);
      const f = net.frames.find(isRarpFrame)!;
      const src = Buffer.from(f.subarray(6, 12)).toString('hex');
      const dst = Buffer.from(f.subarray(0, 6)).toString('hex');
      expectThat(src === Buffer.from(MAC).toString('hex'), `the RARP frame's source MAC is ${src}, not the ${Buffer.from(MAC).toString('hex')} sent`);
      expectThat(dst === 'ffffffffffff', `the RARP frame goes to ${dst}, not broadcast`);
      return `broadcast RARP from ${src} received`;
    },
  },
];
