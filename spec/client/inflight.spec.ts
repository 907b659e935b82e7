/**
 * GET_INFLIGHT_FD / SET_INFLIGHT_FD (vhost-user.rst, "Inflight I/O tracking"):
 * the back-end allocates the area, the front-end keeps its fd and hands the same
 * area to the next back-end. Against a scripted peer, since neither DPDK 22.11
 * nor qemu-storage-daemon 7.2 offers INFLIGHT_SHMFD (checked by the
 * real-back-end suite).
 */
import { expect } from 'chai';
import { SUPPORTED_PROTOCOL_FEATURES, VhostUserClient, type InflightArea } from '../../lib/client/vhost-user-client.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import { bit, FrontendRequest as R, ProtocolFeature } from '../../lib/protocol/constants.js';
import { Inflight } from '../../lib/protocol/payloads.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { expectRejectCode, resourceSnapshot, settle } from '../helpers/resources.js';

const WANT = SUPPORTED_PROTOCOL_FEATURES | bit(ProtocolFeature.INFLIGHT_SHMFD);

/** A peer that allocates an inflight area like libvhost-user: one 64-byte-aligned QueueRegionSplit per queue. */
function inflightPeer(): RawPeer {
  const peer = RawPeer.start((m, p) => {
    if (m.request !== R.GET_INFLIGHT_FD) return 'default';
    const req = Inflight.decode(m.payload);
    const perQueue = Math.ceil((16 + 16 * req.queueSize) / 64) * 64;
    const size = perQueue * req.numQueues;
    const fd = libc.memfd_create('inflight', C.MFD_CLOEXEC);
    libc.ftruncate(fd, size);
    const map = Mapping.map(fd, size);
    for (let q = 0; q < req.numQueues; q++) {
      const w = map.window(q * perQueue, 16);
      const dv = new DataView(w.buffer, w.byteOffset, 16);
      dv.setUint16(8, 1, true); // version
      dv.setUint16(10, req.queueSize, true); // desc_num
    }
    map.close();
    p.reply(m, Inflight.encode({ mmapSize: BigInt(size), mmapOffset: 0n, numQueues: req.numQueues, queueSize: req.queueSize }), undefined, [fd]);
    closeFd(fd);
  });
  peer.protocolFeatures |= bit(ProtocolFeature.INFLIGHT_SHMFD);
  return peer;
}

describe('inflight area (GET/SET_INFLIGHT_FD)', () => {
  let snap: ReturnType<typeof resourceSnapshot>;
  const peers: RawPeer[] = [];
  const clients: VhostUserClient[] = [];
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const p of peers.splice(0)) p.close();
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it("gets the back-end's area, keeps its fd, and hands the same bytes to the next back-end", async () => {
    const first = inflightPeer();
    peers.push(first);
    const a = await VhostUserClient.connect(first.path, { timeoutMs: 1000 });
    clients.push(a);
    await a.negotiate({ protocolFeatures: WANT });
    const area: InflightArea = await a.getInflightFd(2, 256);
    try {
      expect(area.mmapSize).to.equal(2n * BigInt(Math.ceil((16 + 16 * 256) / 64) * 64));
      expect(area).to.deep.include({ numQueues: 2, queueSize: 256 });
      a.close();
      // A second back-end (after a crash of the first) gets the area as it was.
      let seen = -1;
      const second = RawPeer.start((m) => {
        // What a restarted back-end does first with the area: map it and read the queue regions.
        if (m.request === R.SET_INFLIGHT_FD && m.fds.length === 1) {
          const theirs = Mapping.map(m.fds[0]!, Number(Inflight.decode(m.payload).mmapSize));
          const w = theirs.window(Math.ceil((16 + 16 * 256) / 64) * 64, 16);
          seen = new DataView(w.buffer, w.byteOffset, 16).getUint16(10, true);
          theirs.close();
        }
        return 'default';
      });
      second.protocolFeatures |= bit(ProtocolFeature.INFLIGHT_SHMFD);
      peers.push(second);
      const b = await VhostUserClient.connect(second.path, { timeoutMs: 1000 });
      clients.push(b);
      await b.negotiate({ protocolFeatures: WANT });
      await b.setInflightFd(area);
      const m = second.log.find((x) => x.request === R.SET_INFLIGHT_FD)!;
      expect(Inflight.decode(m.payload)).to.deep.equal({ mmapSize: area.mmapSize, mmapOffset: 0n, numQueues: 2, queueSize: 256 });
      expect(m.fds).to.have.length(1);
      expect(seen, 'desc_num of queue 1, as the first back-end wrote it').to.equal(256);
    } finally {
      closeFd(area.fd);
    }
  });

  it('a reply announcing an area without an fd is VHOST_INVALID_PAYLOAD, and breaks the connection', async () => {
    const peer = RawPeer.start((m, p) => {
      if (m.request !== R.GET_INFLIGHT_FD) return 'default';
      p.reply(m, Inflight.encode({ mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 128 }));
    });
    peer.protocolFeatures |= bit(ProtocolFeature.INFLIGHT_SHMFD);
    peers.push(peer);
    const c = await VhostUserClient.connect(peer.path, { timeoutMs: 1000 });
    clients.push(c);
    await c.negotiate({ protocolFeatures: WANT });
    const err = await expectRejectCode(c.getInflightFd(1, 128), 'VHOST_INVALID_PAYLOAD');
    expect(err).to.have.property('request', 'GET_INFLIGHT_FD');
    expect(c.isBroken).to.equal(true);
  });

  it('is refused before sending when INFLIGHT_SHMFD was not negotiated', async () => {
    const peer = RawPeer.start();
    peers.push(peer);
    const c = await VhostUserClient.connect(peer.path, { timeoutMs: 1000 });
    clients.push(c);
    await c.negotiate();
    await expectRejectCode(c.getInflightFd(1, 128), 'VHOST_FEATURE_NOT_NEGOTIATED');
    expect(peer.log.some((m) => m.request === R.GET_INFLIGHT_FD)).to.equal(false);
  });
});
