/**
 * `vhost-user serve`: runs the reference back-end (lib/backend/reference-backend.ts)
 * until SIGINT or SIGTERM, printing one line (or JSON object) per connection event.
 */
import { FAULT_NAMES, parseFault, ReferenceBackend } from '../../backend/reference-backend.js';
import { UsageError } from '../args.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  name: 'serve',
  summary: 'run the reference vhost-user back-end (net loopback or blk) until SIGINT/SIGTERM',
  description:
    'Listens on --socket and serves one front-end connection after another with the strict reference\n' +
    'back-end: a net loopback (frames sent on TX ring 2i come back on RX ring 2i) or a blk disk over\n' +
    '--image or a memfd of --size bytes. Protocol violations close the connection and are reported;\n' +
    'the next connection is served. Prints one line per event (--json: one JSON object per line).\n' +
    '\n' +
    '--fault NAME[@TARGET][,...] makes it misbehave once (every time with --fault-repeat), for testing\n' +
    'front-ends: TARGET is a request name for message faults (disconnect-before@SET_MEM_TABLE) and a\n' +
    'ring index for ring faults (used-idx-jump@1). Faults: ' + FAULT_NAMES.join(', ') + '.',
  options: {
    socket: { type: 'string', required: true, valueName: 'PATH', description: 'socket path to listen on' },
    device: { type: 'enum', choices: ['net', 'blk'], default: 'net', description: 'device to serve' },
    image: { type: 'string', valueName: 'FILE', description: 'blk: disk image file (read-write)' },
    size: { type: 'number', integer: true, min: 512, valueName: 'BYTES', description: 'blk without --image: memfd disk size (default 64 MiB)' },
    readOnly: { type: 'boolean', description: 'blk: serve the disk read-only (VIRTIO_BLK_F_RO; writes fail with IOERR)' },
    latencyMs: { type: 'number', integer: true, min: 0, valueName: 'MS', description: 'blk: hold each request MS ms before serving it (requests in flight, for crash tests)' },
    noInflight: { type: 'boolean', description: 'blk: do not offer INFLIGHT_SHMFD (the driver must recover requests in flight itself)' },
    queues: { type: 'number', integer: true, min: 1, max: 256, valueName: 'N', description: 'virtqueues offered (default: net 8, blk 1)' },
    fault: { type: 'string', valueName: 'NAME[@TARGET]', description: 'inject faults, comma-separated (see above)' },
    faultRepeat: { type: 'boolean', description: 'fire each fault on every match, not only the first' },
    lateMs: { type: 'number', integer: true, min: 0, default: 1000, valueName: 'MS', description: 'delay of the late-reply fault' },
    json: { type: 'boolean', description: 'print JSON lines' },
  },
  async run(args, io) {
    let faults;
    try {
      faults = (args.fault ?? '')
        .split(',')
        .filter((t) => t !== '')
        .map((t) => ({ ...parseFault(t.trim()), delayMs: args.lateMs, repeat: args.faultRepeat }));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const backend = ReferenceBackend.listen(args.socket, {
      faults,
      device: args.device,
      ...(args.image !== undefined ? { blkImage: args.image } : {}),
      ...(args.size !== undefined ? { blkSize: args.size } : {}),
      ...(args.readOnly ? { blkReadOnly: true } : {}),
      ...(args.latencyMs !== undefined ? { blkLatencyMs: args.latencyMs } : {}),
      ...(args.noInflight ? { blkInflight: false } : {}),
      ...(args.queues !== undefined ? { queueNum: args.queues } : {}),
    });
    const emit = (event: string, fields: Record<string, unknown>, text: string) => {
      io.stdout(args.json ? `${JSON.stringify({ event, ...fields })}\n` : `${text}\n`);
    };
    emit('listening', { socket: args.socket, device: backend.device, queues: backend.queueNum }, `listening on ${args.socket} (${backend.device}, ${backend.queueNum} queues)`);
    backend.on('connection', (id) => emit('connection', { connection: id }, `connection ${id}: accepted`));
    backend.on('violation', (v) =>
      emit('violation', { connection: v.connection, code: v.code, request: v.request ?? null, message: v.message }, `connection ${v.connection}: violation ${v.code}${v.request ? ` [${v.request}]` : ''}: ${v.message}`),
    );
    backend.on('refused', (v) => emit('refused', { connection: v.connection, code: v.code, request: v.request ?? null, message: v.message }, `connection ${v.connection}: refused ${v.request ?? ''}: ${v.message}`));
    backend.on('disconnect', (id, reason) => {
      const stats = backend.device === 'net' ? { ...backend.net } : { ...backend.blk };
      emit('disconnect', { connection: id, reason: reason?.code ?? null, stats }, `connection ${id}: closed${reason ? ` (${reason.code})` : ''}; ${Object.entries(stats).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    });
    backend.on('fault', (id, _f, text) => emit('fault', { connection: id, fault: text }, `connection ${id}: injected fault ${text}`));
    backend.on('error', (e) => emit('error', { code: e.code, message: e.message }, `error ${e.code}: ${e.message}`));
    const signal = await new Promise<string>((resolve) => {
      const on = (s: NodeJS.Signals) => {
        process.off('SIGINT', on);
        process.off('SIGTERM', on);
        resolve(s);
      };
      process.on('SIGINT', on);
      process.on('SIGTERM', on);
    });
    backend.close();
    emit('stopped', { signal, connections: backend.connections }, `stopped by ${signal} after ${backend.connections} connections`);
    return 0;
  },
});
