/**
 * struct virtio_net_hdr (virtio 1.2 §5.1.6). With VIRTIO_F_VERSION_1 the header
 * always carries num_buffers and is 12 bytes, with or without MRG_RXBUF.
 */
export const VIRTIO_NET_HDR_SIZE = 12;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;

export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const HDR_HDR_LEN = 2;
export const HDR_GSO_SIZE = 4;
export const HDR_CSUM_START = 6;
export const HDR_CSUM_OFFSET = 8;
export const HDR_NUM_BUFFERS = 10;

/** virtio_net_config.status bit: link up (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;
