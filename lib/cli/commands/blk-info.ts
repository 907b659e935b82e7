/**
 * `vhost-user blk info`: opens a virtio-blk device (negotiation, GET_CONFIG,
 * rings started), prints the negotiated features, the decoded config, the
 * limits requests are checked against and the device id (GET_ID), then closes.
 */
import type { BlkConfig } from '../../devices/blk/blk-config.js';
import type { BlkLimits } from '../../devices/blk/blk-request.js';
import { featureNames } from '../../protocol/constants.js';
import { table } from '../args.js';
import { defineCommand } from '../command.js';
import { flatten, hex64, toJson } from '../format.js';
import { blkOptions, openBlk } from './blk-common.js';

/** The `--json` document. */
export interface BlkInfoReport {
  socket: string;
  /** SET_FEATURES mask and its names. */
  features: string;
  featureNames: string[];
  queues: number;
  ring: string;
  /** Whether the back-end was given an inflight area (INFLIGHT_SHMFD). */
  inflight: boolean;
  config: BlkConfig;
  limits: BlkLimits;
  /** GET_ID answer. */
  id: string | null;
}

export default defineCommand({
  name: 'blk info',
  summary: 'open a virtio-blk device and print its features, decoded config and id',
  description:
    'Opens a virtio-blk device on the back-end listening on --socket (features, GET_CONFIG, rings),\n' +
    'prints the negotiated features, the decoded config (capacity in 512-byte sectors, size_max,\n' +
    'seg_max, blk_size, topology, writeback, num_queues, discard and write-zeroes limits), the\n' +
    'limits requests are checked against, and the GET_ID answer, then disconnects.',
  options: blkOptions,
  async run(args, io) {
    const blk = await openBlk(args);
    let report: BlkInfoReport;
    try {
      let id: string | null = null;
      // A device answering UNSUPP to GET_ID (allowed: §5.2.6) still has an info page.
      id = await blk.getId().catch(() => null);
      report = {
        socket: args.socket,
        features: hex64(blk.features),
        featureNames: featureNames(blk.features, 'blk'),
        queues: blk.queueCount,
        ring: blk.ring,
        inflight: blk.inflightShared,
        config: blk.config,
        limits: blk.limits,
        id,
      };
    } finally {
      blk.close();
    }
    if (args.json) {
      io.stdout(`${toJson(report)}\n`);
      return;
    }
    const rows: [string, string][] = [
      ['socket', report.socket],
      ['features', `${report.features}  ${report.featureNames.join(' ')}`],
      ['queues', `${report.queues} (${report.ring})`],
      ['inflight area', report.inflight ? 'yes' : 'no'],
      ['id', report.id ?? '- (GET_ID failed)'],
      ['capacity', `${report.config.capacity} sectors (${report.config.capacityBytes} bytes)`],
    ];
    const lines = table(rows.map(([k, v]) => [`${k}:`, v]), '');
    lines.push('config:', ...table(flatten(report.config).map(([k, v]) => [`${k}:`, v])));
    lines.push('limits:', ...table(flatten(report.limits).map(([k, v]) => [`${k}:`, v])));
    io.stdout(`${lines.join('\n')}\n`);
  },
});
