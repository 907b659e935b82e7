/**
 * The inflight checks against scripted peers: a peer that allocates the area like
 * libvhost-user (and variants that get it wrong, or keep every fd) shows that the
 * layout and leak checks pass and fail on the bytes and fds they get. (The reference
 * blk back-end passes them too: spec/conformance/reference.spec.ts.)
 */
import { expect } from 'chai';
import { runConformance, type ConformanceReport } from '../../lib/conformance/index.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import { bit, FrontendRequest as R, ProtocolFeature } from '../../lib/protocol/constants.js';
import { Inflight } from '../../lib/protocol/payloads.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';

interface PeerFaults {
  /** mmap_size reported, instead of the area's real size. */
  mmapSize?: number;
  /** Size of the memfd, instead of the area's size. */
  fdSize?: number;
  /** Version written in each queue region header (default 1). */
  version?: number;
  /** Keep a duplicate of every fd handed out (a leak). */
  leak?: boolean;
}

function inflightPeer(faults: PeerFaults = {}): { peer: RawPeer; kept: number[] } {
  const kept: number[] = [];
  const peer = RawPeer.start((m, p) => {
    if (m.request === R.SET_INFLIGHT_FD) {
      closeFd(m.fds.shift()!);
      return 'default';
    }
    if (m.request !== R.GET_INFLIGHT_FD) return 'default';
    const req = Inflight.decode(m.payload);
    const perQueue = Math.ceil((16 + 16 * req.queueSize) / 64) * 64;
    const size = perQueue * req.numQueues;
    const fd = libc.memfd_create('inflight', C.MFD_CLOEXEC);
    libc.ftruncate(fd, faults.fdSize ?? size);
    const map = Mapping.map(fd, size);
    for (let q = 0; q < req.numQueues; q++) {
      const w = map.window(q * perQueue, 16);
      const dv = new DataView(w.buffer, w.byteOffset, 16);
      dv.setUint16(8, faults.version ?? 1, true);
      dv.setUint16(10, req.queueSize, true);
    }
    map.close();
    p.reply(m, Inflight.encode({ mmapSize: BigInt(faults.mmapSize ?? size), mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize }), undefined, [fd]);
    if (faults.leak) kept.push(fd);
    else closeFd(fd);
  });
  peer.protocolFeatures |= bit(ProtocolFeature.INFLIGHT_SHMFD);
  return { peer, kept };
}

describe('conformance inflight checks against scripted peers', function () {
  this.timeout(20_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  let peer: { peer: RawPeer; kept: number[] } | null = null;
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    if (peer) {
      for (const fd of peer.kept) closeFd(fd);
      peer.peer.close();
      peer = null;
    }
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  async function run(only: string, faults?: PeerFaults): Promise<ConformanceReport> {
    peer = inflightPeer(faults);
    return runConformance({ socket: peer.peer.path, device: 'blk', only, backendPid: process.pid });
  }

  it('passes an area laid out as the spec describes, and SET_INFLIGHT_FD is acked', async () => {
    const [c] = (await run('inflight.get-inflight-fd')).checks;
    expect(c!.status, c!.detail).to.equal('pass');
    // RawPeer reports 2 queues (GET_QUEUE_NUM): 2 × 64-byte-aligned (16 + 16 × 64).
    expect(c!.detail).to.equal('mmap_size 2176 for 2 queue(s) of 64, fd of 2176 bytes; SET_INFLIGHT_FD acked 0');
  });

  it('fails an fd smaller than mmap_offset + mmap_size', async () => {
    const [c] = (await run('inflight.get-inflight-fd', { fdSize: 1024 })).checks;
    expect(c!.status).to.equal('fail');
    expect(c!.detail).to.equal('the inflight fd holds 1024 bytes, less than mmap_offset 0 + mmap_size 2176');
    expect(c!.evidence.some((l) => /^< GET_INFLIGHT_FD flags=0x5 size=24 fds=1 \{mmapSize=0x880 mmapOffset=0x0 numQueues=2 queueSize=64\}$/.test(l))).to.equal(true);
  });

  it('fails an mmap_size too small for the queue regions', async () => {
    const [c] = (await run('inflight.get-inflight-fd', { mmapSize: 1000 })).checks;
    expect(c!.status).to.equal('fail');
    expect(c!.detail).to.equal('mmap_size 1000 < 2 queues × 1040 bytes (QueueRegionSplit of 64 descriptors)');
  });

  it('fails a queue region whose version is neither 0 nor 1', async () => {
    const [c] = (await run('inflight.get-inflight-fd', { version: 7 })).checks;
    expect(c!.status).to.equal('fail');
    expect(c!.detail).to.equal('queue 0 region: version 7, neither 0 (uninitialized) nor 1');
  });

  it('the leak check passes a peer that closes its inflight fds and fails one that keeps them', async () => {
    const [ok] = (await run('leak.get-inflight-fd')).checks;
    expect(ok!.status, ok!.detail).to.equal('pass');
    peer!.peer.close();
    peer = null;
    const [leaky] = (await run('leak.get-inflight-fd', { leak: true })).checks;
    expect(leaky!.status).to.equal('fail');
    expect(leaky!.detail).to.match(/^the back-end holds 64 more fds after 64 GET_INFLIGHT_FDs \(\d+ → \d+\)$/);
  });
});
