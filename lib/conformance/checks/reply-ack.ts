/**
 * REPLY_ACK for each message type: with REPLY_ACK negotiated the client sets
 * NEED_REPLY on every request without a reply of its own and accepts only a u64
 * ack with flags REPLY | version 1 for the same request; a non-zero ack is a
 * VHOST_NACK, no ack a VHOST_TIMEOUT. Each check drives a realistic sequence up
 * to its message, so the message is valid where it is sent and must be acked 0.
 */
import type { Negotiated, VhostUserClient } from '../../client/vhost-user-client.js';
import { isVhostUserError } from '../../errors.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { bit, FrontendRequest as R, hasBit, ProtocolFeature, VirtioFeature, VirtioNetFeature } from '../../protocol/constants.js';
import { SplitVirtqueue } from '../../virtqueue/split-queue.js';
import { expectThat, fail, skip, type Check, type ConformanceDevice } from '../check.js';
import type { CheckContext } from '../context.js';
import { V1, NEED_REPLY } from '../raw-session.js';

const RULE =
  "vhost-user.rst, 'VHOST_USER_PROTOCOL_F_REPLY_ACK': with need_reply set \"the back-end MUST respond with a Payload VhostUserMsg indicating success or failure. The payload should be set to zero on success\"";

interface Session {
  ctx: CheckContext;
  client: VhostUserClient;
  n: Negotiated;
  memory?: GuestMemory;
  queue?: SplitVirtqueue;
}

/** The ring set-up chain, in QEMU's order; a target's check runs the chain up to and including it. */
const CHAIN: [string, (s: Session) => Promise<void>][] = [
  [
    'SET_FEATURES',
    async (s) => {
      const want = bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES);
      await s.client.setFeatures(want & s.n.features);
    },
  ],
  [
    'SET_MEM_TABLE',
    async (s) => {
      s.memory = s.ctx.memory({ size: 1 << 20 });
      await s.client.setMemTable(s.memory);
    },
  ],
  ['SET_VRING_NUM', (s) => s.client.setVringNum(0, 64)],
  ['SET_VRING_BASE', (s) => s.client.setVringBase(0, 0)],
  [
    'SET_VRING_ADDR',
    async (s) => {
      const m = s.memory!;
      const q = (s.queue = new SplitVirtqueue({ memory: m, index: 0, size: 64, ringGpa: 0, eventIdx: false }));
      await s.client.setVringAddr({ index: 0, descUserAddr: m.userAddr(q.addresses.desc), availUserAddr: m.userAddr(q.addresses.driver), usedUserAddr: m.userAddr(q.addresses.device) });
    },
  ],
  ['SET_VRING_KICK', (s) => s.client.setVringKick(0, s.ctx.eventFd().fd)],
  ['SET_VRING_CALL', (s) => s.client.setVringCall(0, s.ctx.eventFd().fd)],
  ['SET_VRING_ERR', (s) => s.client.setVringErr(0, s.ctx.eventFd().fd)],
  ['SET_VRING_ENABLE', (s) => s.client.setVringEnable(0, true)],
];

/** Requests acked outside the ring chain: after SET_FEATURES, gated by a protocol feature. */
interface Standalone {
  request: string;
  requires: number;
  devices?: ConformanceDevice[];
  /** The request may be refused (non-zero ack) as long as it is answered. */
  nakAllowed?: boolean;
  run(s: Session): Promise<void>;
}

const STANDALONE: Standalone[] = [
  { request: 'SET_STATUS', requires: ProtocolFeature.STATUS, run: (s) => s.client.setStatus(1) },
  { request: 'SEND_RARP', requires: ProtocolFeature.RARP, devices: ['net'], run: (s) => s.client.sendRarp(Uint8Array.of(0x52, 0x54, 0, 0xc0, 0xff, 0xee)) },
  {
    request: 'NET_SET_MTU',
    requires: ProtocolFeature.MTU,
    devices: ['net'],
    async run(s) {
      // 'VHOST_USER_NET_SET_MTU': "sent only when VIRTIO_NET_F_MTU feature has been successfully negotiated".
      if (!hasBit(s.n.features, VirtioNetFeature.VIRTIO_NET_F_MTU)) skip('VIRTIO_NET_F_MTU not offered');
      await s.client.setFeatures(s.client.features! | bit(VirtioNetFeature.VIRTIO_NET_F_MTU));
      await s.client.netSetMtu(1500);
    },
  },
  {
    request: 'SET_CONFIG',
    requires: ProtocolFeature.CONFIG,
    nakAllowed: true,
    async run(s) {
      // Writes back what GET_CONFIG returned: a no-op if accepted, and may be refused (read-only field).
      const bytes = await s.client.getConfig(0, 4);
      await s.client.setConfig(0, bytes);
    },
  },
  {
    request: 'ADD_MEM_REG',
    requires: ProtocolFeature.CONFIGURE_MEM_SLOTS,
    async run(s) {
      const m = s.ctx.memory({ size: 1 << 20 });
      await s.client.addMemReg(m.regions[0]!);
    },
  },
  {
    request: 'REM_MEM_REG',
    requires: ProtocolFeature.CONFIGURE_MEM_SLOTS,
    async run(s) {
      const m = s.ctx.memory({ size: 1 << 20 });
      await s.client.addMemReg(m.regions[0]!);
      await s.client.remMemReg(m.regions[0]!);
    },
  },
];

async function session(ctx: CheckContext, backendChannel = false): Promise<Session> {
  const { client, n } = await ctx.negotiated({ backendChannel });
  if (!hasBit(n.protocolFeatures, ProtocolFeature.REPLY_ACK)) skip('protocol feature REPLY_ACK not offered');
  return { ctx, client, n };
}

/** Runs a step; a failure of a step before the target is reported as such. */
async function step(name: string, target: string, run: () => Promise<void>, nakAllowed = false): Promise<string> {
  try {
    await run();
    return 'acked 0';
  } catch (e) {
    if (nakAllowed && isVhostUserError(e, 'VHOST_NACK')) return `refused with a non-zero ack (${e.message})`;
    if (!isVhostUserError(e)) throw e;
    if (name !== target) fail(`set-up step ${name} before ${target} failed: ${e.toLine()}`);
    fail(e.toLine());
  }
}

function chainCheck(index: number): Check {
  const target = CHAIN[index]![0];
  return {
    id: `reply-ack.${target}`,
    rule: RULE,
    title: `${target} with NEED_REPLY is acknowledged with a u64 0`,
    async run(ctx) {
      const s = await session(ctx);
      let result = '';
      for (const [name, run] of CHAIN.slice(0, index + 1)) result = await step(name, target, () => run(s));
      return result;
    },
  };
}

function standaloneCheck(t: Standalone): Check {
  return {
    id: `reply-ack.${t.request}`,
    rule: RULE,
    title: `${t.request} with NEED_REPLY is answered with a u64 ack${t.nakAllowed ? ' (zero or not)' : ' 0'}`,
    ...(t.devices ? { devices: t.devices } : {}),
    async run(ctx) {
      const s = await session(ctx);
      if (!hasBit(s.n.protocolFeatures, t.requires)) {
        skip(`protocol feature ${Object.entries(ProtocolFeature).find(([, b]) => b === t.requires)![0]} not offered`);
      }
      await step('SET_FEATURES', t.request, () => CHAIN[0]![1](s));
      return step(t.request, t.request, () => t.run(s), t.nakAllowed);
    },
  };
}

export const replyAckChecks: Check[] = [
  {
    id: 'reply-ack.SET_OWNER',
    rule: RULE,
    title: 'SET_OWNER with NEED_REPLY is acknowledged with a u64 0',
    async run(ctx) {
      await session(ctx); // negotiate() sends SET_OWNER with NEED_REPLY once REPLY_ACK is on
      return 'acked 0';
    },
  },
  {
    id: 'reply-ack.SET_BACKEND_REQ_FD',
    rule: "vhost-user.rst, 'VHOST_USER_SET_BACKEND_REQ_FD': \"If VHOST_USER_PROTOCOL_F_REPLY_ACK is negotiated, the back-end must respond with zero for success\"",
    title: 'SET_BACKEND_REQ_FD (BACKEND_REQ) is acknowledged with a u64 0',
    async run(ctx) {
      const { client, n } = await ctx.negotiated({ backendChannel: false });
      if (!hasBit(n.protocolFeatures, ProtocolFeature.REPLY_ACK)) skip('protocol feature REPLY_ACK not offered');
      if (!hasBit(n.protocolFeatures, ProtocolFeature.BACKEND_REQ)) skip('protocol feature BACKEND_REQ not offered');
      return step('SET_BACKEND_REQ_FD', 'SET_BACKEND_REQ_FD', () => client.setBackendReqFd());
    },
  },
  ...CHAIN.map((_, i) => chainCheck(i)),
  ...STANDALONE.map(standaloneCheck),
  {
    id: 'reply-ack.own-reply',
    rule: "vhost-user.rst, 'VHOST_USER_PROTOCOL_F_REPLY_ACK': \"For the message types that already solicit a reply from the back-end, the presence of VHOST_USER_PROTOCOL_F_REPLY_ACK or need_reply bit being set brings no behavioural change\"",
    title: 'GET_FEATURES with NEED_REPLY gets its own reply only, no extra ack',
    async run(ctx) {
      const raw = await ctx.raw();
      const h = await raw.handshake();
      if (!h.replyAck) skip('protocol feature REPLY_ACK not offered');
      const f = await raw.u64(R.GET_FEATURES, undefined, V1 | NEED_REPLY);
      expectThat(f === h.features, `GET_FEATURES with NEED_REPLY answered 0x${f.toString(16)}, without 0x${h.features.toString(16)}`);
      // An extra ack would now be taken as the reply to this request.
      const pf = await raw.u64(R.GET_PROTOCOL_FEATURES, undefined, V1 | NEED_REPLY);
      expectThat(pf === h.offeredProtocolFeatures, `GET_PROTOCOL_FEATURES answered 0x${pf.toString(16)}: an extra message came first`);
      const extra = await raw.next(100);
      if (extra.kind === 'reply') fail(`an extra message (request ${extra.message.request}, ${extra.message.payload.length} bytes) followed`);
    },
  },
];
