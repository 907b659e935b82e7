/**
 * The page size of migration: VHOST_LOG_PAGE, one dirty-log bit each
 * (vhost-user.rst, "Migration"), and the unit in which memory is copied and judged.
 */
import { VHOST_LOG_PAGE } from '../protocol/constants.js';

/** Bytes per guest page as the dirty log counts them (4 KiB). */
export const VIRTIO_PAGE = VHOST_LOG_PAGE;
