/** `vhost-user blk write`: writes a file's bytes at a byte offset of a virtio-blk device. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { VhostUserError } from '../../errors.js';
import { defineCommand } from '../command.js';
import { toJson } from '../format.js';
import { blkOptions, inChunks, openBlk } from './blk-common.js';

export default defineCommand({
  name: 'blk write',
  summary: 'write the bytes of --in FILE at a byte offset of a virtio-blk device',
  description:
    'Writes the whole of --in FILE (its size a multiple of the block size) at byte --offset through\n' +
    'the driver, in chunks over every queue, then flushes when the device has VIRTIO_BLK_F_FLUSH.\n' +
    'A read-only device refuses before anything is sent (VHOST_BLK_READ_ONLY).',
  options: {
    ...blkOptions,
    offset: { type: 'number', integer: true, min: 0, default: 0, valueName: 'BYTES', description: 'where to start' },
    in: { type: 'string', required: true, valueName: 'FILE', description: 'the bytes to write' },
  },
  async run(args, io) {
    let data: Uint8Array;
    try {
      data = readFileSync(args.in);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `cannot read ${args.in}: ${code ?? String(cause)}`, { errno: code, cause });
    }
    if (data.length === 0) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `${args.in} is empty`);
    const blk = await openBlk(args);
    const t0 = process.hrtime.bigint();
    let flushed = false;
    try {
      await inChunks(blk, data.length, (rel, len, queue) => blk.write(args.offset + rel, data.subarray(rel, rel + len), queue));
      if (blk.limits.flush) {
        await blk.flush();
        flushed = true;
      }
    } finally {
      blk.close();
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const sha256 = createHash('sha256').update(data).digest('hex');
    if (args.json) io.stdout(`${toJson({ offset: args.offset, length: data.length, sha256, flushed, seconds })}\n`);
    else io.stdout(`wrote ${data.length} bytes at ${args.offset} in ${seconds.toFixed(3)} s${flushed ? ', flushed' : ''}\n`);
  },
});
