/**
 * The reference net device's migration announcements and MTU: SEND_RARP puts the
 * RARP frame DPDK would broadcast on the guest's RX ring (the loopback is its
 * network), and NET_SET_MTU takes any MTU a virtio-net device may have.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { RxBurst, VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { VhostUserError } from '../../lib/errors.js';
import { buildRarpFrame } from '../../lib/net/frame-builder.js';
import { ProtocolFeature } from '../../lib/protocol/constants.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

describe('reference net device: SEND_RARP and NET_SET_MTU', () => {
  let tmp: ReturnType<typeof tempSocketPath>;
  let backend: ReferenceBackend;
  let net: VirtioNet | null = null;
  let snap: ReturnType<typeof resourceSnapshot>;
  beforeEach(() => {
    snap = resourceSnapshot();
    tmp = tempSocketPath();
    backend = ReferenceBackend.listen(tmp.path, { device: 'net' });
  });
  afterEach(async () => {
    net?.close();
    net = null;
    backend.close();
    tmp.cleanup();
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('SEND_RARP: a 60-byte broadcast RARP (op 3) from the MAC given arrives on RX queue 0', async () => {
    net = await VirtioNet.open(tmp.path, { mtu: 1400 });
    expect(net.client.hasProtocolFeature(ProtocolFeature.RARP)).to.equal(true);
    const mac = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);
    await net.client.sendRarp(mac);
    const burst = new RxBurst();
    let frames: Uint8Array[] = [];
    for (let i = 0; i < 200 && frames.length === 0; i++, await settle(2)) {
      const n = net.receiveBurst(0, burst);
      frames = Array.from({ length: n }, (_, k) => burst.frame(k));
    }
    expect(frames).to.have.length(1);
    const f = frames[0]!;
    expect(f).to.deep.equal(buildRarpFrame(mac));
    expect(Buffer.from(f.subarray(0, 14)).toString('hex')).to.equal('ffffffffffff' + '525400abcdef' + '8035');
    expect(Buffer.from(f.subarray(14, 42)).toString('hex')).to.equal('0001080006040003' + '525400abcdef' + '00000000' + '525400abcdef' + '00000000');
  });

  it('NET_SET_MTU: 1400 acked at start, 67 refused with VHOST_NACK and the client stays usable', async () => {
    net = await VirtioNet.open(tmp.path, { mtu: 1400 });
    const err = await net.client.netSetMtu(67).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(VhostUserError).with.property('code', 'VHOST_NACK');
    expect(net.client.isBroken).to.equal(false);
    await net.client.netSetMtu(9000);
  });
});
