/**
 * `vhost-user migrate`: a verified live migration of a net or blk device from one
 * back-end to another (lib/migration): traffic or I/O runs throughout, the dirty
 * log is checked page by page, and the exit status says whether it held.
 */
import { nodeFileSystem } from '../../file-system.js';
import { migrate } from '../../migration/migrate.js';
import { summarize } from '../../migration/report.js';
import { migrationSvg } from '../../migration/svg.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  name: 'migrate',
  summary: 'live-migrate a net or blk device between two back-ends, verifying the dirty log',
  description:
    'Opens the device on --from, runs traffic (net: numbered frames that the back-end loops or\n' +
    'forwards back) or I/O (blk: stamped writes read back), migrates it to --to the way QEMU does\n' +
    '(dirty logging, a full copy, rounds of log sync and copy, switchover with GET_VRING_BASE, the\n' +
    'destination started from the same ring positions, SEND_RARP, DEVICE_STATE when both offer it),\n' +
    'runs on against --to, and checks: every page the back-end wrote was logged (completeness),\n' +
    'nothing logged where the device writes nothing (precision), nothing written after GET_VRING_BASE\n' +
    '(quiet), every frame or request exactly once. Exit 0 only if all hold (1 otherwise).\n' +
    'Progress goes to stderr; --json prints the report as one object; --svg FILE draws the rounds.\n' +
    '--log-addr: what packed rings get as log_guest_addr: descriptor-ring (where DPDK logs) or qemu\n' +
    '(the device event area, as QEMU 7.2 sends).',
  options: {
    from: { type: 'string', required: true, valueName: 'SOCKET', description: 'the source back-end' },
    to: { type: 'string', required: true, valueName: 'SOCKET', description: 'the destination back-end' },
    device: { type: 'enum', choices: ['net', 'blk'], default: 'net', description: 'device to migrate' },
    ring: { type: 'enum', choices: ['split', 'packed'], default: 'split', description: 'ring layout' },
    logAddr: { type: 'enum', choices: ['descriptor-ring', 'qemu'], default: 'descriptor-ring', description: 'packed rings: log_guest_addr' },
    guestMb: { type: 'number', integer: true, min: 2, max: 65536, valueName: 'MIB', description: 'guest memory size (default: what the device needs, 2 MiB)' },
    queueSize: { type: 'number', integer: true, min: 2, max: 32768, default: 256, valueName: 'N', description: 'entries per ring' },
    roundMs: { type: 'number', integer: true, min: 1, default: 40, valueName: 'MS', description: 'traffic between two log syncs' },
    maxRounds: { type: 'number', integer: true, min: 1, default: 8, valueName: 'N', description: 'most rounds before switching over anyway' },
    downtimeLimitMs: { type: 'number', min: 0, default: 5, valueName: 'MS', description: 'switch over once the dirty pages copy within this' },
    afterMs: { type: 'number', integer: true, min: 0, default: 300, valueName: 'MS', description: 'traffic on the destination (the source is watched meanwhile)' },
    noDeviceState: { type: 'boolean', description: 'do not carry the back-end state (DEVICE_STATE)' },
    json: { type: 'boolean', description: 'print the report as one JSON object' },
    svg: { type: 'string', valueName: 'FILE', description: 'write a picture of the rounds and the downtime' },
  },
  async run(args, io) {
    const report = await migrate({
      from: args.from,
      to: args.to,
      device: args.device,
      ring: args.ring,
      packedLogAddr: args.logAddr,
      queueSize: args.queueSize,
      ...(args.guestMb !== undefined ? { memorySize: args.guestMb * 1048576 } : {}),
      roundMs: args.roundMs,
      maxRounds: args.maxRounds,
      downtimeLimitMs: args.downtimeLimitMs,
      afterMs: args.afterMs,
      deviceState: !args.noDeviceState,
      onProgress: (line) => io.stderr(`${line}\n`),
    });
    if (args.svg !== undefined) {
      (io.fs ?? nodeFileSystem).writeFileSync(args.svg, migrationSvg(report));
    }
    io.stdout(args.json ? `${JSON.stringify(report)}\n` : `${summarize(report).join('\n')}\n`);
    return report.verified ? 0 : 1;
  },
});
