/** `vhost-user blk read`: reads a byte range of a virtio-blk device to a file, or shows it as hex. */
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { VhostUserError } from '../../errors.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { blkOptions, inChunks, openBlk } from './blk-common.js';

/** Above this a read without --out is refused: hex of megabytes helps nobody. */
const HEX_LIMIT = 64 * 1024;

export default defineCommand({
  name: 'blk read',
  summary: 'read a byte range of a virtio-blk device (to --out FILE, or as hex)',
  description:
    'Reads --length bytes at byte --offset (both multiples of the block size) through the driver,\n' +
    'in chunks over every queue, and writes them to --out FILE, or prints a hex dump (at most\n' +
    `${HEX_LIMIT} bytes). --json prints offset, length, sha256 and seconds.`,
  options: {
    ...blkOptions,
    offset: { type: 'number', integer: true, min: 0, default: 0, valueName: 'BYTES', description: 'where to start' },
    length: { type: 'number', integer: true, min: 1, required: true, valueName: 'BYTES', description: 'how many bytes' },
    out: { type: 'string', valueName: 'FILE', description: 'write the bytes to this file' },
  },
  async run(args, io) {
    if (args.out === undefined && args.length > HEX_LIMIT) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `reading ${args.length} bytes needs --out FILE (hex output is limited to ${HEX_LIMIT} bytes)`);
    }
    const blk = await openBlk(args);
    const data = new Uint8Array(args.length);
    const t0 = process.hrtime.bigint();
    try {
      await inChunks(blk, args.length, async (rel, len, queue) => {
        data.set(await blk.read(args.offset + rel, len, queue), rel);
      });
    } finally {
      blk.close();
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (args.out !== undefined) {
      const fd = openSync(args.out, 'w');
      try {
        for (let at = 0; at < data.length; ) at += writeSync(fd, data, at, data.length - at);
      } finally {
        closeSync(fd);
      }
    }
    const sha256 = createHash('sha256').update(data).digest('hex');
    if (args.json) io.stdout(`${toJson({ offset: args.offset, length: args.length, sha256, seconds, out: args.out ?? null })}\n`);
    else if (args.out !== undefined) io.stdout(`read ${args.length} bytes at ${args.offset} into ${args.out} in ${seconds.toFixed(3)} s, sha256 ${sha256}\n`);
    else io.stdout(hexDump(data, args.offset));
  },
});

/** 16 bytes a line: offset, hex, printable ASCII. */
function hexDump(data: Uint8Array, base: number): string {
  const lines: string[] = [];
  for (let at = 0; at < data.length; at += 16) {
    const row = data.subarray(at, at + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const text = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${(base + at).toString(16).padStart(10, '0')}  ${hex.padEnd(47)}  ${text}`);
  }
  return `${lines.join('\n')}\n`;
}
