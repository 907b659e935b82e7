/** Constants shared by the split and packed layouts of the inflight area (vhost-user.rst, "Inflight I/O tracking"). */

/** Alignment of each queue region (libvhost-user's and DPDK's INFLIGHT_ALIGNMENT). */
export const INFLIGHT_ALIGNMENT = 64;
/** QueueRegionSplit/QueueRegionPacked.version written by this back-end; 0 marks an area nobody initialised. */
export const INFLIGHT_VERSION = 1;
