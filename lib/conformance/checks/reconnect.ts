/** Reconnect: a front-end that goes away (mid-handshake or with rings running) is followed by one that is served in full. */
import { FrontendRequest as R } from '../../protocol/constants.js';
import { fail, type Check } from '../check.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';

const RULE =
  "vhost-user.rst, 'Communication': \"If front-end is unable to send the full message or receives a wrong reply it will close the connection. An optional reconnection mechanism can be implemented\"; 'VHOST_USER_SET_OWNER': \"Issued when a new connection is established ... a 'session start' flag\"";

export const reconnectChecks: Check[] = [
  {
    id: 'reconnect.mid-handshake',
    rule: RULE,
    title: 'a front-end that disconnects after GET_FEATURES is followed by a full handshake on a new connection',
    async run(ctx) {
      const first = await ctx.raw();
      await first.u64(R.GET_FEATURES);
      first.close();
      await ctx.nextFrontEnd();
      const { n } = await ctx.negotiated();
      return `second connection negotiated features 0x${n.features.toString(16)}`;
    },
  },
  {
    id: 'reconnect.with-rings-running',
    rule: RULE,
    title: 'a front-end that disconnects with rings running (no GET_VRING_BASE) is followed by a working device on a new connection',
    devices: ['net', 'blk'],
    timeoutMs: 15_000,
    async run(ctx) {
      const first = await openDataPlane(ctx);
      if (!(await first.roundTrip(1, WORK_MS))) fail('no work completed on the first connection');
      first.client.close();
      await ctx.nextFrontEnd();
      const second = await openDataPlane(ctx);
      if (!(await second.roundTrip(2, WORK_MS))) fail('the device set up on a new connection did no work');
      return 'work completed on both connections';
    },
  },
];
