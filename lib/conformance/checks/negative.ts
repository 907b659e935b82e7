/**
 * Malformed messages (the list in the project's vhost-user field notes, section
 * 8): each is sent on a connection that has done a valid handshake and
 * SET_FEATURES, with NEED_REPLY when REPLY_ACK was negotiated. The back-end must
 * refuse it, by a non-zero ack or by closing the connection, and must then serve
 * a fresh connection. Accepting it (ack 0, or answering a barrier as if nothing
 * happened), staying silent, or no longer serving are findings. With --spawn, a
 * back-end that crashed is a finding too (the runner sees it and restarts it).
 */
import { isVhostUserError, VhostUserError } from '../../errors.js';
import { encodeHeader } from '../../protocol/header.js';
import { bit, FrontendRequest as R, hasBit, ProtocolFeature, VirtioFeature } from '../../protocol/constants.js';
import { Config, Log, MemoryTable, U64, VringAddr, VringState, type MemoryRegion } from '../../protocol/payloads.js';
import type { VhostUserMessage } from '../../transport/connection.js';
import { closeAll } from '../../transport/msg-scratch.js';
import { fail, Finding, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import { NEED_REPLY, V1, type RawHandshake, type RawSession } from '../raw-session.js';
import type { GuestMemory } from '../../memory/guest-memory.js';

const REFUSE =
  "vhost-user.rst, 'Communication': \"If back-end detects some error ... it may also close the connection\"; 'REPLY_ACK': \"The payload should be set to zero on success or non-zero on failure\"";

interface Env {
  ctx: CheckContext;
  raw: RawSession;
  h: RawHandshake;
  /** NEED_REPLY when REPLY_ACK was negotiated. */
  nr: number;
  /** An eventfd, for fds where none belongs. */
  fd: number;
  /** 1 MiB of memfd guest memory, for memory tables. */
  memory: GuestMemory;
  features: bigint;
}

type Verdict = { refused: string } | { accepted: string };

interface Malformed {
  id: string;
  /** The rule the message breaks (section and quote). */
  breaks: string;
  title: string;
  requires?: number;
  /** Valid requests first (each acknowledged), on the same connection. */
  prepare?: (env: Env) => Promise<void>;
  send(env: Env): void;
  /** Reads a reply; default: a u64 ack, non-zero refuses. */
  judge?: (m: VhostUserMessage, env: Env) => Verdict;
}

function region(env: Env, patch: Partial<MemoryRegion> = {}): MemoryRegion {
  const r = env.memory.regions[0]!;
  return { guestPhysAddr: 0n, memorySize: BigInt(r.size), userAddr: BigInt(r.userAddr), mmapOffset: 0n, ...patch };
}

function table(regions: MemoryRegion[]): Uint8Array {
  return MemoryTable.encode({ regions });
}

async function memAndRing(env: Env): Promise<void> {
  await env.raw.expectAck(R.SET_MEM_TABLE, table([region(env)]), [env.memory.regions[0]!.fd]);
  await env.raw.expectAck(R.SET_VRING_NUM, VringState.encode({ index: 0, num: 64 }));
}

async function ringSetUp(env: Env): Promise<void> {
  await memAndRing(env);
  const u = BigInt(env.memory.regions[0]!.userAddr);
  await env.raw.expectAck(R.SET_VRING_ADDR, VringAddr.encode({ index: 0, flags: 0, descUserAddr: u, availUserAddr: u + 0x1000n, usedUserAddr: u + 0x2000n, logGuestAddr: 0n }));
}

const setFeatures = (env: Env) => U64.encode(env.features);
const U64_MAX = (1n << 64n) - 1n;
const SPLIT_QUEUE = "virtio 1.2, 'Split Virtqueues': \"Queue Size value is always a power of 2. The maximum Queue Size value is 32768\"";
const KICK_RULE = "vhost-user.rst, 'VHOST_USER_SET_VRING_KICK': \"Bit 8 is the invalid FD flag. This flag is set when there is no file descriptor in the ancillary data\"";
const INDEX_RULE = "vhost-user.rst, 'VHOST_USER_SET_VRING_KICK': \"Bits (0-7) of the payload contain the vring index\" (no ring index reaches 256)";
const REGION_RULE = "vhost-user.rst, 'Memory regions description': each region is \"guest address | size | user address | mmap offset\" of guest memory";

const CASES: Malformed[] = [
  { id: 'request-code-0', breaks: "vhost-user.rst, 'Front-end message types': request ids start at 1", title: 'request code 0', send: (e) => e.raw.send(0, V1 | e.nr) },
  { id: 'request-code-unknown', breaks: "vhost-user.rst, 'Front-end message types': no request has id 1000", title: 'request code 1000', send: (e) => e.raw.send(1000, V1 | e.nr) },
  { id: 'header-version-0', breaks: "vhost-user.rst, 'Header': \"Lower 2 bits are the version (currently 0x01)\"", title: 'SET_FEATURES with version 0 in the flags', send: (e) => e.raw.send(R.SET_FEATURES, 0 | e.nr, setFeatures(e)) },
  { id: 'header-version-2', breaks: "vhost-user.rst, 'Header': \"Lower 2 bits are the version (currently 0x01)\"", title: 'SET_FEATURES with version 2 in the flags', send: (e) => e.raw.send(R.SET_FEATURES, 2 | e.nr, setFeatures(e)) },
  { id: 'header-reply-flag', breaks: "vhost-user.rst, 'Header': \"Bit 2 is the reply flag - needs to be sent on each reply from the back-end\" (never on a request)", title: 'SET_FEATURES with the REPLY bit', send: (e) => e.raw.send(R.SET_FEATURES, V1 | 0x4 | e.nr, setFeatures(e)) },
  { id: 'header-undefined-flags', breaks: "vhost-user.rst, 'Header': flags define only the version (bits 0-1), reply (2) and need_reply (3)", title: 'SET_FEATURES with flag bit 8 set', send: (e) => e.raw.send(R.SET_FEATURES, V1 | 0x100 | e.nr, setFeatures(e)) },
  {
    id: 'size-field-huge',
    breaks: "vhost-user.rst, 'VHOST_USER_SET_FEATURES': request payload u64 (8 bytes), here the header announces 4 GiB",
    title: 'a SET_FEATURES header announcing 0xfffffff0 payload bytes',
    send(e) {
      const h = new Uint8Array(12);
      encodeHeader({ request: R.SET_FEATURES, flags: V1 | e.nr, size: 0xfffffff0 }, h);
      e.raw.sendBytes(h);
    },
  },
  { id: 'payload-oversized', breaks: "vhost-user.rst, 'VHOST_USER_SET_FEATURES': \"request payload: u64\"", title: 'SET_FEATURES with a 16-byte payload', send: (e) => e.raw.send(R.SET_FEATURES, V1 | e.nr, new Uint8Array([...setFeatures(e), ...new Uint8Array(8)])) },
  { id: 'payload-truncated', breaks: "vhost-user.rst, 'VHOST_USER_SET_FEATURES': \"request payload: u64\"", title: 'SET_FEATURES with a 4-byte payload', send: (e) => e.raw.send(R.SET_FEATURES, V1 | e.nr, setFeatures(e).slice(0, 4)) },
  { id: 'vring-state-truncated', breaks: "vhost-user.rst, 'VHOST_USER_SET_VRING_NUM': \"request payload: vring state description\" (index, num: 8 bytes)", title: 'SET_VRING_NUM with a 4-byte payload', send: (e) => e.raw.send(R.SET_VRING_NUM, V1 | e.nr, VringState.encode({ index: 0, num: 64 }).slice(0, 4)) },
  { id: 'fd-where-none-belongs', breaks: "vhost-user.rst, 'Communication': SET_FEATURES is not among \"messages that the front-end sends with file descriptors\"", title: 'SET_FEATURES carrying an fd', send: (e) => e.raw.send(R.SET_FEATURES, V1 | e.nr, setFeatures(e), [e.fd]) },
  { id: 'mem-table-zero-regions', breaks: "vhost-user.rst, 'Memory regions description': \"num regions\" then region0 ... region7 (a table maps memory)", title: 'SET_MEM_TABLE with 0 regions', send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([])) },
  {
    id: 'mem-table-nine-regions',
    breaks: "vhost-user.rst, 'Memory regions description': \"region0 | ... | region7\" (at most 8)",
    title: 'SET_MEM_TABLE with 9 regions',
    send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table(Array.from({ length: 9 }, (_, i) => region(e, { guestPhysAddr: BigInt(i) << 32n, userAddr: BigInt(e.memory.regions[0]!.userAddr) + (BigInt(i) << 32n) }))), Array(8).fill(e.memory.regions[0]!.fd)),
  },
  {
    id: 'mem-table-fd-count-mismatch',
    breaks: "vhost-user.rst, 'VHOST_USER_SET_MEM_TABLE': \"The size and ordering of the fds matches the number and ordering of memory regions\"",
    title: 'SET_MEM_TABLE with 2 regions and 1 fd',
    send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([region(e), region(e, { guestPhysAddr: 1n << 32n, userAddr: BigInt(e.memory.regions[0]!.userAddr) + (1n << 32n) })]), [e.memory.regions[0]!.fd]),
  },
  { id: 'mem-table-zero-size-region', breaks: REGION_RULE, title: 'SET_MEM_TABLE with a region of size 0', send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([region(e, { memorySize: 0n })]), [e.memory.regions[0]!.fd]) },
  { id: 'mem-table-guest-overflow', breaks: `${REGION_RULE}; guest address + size wraps past 2^64`, title: 'SET_MEM_TABLE with guest address + size overflowing u64', send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([region(e, { guestPhysAddr: U64_MAX - 0xfffn })]), [e.memory.regions[0]!.fd]) },
  { id: 'mem-table-user-overflow', breaks: `${REGION_RULE}; user address + size wraps past 2^64`, title: 'SET_MEM_TABLE with user address + size overflowing u64', send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([region(e, { userAddr: U64_MAX - 0xfffn })]), [e.memory.regions[0]!.fd]) },
  { id: 'mem-table-mmap-offset-overflow', breaks: `${REGION_RULE}; mmap offset + size wraps past 2^64`, title: 'SET_MEM_TABLE with mmap offset + size overflowing u64', send: (e) => e.raw.send(R.SET_MEM_TABLE, V1 | e.nr, table([region(e, { mmapOffset: U64_MAX - 0xfffn })]), [e.memory.regions[0]!.fd]) },
  { id: 'vring-index-out-of-range', breaks: INDEX_RULE, title: 'SET_VRING_NUM for ring 256', send: (e) => e.raw.send(R.SET_VRING_NUM, V1 | e.nr, VringState.encode({ index: 0x100, num: 64 })) },
  { id: 'vring-index-truncated', breaks: `${INDEX_RULE}; 0x10000 truncates to ring 0 in a u16 (CVE-2020-10723)`, title: 'SET_VRING_BASE for ring 0x10000', send: (e) => e.raw.send(R.SET_VRING_BASE, V1 | e.nr, VringState.encode({ index: 0x10000, num: 0 })) },
  { id: 'vring-num-zero', breaks: SPLIT_QUEUE, title: 'SET_VRING_NUM 0', send: (e) => e.raw.send(R.SET_VRING_NUM, V1 | e.nr, VringState.encode({ index: 0, num: 0 })) },
  { id: 'vring-num-not-power-of-2', breaks: SPLIT_QUEUE, title: 'SET_VRING_NUM 3 (split ring)', send: (e) => e.raw.send(R.SET_VRING_NUM, V1 | e.nr, VringState.encode({ index: 0, num: 3 })) },
  { id: 'vring-num-too-large', breaks: SPLIT_QUEUE, title: 'SET_VRING_NUM 65536', send: (e) => e.raw.send(R.SET_VRING_NUM, V1 | e.nr, VringState.encode({ index: 0, num: 65536 })) },
  {
    id: 'vring-addr-misaligned',
    breaks: "virtio 1.2, 'Virtqueues': the descriptor table is 16-byte aligned",
    title: 'SET_VRING_ADDR with the descriptor table at an 8-byte offset',
    prepare: memAndRing,
    send(e) {
      const u = BigInt(e.memory.regions[0]!.userAddr);
      e.raw.send(R.SET_VRING_ADDR, V1 | e.nr, VringAddr.encode({ index: 0, flags: 0, descUserAddr: u + 8n, availUserAddr: u + 0x1000n, usedUserAddr: u + 0x2000n, logGuestAddr: 0n }));
    },
  },
  { id: 'kick-nofd-with-fd', breaks: KICK_RULE, title: 'SET_VRING_KICK with the invalid-FD flag and an fd', prepare: ringSetUp, send: (e) => e.raw.send(R.SET_VRING_KICK, V1 | e.nr, U64.encode(0x100n), [e.fd]) },
  { id: 'call-no-fd-without-nofd', breaks: KICK_RULE, title: 'SET_VRING_CALL without the invalid-FD flag and without an fd', prepare: ringSetUp, send: (e) => e.raw.send(R.SET_VRING_CALL, V1 | e.nr, U64.encode(0n)) },
  {
    id: 'config-offset-overflow',
    breaks: "vhost-user.rst, 'Virtio device config space': offset and size address \"the virtio device's configuration space\"; 'VHOST_USER_GET_CONFIG': \"zero length of payload to indicate an error\"",
    title: 'GET_CONFIG at offset 0xffffffff (offset + size overflows u32)',
    requires: ProtocolFeature.CONFIG,
    send: (e) => e.raw.send(R.GET_CONFIG, V1 | e.nr, Config.encode({ offset: 0xffffffff, size: 8, flags: 0, payload: new Uint8Array(8) })),
    judge: (m) => (m.payload.length <= 12 ? { refused: `answered with a ${m.payload.length}-byte (error) reply` } : { accepted: `answered with ${m.payload.length} bytes of config space` }),
  },
  {
    id: 'log-base-overflow',
    breaks: "vhost-user.rst, 'Log description': the log is \"log size\" bytes from \"log offset\" in the fd; offset + size wraps past 2^64 (CVE-2020-10722)",
    title: 'SET_LOG_BASE with log offset + log size overflowing u64',
    requires: ProtocolFeature.LOG_SHMFD,
    send: (e) => e.raw.send(R.SET_LOG_BASE, V1 | e.nr, Log.encode({ mmapSize: 0x1000n, mmapOffset: U64_MAX - 0x7ffn }), [e.memory.regions[0]!.fd]),
    judge: (m) => (m.payload.length === 8 && U64.decode(m.payload) !== 0n ? { refused: `NAK ${U64.decode(m.payload)}` } : { accepted: `answered with a ${m.payload.length}-byte success reply` }),
  },
];

async function negotiate(ctx: CheckContext, c: Malformed): Promise<Env> {
  const raw = await ctx.raw();
  const h = await raw.handshake();
  if (c.requires !== undefined && !hasBit(h.protocolFeatures, c.requires)) {
    skip(`protocol feature ${Object.entries(ProtocolFeature).find(([, b]) => b === c.requires)![0]} not offered`);
  }
  const features = h.features & (bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
  await raw.expectAck(R.SET_FEATURES, U64.encode(features));
  const env: Env = { ctx, raw, h, nr: h.replyAck ? NEED_REPLY : 0, fd: ctx.eventFd().fd, memory: ctx.memory({ size: 1 << 20 }), features };
  await c.prepare?.(env);
  return env;
}

/** How the back-end answered: refused (described) or a Finding. */
async function verdict(env: Env, c: Malformed): Promise<string> {
  const { raw, ctx } = env;
  const out = await raw.next(ctx.timeoutMs);
  if (out.kind === 'closed') return 'refused: the back-end closed the connection';
  if (out.kind === 'reply') {
    const m = out.message;
    closeAll(m.fds.splice(0));
    const v: Verdict = c.judge
      ? c.judge(m, env)
      : m.payload.length === 8 && U64.decode(m.payload) !== 0n
        ? { refused: `NAK ${U64.decode(m.payload)}` }
        : { accepted: m.payload.length === 8 ? 'acknowledged with 0' : `answered with ${m.payload.length} bytes (request ${m.request})` };
    if ('accepted' in v) {
      // Some back-ends ack 0 and then drop the connection: still an acceptance by REPLY_ACK's rule, but say so.
      const after = await raw.next(150);
      fail(`accepted: ${v.accepted}${after.kind === 'closed' ? ', then closed the connection' : ''}`);
    }
    return `refused: ${v.refused}`;
  }
  if (raw.replyAck) fail(`neither a NAK nor a close within ${ctx.timeoutMs} ms (NEED_REPLY was set)`);
  // Without REPLY_ACK only a close can refuse: a barrier tells whether the back-end carried on.
  raw.send(R.GET_FEATURES);
  const barrier = await raw.next(ctx.timeoutMs);
  if (barrier.kind === 'closed') return 'refused: the back-end closed the connection';
  if (barrier.kind === 'reply') fail('accepted: the back-end carried on and answered GET_FEATURES (REPLY_ACK not negotiated: only a close refuses)');
  return fail(`the back-end stopped answering: no reply to GET_FEATURES within ${ctx.timeoutMs} ms`);
}

/**
 * A new connection must be served (a back-end that serves one front-end at a time may need a
 * moment; a one-shot back-end is started again by ctx.nextFrontEnd, which fails the check if
 * it crashed instead of exiting cleanly). Call with every connection of the check closed.
 */
export async function servesFreshConnection(ctx: CheckContext): Promise<void> {
  await ctx.nextFrontEnd();
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    let raw: RawSession | null = null;
    try {
      raw = await ctx.raw();
      await raw.u64(R.GET_FEATURES);
      return;
    } catch (e) {
      last = e instanceof VhostUserError ? e.toLine() : (e as Error).message;
      // Nobody listening is an answer already; a back-end that serves one front-end at a
      // time may still be tearing the last one down, which is worth another try.
      if (isVhostUserError(e, 'VHOST_CONNECT_TIMEOUT') || isVhostUserError(e, 'VHOST_CONNECT_FAILED')) break;
      await ctx.sleep(100 * attempt);
    } finally {
      raw?.close();
    }
  }
  fail(`a fresh connection was not served afterwards: ${last}`);
}

function malformedCheck(c: Malformed): Check {
  return {
    id: `negative.${c.id}`,
    rule: `${c.breaks}. ${REFUSE}`,
    title: `${c.title}: refused (NAK or close), and a fresh connection is served`,
    timeoutMs: 15_000,
    async run(ctx) {
      const env = await negotiate(ctx, c);
      c.send(env);
      const how = await verdict(env, c);
      env.raw.close();
      try {
        await servesFreshConnection(ctx);
      } catch (e) {
        // Keep the verdict: "refused: closed, then exited with code 1" says more than either half.
        if (e instanceof Finding) fail(`${how}; then ${e.message}`);
        throw e;
      }
      return `${how}; a fresh connection was served`;
    },
  };
}

export const negativeChecks: Check[] = [
  ...CASES.map(malformedCheck),
  {
    id: 'negative.inband-without-deps',
    rule: "vhost-user.rst, 'In-band notifications': \"the back-end should close the connection as a response to a VHOST_USER_SET_PROTOCOL_FEATURES message that sets the in-band notifications feature flag without the other two\"",
    title: 'SET_PROTOCOL_FEATURES with INBAND_NOTIFICATIONS but without BACKEND_REQ and REPLY_ACK closes the connection',
    timeoutMs: 15_000,
    async run(ctx) {
      const raw = await ctx.raw();
      const f = await raw.u64(R.GET_FEATURES);
      if (!hasBit(f, VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES)) skip('VHOST_USER_F_PROTOCOL_FEATURES not offered');
      const offered = await raw.u64(R.GET_PROTOCOL_FEATURES);
      if (!hasBit(offered, ProtocolFeature.INBAND_NOTIFICATIONS)) skip('protocol feature INBAND_NOTIFICATIONS not offered');
      raw.send(R.SET_PROTOCOL_FEATURES, V1, U64.encode(bit(ProtocolFeature.INBAND_NOTIFICATIONS)));
      raw.send(R.GET_FEATURES);
      const out = await raw.next(ctx.timeoutMs);
      if (out.kind !== 'closed') fail(out.kind === 'reply' ? 'the back-end carried on (answered GET_FEATURES)' : 'the back-end neither closed nor answered');
      raw.close();
      await servesFreshConnection(ctx);
      return 'closed; a fresh connection was served';
    },
  },
];
