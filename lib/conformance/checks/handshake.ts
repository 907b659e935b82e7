/** Handshake and feature negotiation: GET_FEATURES, the PROTOCOL_FEATURES gate, queue and slot counts. */
import { featureNames, FrontendRequest as R, hasBit, ProtocolFeature, protocolFeatureNames, VirtioFeature } from '../../protocol/constants.js';
import { U64 } from '../../protocol/payloads.js';
import { expectThat, fail, skip, type Check } from '../check.js';
import { V1 } from '../raw-session.js';

const hex = (v: bigint) => `0x${v.toString(16)}`;

export const handshakeChecks: Check[] = [
  {
    id: 'handshake.get-features',
    rule: "vhost-user.rst, 'Header': the reply flag \"needs to be sent on each reply from the back-end\"; 'VHOST_USER_GET_FEATURES': reply payload u64",
    title: 'GET_FEATURES is answered with REPLY | version 1 and a u64, the same one every time',
    async run(ctx) {
      const raw = await ctx.raw();
      const a = await raw.u64(R.GET_FEATURES);
      const b = await raw.u64(R.GET_FEATURES);
      expectThat(a === b, `GET_FEATURES answered ${hex(a)} then ${hex(b)}`);
      return `features ${hex(a)}: ${featureNames(a, ctx.device === 'net' || ctx.device === 'blk' ? ctx.device : undefined).join(' ')}`;
    },
  },
  {
    id: 'handshake.version-1',
    rule: "virtio 1.2, 'Reserved Feature Bits', device requirements: \"A device MUST offer VIRTIO_F_VERSION_1\"",
    title: 'the back-end offers VIRTIO_F_VERSION_1 (bit 32)',
    async run(ctx) {
      const raw = await ctx.raw();
      const f = await raw.u64(R.GET_FEATURES);
      expectThat(hasBit(f, VirtioFeature.VIRTIO_F_VERSION_1), `GET_FEATURES ${hex(f)} lacks VIRTIO_F_VERSION_1`);
    },
  },
  {
    id: 'handshake.protocol-features-before-set-features',
    rule: "vhost-user.rst, 'VHOST_USER_GET_PROTOCOL_FEATURES': \"Back-ends that report VHOST_USER_F_PROTOCOL_FEATURES must support this message even before VHOST_USER_SET_FEATURES was called\"",
    title: 'GET_PROTOCOL_FEATURES is answered right after GET_FEATURES',
    async run(ctx) {
      const raw = await ctx.raw();
      const f = await raw.u64(R.GET_FEATURES);
      if (!hasBit(f, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) skip('VHOST_USER_F_PROTOCOL_FEATURES (bit 30) not offered');
      const pf = await raw.u64(R.GET_PROTOCOL_FEATURES);
      return `protocol features ${hex(pf)}: ${protocolFeatureNames(pf).join(' ') || '(none)'}`;
    },
  },
  {
    id: 'handshake.protocol-feature-gate',
    rule: "vhost-user.rst, 'Communication': \"Any protocol extensions are gated by protocol feature bits, which allows full backwards compatibility\"",
    title: 'with no protocol feature acknowledged the back-end sends no acks and answers only what has a reply',
    async run(ctx) {
      const raw = await ctx.raw();
      const f = await raw.u64(R.GET_FEATURES);
      if (!hasBit(f, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) skip('VHOST_USER_F_PROTOCOL_FEATURES (bit 30) not offered');
      const offered = await raw.u64(R.GET_PROTOCOL_FEATURES);
      if (!hasBit(offered, ProtocolFeature.REPLY_ACK)) skip('REPLY_ACK not offered: nothing an ungated back-end could send unasked');
      raw.send(R.SET_PROTOCOL_FEATURES, V1, U64.encode(0n));
      raw.send(R.SET_OWNER);
      const wanted = (1n << BigInt(VirtioFeature.VIRTIO_F_VERSION_1)) & f;
      raw.send(R.SET_FEATURES, V1, U64.encode(wanted | (1n << 30n)));
      // The next message must be the answer to this GET_FEATURES, not an ack of the requests before it.
      const again = await raw.u64(R.GET_FEATURES);
      expectThat(again === f, `GET_FEATURES answered ${hex(again)} after SET_FEATURES, first ${hex(f)}`);
      const extra = await raw.next(100);
      if (extra.kind === 'reply') fail(`unsolicited message (request ${extra.message.request}) after the GET_FEATURES reply`);
    },
  },
  {
    id: 'handshake.queue-num',
    rule: "vhost-user.rst, 'Multiple queue support': \"The max number of queues the back-end supports can be queried with message VHOST_USER_GET_QUEUE_NUM\"",
    title: 'GET_QUEUE_NUM (MQ) reports at least one queue (a queue pair for net)',
    async run(ctx) {
      const { n } = await ctx.negotiated({ backendChannel: false });
      if (n.queueNum === null) skip('protocol feature MQ not offered');
      const min = ctx.device === 'net' ? 2 : 1;
      expectThat(n.queueNum >= min, `GET_QUEUE_NUM says ${n.queueNum}, a ${ctx.device} device needs at least ${min}`);
      return `${n.queueNum} queues`;
    },
  },
  {
    id: 'handshake.max-mem-slots',
    rule: "vhost-user.rst, 'VHOST_USER_GET_MAX_MEM_SLOTS': \"The back-end should return the message with a u64 payload containing the maximum number of memory slots\"",
    title: 'GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS) reports at least one slot',
    async run(ctx) {
      const { n } = await ctx.negotiated({ backendChannel: false });
      if (n.maxMemSlots === null) skip('protocol feature CONFIGURE_MEM_SLOTS not offered');
      expectThat(n.maxMemSlots >= 1, `GET_MAX_MEM_SLOTS says ${n.maxMemSlots}`);
      return `${n.maxMemSlots} memory slots`;
    },
  },
];
