/**
 * The virtio-blk request wire format (virtio 1.2 §5.2.6), shared by the driver
 * (lib/devices/blk), the reference back-end's blk device and the tests: request
 * types, status values and the sizes of the parts of a request.
 *
 * A request is one descriptor chain: a 16-byte device-readable header
 * {le32 type, le32 reserved, le64 sector}, the data, and a 1-byte device-writable
 * status. `sector` is always in 512-byte units, whatever blk_size says.
 */

/** Request type (§5.2.6): read; the data descriptors are device-writable. */
export const VIRTIO_BLK_T_IN = 0;
/** Request type (§5.2.6): write; the data descriptors are device-readable. */
export const VIRTIO_BLK_T_OUT = 1;
/** Request type (§5.2.6): make earlier completed writes durable; no data, `sector` 0. Needs VIRTIO_BLK_F_FLUSH. */
export const VIRTIO_BLK_T_FLUSH = 4;
/** Request type (§5.2.6): read the device's id string into a {@link VIRTIO_BLK_ID_BYTES}-byte device-writable buffer. */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Request type (§5.2.6): discard ranges given as {@link BLK_DISCARD_SEGMENT_SIZE}-byte segments. Needs VIRTIO_BLK_F_DISCARD. */
export const VIRTIO_BLK_T_DISCARD = 11;
/** Request type (§5.2.6): zero ranges given as {@link BLK_DISCARD_SEGMENT_SIZE}-byte segments. Needs VIRTIO_BLK_F_WRITE_ZEROES. */
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

/** Status byte (§5.2.6): the request succeeded. */
export const VIRTIO_BLK_S_OK = 0;
/** Status byte (§5.2.6): the device failed the request (a media or back-end error). */
export const VIRTIO_BLK_S_IOERR = 1;
/** Status byte (§5.2.6): the device does not support this request type or its flags. */
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Bytes of the device-readable request header {le32 type, le32 reserved, le64 sector} (§5.2.6). */
export const BLK_REQ_HEADER_SIZE = 16;
/** Bytes of the device-writable status that ends every request (§5.2.6). */
export const BLK_REQ_STATUS_SIZE = 1;
/** GET_ID answers with up to 20 bytes, NUL-padded when shorter (§5.2.6). */
export const VIRTIO_BLK_ID_BYTES = 20;
/** One {le64 sector, le32 num_sectors, le32 flags} of a DISCARD or WRITE_ZEROES request. */
export const BLK_DISCARD_SEGMENT_SIZE = 16;
/** `flags` bit 0 of a WRITE_ZEROES segment: the device may deallocate (§5.2.6). */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
