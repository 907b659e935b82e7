/**
 * `struct virtio_net_config` (virtio 1.3, 5.1.4 "Network Device: Device
 * configuration layout"):
 *
 *   u8 mac[6] @0; le16 status @6; le16 max_virtqueue_pairs @8; le16 mtu @10;
 *   le32 speed @12; u8 duplex @16; u8 rss_max_key_size @17;
 *   le16 rss_max_indirection_table_length @18; le32 supported_hash_types @20;
 *   (le32 supported_tunnel_types @24, 1.4 drafts, not decoded)
 */
import { VirtioNetFeature as F } from '../../protocol/constants.js';
import { ConfigReader } from '../config-reader.js';

/** Bytes to ask GET_CONFIG for: through `supported_hash_types`, the last field decoded. */
export const NET_CONFIG_SIZE = 24;

/** virtio 1.3 5.1.4: VIRTIO_NET_S_LINK_UP, VIRTIO_NET_S_ANNOUNCE. */
const S_LINK_UP = 1;
const S_ANNOUNCE = 2;

/** The `status` field of the config space (5.1.4, VIRTIO_NET_F_STATUS), bit by bit. */
export interface NetStatus {
  /** VIRTIO_NET_S_LINK_UP: the link is up; a driver should not expect traffic while it is false. */
  linkUp: boolean;
  /** VIRTIO_NET_S_ANNOUNCE: the device asks the driver to announce its addresses (after a migration, 5.1.6.5.4). */
  announce: boolean;
}

/**
 * A decoded net config space. A field is null when its feature bit is not set in
 * the mask given to {@link decodeNetConfig} or when the bytes end before it.
 */
export interface NetConfig {
  /** `52:54:00:12:34:56`; VIRTIO_NET_F_MAC. */
  mac: string | null;
  /** VIRTIO_NET_F_STATUS. */
  status: NetStatus | null;
  /** VIRTIO_NET_F_MQ or VIRTIO_NET_F_RSS. */
  maxVirtqueuePairs: number | null;
  /** VIRTIO_NET_F_MTU. */
  mtu: number | null;
  /** Mbit/s, or 'unknown' (above 0x7fffffff); VIRTIO_NET_F_SPEED_DUPLEX. */
  speed: number | 'unknown' | null;
  /** VIRTIO_NET_F_SPEED_DUPLEX. */
  duplex: 'half' | 'full' | 'unknown' | null;
  /** VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT. */
  rssMaxKeySize: number | null;
  /** VIRTIO_NET_F_RSS. */
  rssMaxIndirectionTableLength: number | null;
  /** Bitmask of VIRTIO_NET_HASH_TYPE_*; VIRTIO_NET_F_RSS or VIRTIO_NET_F_HASH_REPORT. */
  supportedHashTypes: number | null;
}

/**
 * Decodes a net config space read with GET_CONFIG. `features` is the device's
 * feature mask: the offered one when probing (the spec lets a driver read fields
 * of offered features during negotiation), the negotiated one after SET_FEATURES.
 */
export function decodeNetConfig(bytes: Uint8Array, features: bigint): NetConfig {
  const r = new ConfigReader(bytes, features);
  const hashing = [F.VIRTIO_NET_F_RSS, F.VIRTIO_NET_F_HASH_REPORT];
  return {
    mac: r.when(F.VIRTIO_NET_F_MAC, 6, () => formatMac(r.bytes(0, 6)!)),
    status: r.when(F.VIRTIO_NET_F_STATUS, 8, () => {
      const s = r.u16(6)!;
      return { linkUp: (s & S_LINK_UP) !== 0, announce: (s & S_ANNOUNCE) !== 0 };
    }),
    maxVirtqueuePairs: r.when([F.VIRTIO_NET_F_MQ, F.VIRTIO_NET_F_RSS], 10, () => r.u16(8)!),
    mtu: r.when(F.VIRTIO_NET_F_MTU, 12, () => r.u16(10)!),
    // 5.1.4.2: "the driver MUST treat any value of speed above 0x7fffffff ... as an unknown value".
    speed: r.when(F.VIRTIO_NET_F_SPEED_DUPLEX, 16, () => {
      const s = r.u32(12)!;
      return s > 0x7fffffff ? 'unknown' : s;
    }),
    // 5.1.4 says 0x01 full, 0x00 half; its normative 5.1.4.1 swaps them, an erratum:
    // Linux (DUPLEX_HALF 0, DUPLEX_FULL 1) and QEMU follow 5.1.4.
    duplex: r.when(F.VIRTIO_NET_F_SPEED_DUPLEX, 17, () => {
      const d = r.u8(16)!;
      return d === 1 ? 'full' : d === 0 ? 'half' : 'unknown';
    }),
    rssMaxKeySize: r.when(hashing, 18, () => r.u8(17)!),
    rssMaxIndirectionTableLength: r.when(F.VIRTIO_NET_F_RSS, 20, () => r.u16(18)!),
    supportedHashTypes: r.when(hashing, 24, () => r.u32(20)!),
  };
}

/** Lower-case, colon-separated: `52:54:00:12:34:56`. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
