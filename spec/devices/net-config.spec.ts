import { expect } from 'chai';
import { decodeNetConfig, formatMac, NET_CONFIG_SIZE } from '../../lib/devices/net/net-config.js';
import { bit, VirtioNetFeature as F } from '../../lib/protocol/constants.js';

const ALL = [F.VIRTIO_NET_F_MAC, F.VIRTIO_NET_F_STATUS, F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_MTU, F.VIRTIO_NET_F_SPEED_DUPLEX, F.VIRTIO_NET_F_RSS].reduce(
  (m, b) => m | bit(b),
  0n,
);

/** A 24-byte virtio_net_config, little-endian, every field distinct. */
function sample(): Uint8Array {
  const b = new Uint8Array(NET_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  b.set([0x52, 0x54, 0x00, 0x12, 0x34, 0xab], 0);
  v.setUint16(6, 0x0003, true); // LINK_UP | ANNOUNCE
  v.setUint16(8, 4, true);
  v.setUint16(10, 9000, true);
  v.setUint32(12, 25000, true);
  v.setUint8(16, 1);
  v.setUint8(17, 40);
  v.setUint16(18, 128, true);
  v.setUint32(20, 0x1ff, true);
  return b;
}

describe('devices/net-config', () => {
  it('asks for 24 bytes: through supported_hash_types', () => {
    expect(NET_CONFIG_SIZE).to.equal(24);
  });

  it('decodes every field at its spec offset when the features are set', () => {
    expect(decodeNetConfig(sample(), ALL)).to.deep.equal({
      mac: '52:54:00:12:34:ab',
      status: { linkUp: true, announce: true },
      maxVirtqueuePairs: 4,
      mtu: 9000,
      speed: 25000,
      duplex: 'full',
      rssMaxKeySize: 40,
      rssMaxIndirectionTableLength: 128,
      supportedHashTypes: 0x1ff,
    });
  });

  it('leaves fields of features not set null', () => {
    const c = decodeNetConfig(sample(), 0n);
    expect(Object.values(c).every((v) => v === null)).to.equal(true);
    const mtuOnly = decodeNetConfig(sample(), bit(F.VIRTIO_NET_F_MTU));
    expect(mtuOnly.mtu).to.equal(9000);
    expect(mtuOnly.mac).to.equal(null);
  });

  it('gates fields on the features the spec names (MQ or RSS; RSS or HASH_REPORT)', () => {
    const rss = decodeNetConfig(sample(), bit(F.VIRTIO_NET_F_RSS));
    expect(rss.maxVirtqueuePairs).to.equal(4);
    const hashReport = decodeNetConfig(sample(), bit(F.VIRTIO_NET_F_HASH_REPORT));
    expect(hashReport).to.include({ rssMaxKeySize: 40, rssMaxIndirectionTableLength: null, supportedHashTypes: 0x1ff, maxVirtqueuePairs: null });
  });

  it('reads status bits separately and speed/duplex unknown values', () => {
    const b = sample();
    const v = new DataView(b.buffer);
    v.setUint16(6, 0x0002, true);
    v.setUint32(12, 0xffffffff, true);
    v.setUint8(16, 0xff);
    const c = decodeNetConfig(b, ALL);
    expect(c.status).to.deep.equal({ linkUp: false, announce: true });
    expect(c.speed).to.equal('unknown');
    expect(c.duplex).to.equal('unknown');
    v.setUint32(12, 0x80000000, true);
    v.setUint8(16, 0);
    expect(decodeNetConfig(b, ALL)).to.include({ speed: 'unknown', duplex: 'half' });
    v.setUint32(12, 0x7fffffff, true);
    expect(decodeNetConfig(b, ALL).speed).to.equal(0x7fffffff);
  });

  it('accepts a shorter buffer: fields past the end are null', () => {
    const c = decodeNetConfig(sample().subarray(0, 10), ALL);
    expect(c).to.include({ mac: '52:54:00:12:34:ab', maxVirtqueuePairs: 4, mtu: null, speed: null, duplex: null, supportedHashTypes: null });
    expect(c.status).to.deep.equal({ linkUp: true, announce: true });
    expect(decodeNetConfig(sample().subarray(0, 11), ALL).mtu).to.equal(null);
    expect(decodeNetConfig(new Uint8Array(0), ALL).mac).to.equal(null);
  });

  it('honours the byteOffset of a view into a larger buffer', () => {
    const big = new Uint8Array(4 + NET_CONFIG_SIZE);
    big.set(sample(), 4);
    expect(decodeNetConfig(big.subarray(4), ALL).mtu).to.equal(9000);
  });

  it('formats a MAC lower-case with colons', () => {
    expect(formatMac(Uint8Array.of(0xde, 0xad, 0xbe, 0xef, 0x00, 0x01))).to.equal('de:ad:be:ef:00:01');
  });
});
