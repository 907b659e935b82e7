import { expect } from 'chai';
import {
  BackendRequest,
  FrontendRequest,
  ProtocolFeature,
  VirtioBlkFeature,
  VirtioFeature,
  VirtioNetFeature,
  backendRequestName,
  bit,
  featureNames,
  frontendRequestName,
  hasBit,
  protocolFeatureNames,
} from '../../lib/protocol/index.js';
import { thrown } from './hex.js';

describe('protocol constants', () => {
  it('numbers front-end requests 1..45 and back-end requests 1..10 without gaps', () => {
    expect(Object.values(FrontendRequest).sort((a, b) => a - b)).to.deep.equal(
      Array.from({ length: 45 }, (_, i) => i + 1),
    );
    expect(Object.values(BackendRequest).sort((a, b) => a - b)).to.deep.equal(
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
  });

  it('names requests, and unknown codes as UNKNOWN(<code>)', () => {
    expect(frontendRequestName(1)).to.equal('GET_FEATURES');
    expect(frontendRequestName(21)).to.equal('SET_BACKEND_REQ_FD');
    expect(frontendRequestName(35)).to.equal('VRING_KICK');
    expect(frontendRequestName(45)).to.equal('GET_VRING_BASE_SKIP_DRAIN');
    expect(frontendRequestName(0)).to.equal('UNKNOWN(0)');
    expect(frontendRequestName(46)).to.equal('UNKNOWN(46)');
    expect(backendRequestName(9)).to.equal('SHMEM_MAP');
    expect(backendRequestName(0)).to.equal('UNKNOWN(0)');
    expect(backendRequestName(11)).to.equal('UNKNOWN(11)');
  });

  it('numbers protocol features 0..23 as in the field notes', () => {
    expect(Object.values(ProtocolFeature)).to.deep.equal(Array.from({ length: 24 }, (_, i) => i));
    expect(ProtocolFeature.REPLY_ACK).to.equal(3);
    expect(ProtocolFeature.CONFIGURE_MEM_SLOTS).to.equal(15);
    expect(ProtocolFeature.GPA_ADDRESSES).to.equal(21);
    expect(ProtocolFeature.SHMEM).to.equal(22);
  });

  it('keeps generic and device feature bits apart', () => {
    const generic = new Set<number>(Object.values(VirtioFeature));
    for (const n of [...Object.values(VirtioNetFeature), ...Object.values(VirtioBlkFeature)]) {
      expect(generic.has(n), `bit ${n}`).to.equal(false);
    }
    expect(VirtioFeature.VHOST_F_LOG_ALL).to.equal(26);
    expect(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES).to.equal(30);
  });

  it('bit() and hasBit() work on u64 bit numbers only', () => {
    expect(bit(0)).to.equal(1n);
    expect(bit(63)).to.equal(1n << 63n);
    expect(hasBit(bit(30) | bit(32), 32)).to.equal(true);
    expect(hasBit(bit(30), 31)).to.equal(false);
    for (const bad of [-1, 64, 1.5, Number.NaN]) {
      expect(thrown(() => bit(bad)).code, String(bad)).to.equal('VHOST_INVALID_ARGUMENT');
      expect(thrown(() => hasBit(1n, bad)).code, String(bad)).to.equal('VHOST_INVALID_ARGUMENT');
    }
  });

  describe('featureNames', () => {
    const mask = bit(5) | bit(30) | bit(32) | bit(34) | bit(45) | bit(63);

    it('names generic bits always and device bits per device, ascending', () => {
      expect(featureNames(mask, 'net')).to.deep.equal([
        'VIRTIO_NET_F_MAC',
        'VHOST_USER_F_PROTOCOL_FEATURES',
        'VIRTIO_F_VERSION_1',
        'VIRTIO_F_RING_PACKED',
        'BIT_45',
        'VIRTIO_NET_F_SPEED_DUPLEX',
      ]);
      expect(featureNames(mask)).to.deep.equal([
        'BIT_5',
        'VHOST_USER_F_PROTOCOL_FEATURES',
        'VIRTIO_F_VERSION_1',
        'VIRTIO_F_RING_PACKED',
        'BIT_45',
        'BIT_63',
      ]);
      expect(featureNames(mask, 'blk')).to.deep.equal([
        'VIRTIO_BLK_F_RO',
        'VHOST_USER_F_PROTOCOL_FEATURES',
        'VIRTIO_F_VERSION_1',
        'VIRTIO_F_RING_PACKED',
        'BIT_45',
        'BIT_63',
      ]);
    });

    it('handles the empty mask, VHOST_F_LOG_ALL and blk FLUSH', () => {
      expect(featureNames(0n)).to.deep.equal([]);
      expect(featureNames(bit(26) | bit(9), 'blk')).to.deep.equal(['VIRTIO_BLK_F_FLUSH', 'VHOST_F_LOG_ALL']);
    });

    it('rejects a negative mask', () => {
      expect(thrown(() => featureNames(-1n)).code).to.equal('VHOST_INVALID_ARGUMENT');
    });
  });

  describe('protocolFeatureNames', () => {
    it('names bits as in the table, unknown ones as BIT_<n>', () => {
      expect(protocolFeatureNames(0b1011n)).to.deep.equal(['MQ', 'LOG_SHMFD', 'REPLY_ACK']);
      expect(protocolFeatureNames(bit(19) | bit(23) | bit(40))).to.deep.equal([
        'DEVICE_STATE',
        'GET_VRING_BASE_SKIP_DRAIN',
        'BIT_40',
      ]);
      expect(protocolFeatureNames(0n)).to.deep.equal([]);
    });
  });
});
