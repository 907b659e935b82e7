/** Inflight I/O tracking: GET_INFLIGHT_FD / SET_INFLIGHT_FD (protocol feature INFLIGHT_SHMFD). */
import { fstatSync } from 'node:fs';
import { closeFd } from '../../native/libc.js';
import { Mapping } from '../../native/mapping.js';
import { bit, FrontendRequest as R, hasBit, ProtocolFeature, VirtioFeature } from '../../protocol/constants.js';
import { Inflight, U64 } from '../../protocol/payloads.js';
import { SUPPORTED_PROTOCOL_FEATURES } from '../../client/vhost-user-client.js';
import { expectThat, skip, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import type { RawSession } from '../raw-session.js';

const QUEUE_SIZE = 64;
/** QueueRegionSplit's header: features u64, version, desc_num, last_batch_head, used_idx (u16 each). */
const SPLIT_HEADER = 16;
/** DescStateSplit: inflight u8, padding[5], next u16, counter u64. */
const DESC_STATE_SPLIT = 16;

/** Handshake with INFLIGHT_SHMFD, SET_FEATURES; returns the session and the queue count to ask for. */
export async function inflightSession(ctx: CheckContext): Promise<{ raw: RawSession; numQueues: number }> {
  const raw = await ctx.raw();
  const h = await raw.handshake(SUPPORTED_PROTOCOL_FEATURES | bit(ProtocolFeature.INFLIGHT_SHMFD));
  if (!hasBit(h.protocolFeatures, ProtocolFeature.INFLIGHT_SHMFD)) skip('protocol feature INFLIGHT_SHMFD not offered');
  const numQueues = hasBit(h.protocolFeatures, ProtocolFeature.MQ) ? Number(await raw.u64(R.GET_QUEUE_NUM)) : 1;
  await raw.expectAck(R.SET_FEATURES, U64.encode(h.features & (bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES))));
  return { raw, numQueues };
}

/** GET_INFLIGHT_FD: the description and the fd (owned by the caller). */
export async function getInflightFd(raw: RawSession, numQueues: number): Promise<{ desc: Inflight; fd: number }> {
  const request = Inflight.encode({ mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize: QUEUE_SIZE });
  const m = await raw.call(R.GET_INFLIGHT_FD, request, { keepFds: true });
  const fds = m.fds.splice(0);
  try {
    expectThat(fds.length === 1, `GET_INFLIGHT_FD reply carries ${fds.length} fds, expected 1`);
    expectThat(m.payload.length === Inflight.minSize, `GET_INFLIGHT_FD reply is ${m.payload.length} bytes, not the ${Inflight.minSize}-byte inflight description`);
    return { desc: Inflight.decode(m.payload, 'GET_INFLIGHT_FD'), fd: fds.shift()! };
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

export const inflightChecks: Check[] = [
  {
    id: 'inflight.get-inflight-fd',
    rule: "vhost-user.rst, 'Inflight I/O tracking': the buffer is \"queue0 region | queue1 region | ... | queueN region\", each a QueueRegionSplit (\"version ... Zero value indicates an uninitialized buffer\") with desc_num DescStateSplit entries",
    title: 'GET_INFLIGHT_FD returns an fd of mmap_offset + mmap_size bytes holding one region per queue, then SET_INFLIGHT_FD takes it back',
    async run(ctx) {
      const { raw, numQueues } = await inflightSession(ctx);
      const { desc, fd } = await getInflightFd(raw, numQueues);
      try {
        const size = Number(desc.mmapSize);
        const offset = Number(desc.mmapOffset);
        const perQueue = SPLIT_HEADER + DESC_STATE_SPLIT * QUEUE_SIZE;
        expectThat(size >= numQueues * perQueue, `mmap_size ${size} < ${numQueues} queues × ${perQueue} bytes (QueueRegionSplit of ${QUEUE_SIZE} descriptors)`);
        const fileSize = fstatSync(fd).size;
        expectThat(fileSize >= offset + size, `the inflight fd holds ${fileSize} bytes, less than mmap_offset ${offset} + mmap_size ${size}`);
        const mapping = ctx.own(Mapping.map(fd, offset + size));
        const regionSize = Math.floor(size / numQueues);
        for (let q = 0; q < numQueues; q++) {
          const dv = mapping.dataView(offset + q * regionSize, SPLIT_HEADER);
          const version = dv.getUint16(8, true);
          const descNum = dv.getUint16(10, true);
          expectThat(version === 0 || version === 1, `queue ${q} region: version ${version}, neither 0 (uninitialized) nor 1`);
          expectThat(version === 0 || descNum === QUEUE_SIZE, `queue ${q} region: desc_num ${descNum}, queue size ${QUEUE_SIZE}`);
        }
        const ack = raw.replyAck;
        await raw.expectAck(R.SET_INFLIGHT_FD, Inflight.encode({ ...desc, numQueues, queueSize: QUEUE_SIZE }), [fd]);
        return `mmap_size ${size} for ${numQueues} queue(s) of ${QUEUE_SIZE}, fd of ${fileSize} bytes; SET_INFLIGHT_FD ${ack ? 'acked 0' : 'survived'}`;
      } finally {
        closeFd(fd);
      }
    },
  },
];

