/**
 * struct virtio_net_hdr (virtio 1.2 §5.1.6). With VIRTIO_F_VERSION_1 the header
 * always carries num_buffers and is 12 bytes, with or without MRG_RXBUF.
 */
export const VIRTIO_NET_HDR_SIZE = 12;

/**
 * `flags` bit (§5.1.6.2): the packet needs a checksum over [csum_start, end), stored
 * at csum_start + csum_offset. Only with VIRTIO_NET_F_CSUM (TX) or VIRTIO_NET_F_GUEST_CSUM (RX).
 */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** `flags` bit (§5.1.6.4, RX only): the device has already validated the packet's checksum. */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** `gso_type` (§5.1.6): no segmentation offload; the packet is sent or received as it is. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** `gso_type`: TCP over IPv4 to be segmented (TSO; VIRTIO_NET_F_HOST_TSO4 on TX, GUEST_TSO4 on RX). */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** `gso_type`: UDP fragmentation offload (UFO; legacy HOST_UFO / GUEST_UFO). */
export const VIRTIO_NET_HDR_GSO_UDP = 3;
/** `gso_type`: TCP over IPv6 to be segmented (VIRTIO_NET_F_HOST_TSO6 / GUEST_TSO6). */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** `gso_type`: UDP segmentation offload, IPv4 or IPv6 (USO; VIRTIO_NET_F_HOST_USO / GUEST_USO4/6). */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** `gso_type` bit: the TCP segment has ECN set (needs HOST_ECN / GUEST_ECN). */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** Byte offset of `u8 flags` in the header. */
export const HDR_FLAGS = 0;
/** Byte offset of `u8 gso_type` in the header. */
export const HDR_GSO_TYPE = 1;
/** Byte offset of `le16 hdr_len` in the header (bytes of headers before the payload, for GSO). */
export const HDR_HDR_LEN = 2;
/** Byte offset of `le16 gso_size` in the header (payload bytes per segment, for GSO). */
export const HDR_GSO_SIZE = 4;
/** Byte offset of `le16 csum_start` in the header. */
export const HDR_CSUM_START = 6;
/** Byte offset of `le16 csum_offset` in the header. */
export const HDR_CSUM_OFFSET = 8;
/** Byte offset of `le16 num_buffers` in the header: on RX, how many buffers the packet spans (1 without MRG_RXBUF). */
export const HDR_NUM_BUFFERS = 10;

/** virtio_net_config.status bit: link up (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;
