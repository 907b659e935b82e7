/**
 * `vhost-user trace`: the tracing proxy (lib/trace/trace-proxy.ts) on the command
 * line. Listens on --listen, relays each front-end connection to --connect, and
 * writes one line per message (and per connection end) as it passes; optionally a
 * pcapng capture for Wireshark (wireshark/vhost-user.lua). Runs until SIGINT or
 * SIGTERM, or with --once until the first connection has ended.
 */
import { fsCall, nodeFileSystem } from '../../file-system.js';
import { TraceProxy } from '../../trace/trace-proxy.js';
import { formatRecord } from '../../trace/trace-format.js';
import { TracePcapngWriter } from '../../trace/trace-pcapng.js';
import type { TraceRecord } from '../../trace/trace-record.js';
import { UsageError } from '../args.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  name: 'trace',
  summary: 'relay a front-end to a back-end and show every message decoded (text, JSON lines, pcapng)',
  description:
    'A man-in-the-middle: listens on --listen where the front-end (QEMU, this library, DPDK virtio-user)\n' +
    'expects the back-end, connects to the real back-end at --connect for every connection, and passes\n' +
    'every message and fd both ways, the SET_BACKEND_REQ_FD channel too (through a socketpair of its own).\n' +
    'Prints one line per message: time (ms), connection, direction (F->B front-end to back-end, F<-B\n' +
    'reply; F<=B and F=>B on the back-end channel), flags, fd count, request and decoded fields; and\n' +
    'one line when a connection ends, naming who closed it after which message. --format json prints\n' +
    'one JSON object per line instead (from, request, fds, decoded, ...). --pcapng writes a capture that\n' +
    'Wireshark/tshark decode with the dissector shipped in wireshark/vhost-user.lua:\n' +
    '  tshark -X lua_script:wireshark/vhost-user.lua -r FILE -V\n' +
    'Runs until SIGINT/SIGTERM, or with --once until the first connection ends.',
  options: {
    listen: { type: 'string', required: true, valueName: 'PATH', description: 'socket path to listen on (give it to the front-end)' },
    connect: { type: 'string', required: true, valueName: 'PATH', description: "the back-end's socket path" },
    format: { type: 'enum', choices: ['text', 'json'], default: 'text', description: 'line format' },
    json: { type: 'boolean', description: 'same as --format json' },
    output: { type: 'string', valueName: 'FILE', description: 'write the lines to FILE instead of stdout' },
    pcapng: { type: 'string', valueName: 'FILE', description: 'also write a pcapng capture (one packet per message)' },
    device: { type: 'enum', choices: ['net', 'blk'], description: 'name the device feature bits of this device type (default: BIT_n)' },
    once: { type: 'boolean', description: 'stop after the first connection has ended' },
    connectTimeoutMs: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'how long to wait for the back-end to accept' },
  },
  async run(args, io) {
    if (args.listen === args.connect) throw new UsageError('--listen and --connect must be different paths');
    const format = args.json ? 'json' : args.format;
    const fs = io.fs ?? nodeFileSystem;
    let outFd = -1;
    if (args.output !== undefined) {
      const path = args.output;
      outFd = await fsCall<number>((cb) => fs.open(path, 'w', cb));
    }
    const write = (line: string) => {
      if (outFd < 0) return io.stdout(`${line}\n`);
      const bytes = Buffer.from(`${line}\n`);
      for (let off = 0; off < bytes.length; ) off += fs.writeSync(outFd, bytes, off, bytes.length - off);
    };
    let pcap: TracePcapngWriter | null = null;
    let proxy: TraceProxy | null = null;
    // Records of a connection accepted while the capture file is being created wait here.
    const early: TraceRecord[] = [];
    try {
      const onRecord = (r: TraceRecord) => {
        write(formatRecord(r, format));
        if (args.pcapng !== undefined && !pcap) early.push(r);
        if (pcap) {
          pcap.write(r);
          // A connection end is a good moment to make the capture readable while the proxy runs on.
          if (r.kind === 'close') pcap.flush();
        }
      };
      proxy = await TraceProxy.start({ listen: args.listen, connect: args.connect, connectTimeoutMs: args.connectTimeoutMs, keepRecords: false, onRecord, ...(args.device ? { device: args.device } : {}) });
      if (args.pcapng !== undefined) {
        const writer = await TracePcapngWriter.open(args.pcapng, proxy.startEpochMs, io.fs);
        for (const r of early.splice(0)) writer.write(r);
        pcap = writer;
      }
      io.stderr(`vhost-user trace: listening on ${args.listen}, relaying to ${args.connect}\n`);
      const running = proxy;
      const reason = await new Promise<string>((resolve) => {
        const on = (s: NodeJS.Signals) => finish(s);
        const finish = (why: string) => {
          process.off('SIGINT', on);
          process.off('SIGTERM', on);
          resolve(why);
        };
        process.on('SIGINT', on);
        process.on('SIGTERM', on);
        if (args.once) running.once('connection-end', () => finish('the first connection ended'));
      });
      await proxy.close();
      io.stderr(`vhost-user trace: stopped (${reason}) after ${proxy.connections} connection(s)${pcap ? `, ${pcap.packets} packets in ${args.pcapng}` : ''}\n`);
      return 0;
    } finally {
      await proxy?.close();
      await pcap?.close();
      if (outFd >= 0) await fsCall<void>((cb) => fs.close(outFd, cb));
    }
  },
});
