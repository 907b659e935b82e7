/**
 * `vhost-user probe`: connect, run the handshake QEMU runs when it creates a
 * device, optionally read the device config, report, disconnect. Read-only: it
 * never starts a ring or shares memory.
 */
import { VhostUserClient } from '../../client/vhost-user-client.js';
import { BLK_CONFIG_SIZE, decodeBlkConfig, type BlkConfig } from '../../devices/blk/blk-config.js';
import { decodeNetConfig, NET_CONFIG_SIZE, type NetConfig } from '../../devices/net/net-config.js';
import { featureNames, ProtocolFeature, protocolFeatureNames, type DeviceKind } from '../../protocol/constants.js';
import { table } from '../args.js';
import { defineCommand } from '../command.js';
import { flatten, hex64, toJson } from '../format.js';
import { acceptOnce, endpoint, listenOption } from './endpoint.js';

/** The `--json` document. Masks are {@link hex64} strings; names are spec names. */
export interface ProbeReport {
  socket: string;
  device: DeviceKind | null;
  /** GET_FEATURES. */
  features: string;
  featureNames: string[];
  /** GET_PROTOCOL_FEATURES: what the back-end offered. */
  protocolFeatures: string;
  protocolFeatureNames: string[];
  /** SET_PROTOCOL_FEATURES: the offer intersected with what this library supports. */
  negotiatedProtocolFeatures: string;
  negotiatedProtocolFeatureNames: string[];
  queueNum: number | null;
  maxMemSlots: number | null;
  /** Decoded config space; null without --device or without the CONFIG protocol feature. */
  config: NetConfig | BlkConfig | null;
}

export default defineCommand({
  name: 'probe',
  summary: 'connect to a back-end, negotiate, and report its features and config',
  description:
    'Connects to the back-end listening on --socket (or, with --listen, waits for it to connect), runs the vhost-user handshake (features,\n' +
    'protocol features, queue count, memory slots, SET_OWNER), reads and decodes the device\n' +
    'config when --device is given and the back-end supports GET_CONFIG, then disconnects.',
  options: {
    socket: { type: 'string', valueName: 'PATH', description: 'the back-end socket (the back-end listens); or give --listen' },
    ...listenOption,
    device: { type: 'enum', choices: ['net', 'blk'], description: 'device type: names device feature bits and decodes the config' },
    json: { type: 'boolean', description: 'print one JSON object instead of text' },
    timeout: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'deadline for the connect and for each reply' },
  },
  async run(args, io) {
    const device = args.device ?? null;
    const where = endpoint('probe', args);
    const client =
      'socket' in where
        ? await VhostUserClient.connect(where.socket, { timeoutMs: args.timeout, connect: { timeoutMs: args.timeout } })
        : await acceptOnce(where.listen, (l) => VhostUserClient.accept(l, { timeoutMs: args.timeout, acceptTimeoutMs: args.timeout }));
    let report: ProbeReport;
    try {
      const n = await client.negotiate();
      let config: NetConfig | BlkConfig | null = null;
      if (device !== null && client.hasProtocolFeature(ProtocolFeature.CONFIG)) {
        config =
          device === 'net'
            ? decodeNetConfig(await client.getConfig(0, NET_CONFIG_SIZE), n.features)
            : decodeBlkConfig(await client.getConfig(0, BLK_CONFIG_SIZE), n.features);
      }
      report = {
        socket: 'socket' in where ? where.socket : where.listen,
        device,
        features: hex64(n.features),
        featureNames: featureNames(n.features, device ?? undefined),
        protocolFeatures: hex64(n.offeredProtocolFeatures),
        protocolFeatureNames: protocolFeatureNames(n.offeredProtocolFeatures),
        negotiatedProtocolFeatures: hex64(n.protocolFeatures),
        negotiatedProtocolFeatureNames: protocolFeatureNames(n.protocolFeatures),
        queueNum: n.queueNum,
        maxMemSlots: n.maxMemSlots,
        config,
      };
    } finally {
      client.close();
    }
    io.stdout(args.json ? `${toJson(report)}\n` : formatReport(report));
  },
});

function formatReport(r: ProbeReport): string {
  const names = (list: string[]) => (list.length ? list.join(' ') : '(none)');
  const rows: [string, string][] = [
    ['socket', r.socket],
    ['features', `${r.features}  ${names(r.featureNames)}`],
    ['protocol offered', `${r.protocolFeatures}  ${names(r.protocolFeatureNames)}`],
    ['protocol negotiated', `${r.negotiatedProtocolFeatures}  ${names(r.negotiatedProtocolFeatureNames)}`],
    ['queue num', r.queueNum === null ? '- (no MQ)' : String(r.queueNum)],
    ['max mem slots', r.maxMemSlots === null ? '- (no CONFIGURE_MEM_SLOTS)' : String(r.maxMemSlots)],
  ];
  if (r.device === null) rows.push(['config', '- (give --device net|blk to read it)']);
  else if (r.config === null) rows.push([`config (${r.device})`, '- (CONFIG protocol feature not negotiated)']);
  const lines = table(rows.map(([k, v]) => [`${k}:`, v]), '');
  if (r.config !== null) lines.push(`config (${r.device}):`, ...table(flatten(r.config).map(([k, v]) => [`${k}:`, v])));
  return `${lines.join('\n')}\n`;
}
