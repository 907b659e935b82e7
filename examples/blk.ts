/**
 * Read and write a block device: a virtio-blk driver opens a vhost-user-blk
 * back-end, prints the device's config (virtio 1.2 §5.2.4), writes a pattern,
 * reads it back and compares.
 *
 *   node dist/examples/blk.js                     # the built-in reference back-end (a 64 MiB memfd disk)
 *   node dist/examples/blk.js /run/vhost-blk.sock # any vhost-user-blk back-end listening there
 *   node dist/examples/blk.js [SOCKET] packed     # the same on packed rings, where offered
 *
 * For a real back-end, qemu-storage-daemon on an image file:
 *
 *   qemu-storage-daemon --blockdev driver=file,node-name=d0,filename=disk.raw \
 *     --export type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=/tmp/blk.sock,writable=on
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceBackend, VirtioBlk } from 'vhost-user-client';

// Arguments: a socket path and/or a ring layout ('split', the default, or 'packed'), in any order.
const args = process.argv.slice(2);
const ring = args.includes('packed') ? 'packed' : 'split';
const target = args.find((a) => a !== 'split' && a !== 'packed');
// Without a socket: the reference back-end (a blk device written in TypeScript) listens in this process.
const dir = target === undefined ? mkdtempSync(join(tmpdir(), 'vhost-blk-example-')) : null;
const socket = target ?? join(dir!, 'blk.sock');
const backend = dir === null ? null : ReferenceBackend.listen(socket, { device: 'blk', blkSize: 64 << 20 });
let blk: VirtioBlk | undefined;
try {
  blk = await VirtioBlk.open(socket, { ring });
  const c = blk.config;
  console.log(`connected to ${target === undefined ? 'the reference back-end' : socket}: ${blk.ring} rings, ${blk.queueCount} queue(s)`);
  console.log(`capacity: ${c.capacity} sectors (${c.capacityBytes} bytes)`);
  console.log(`blk_size: ${c.blkSize ?? '-'}, seg_max: ${c.segMax ?? '-'}, size_max: ${c.sizeMax ?? '-'}, num_queues: ${c.numQueues ?? '-'}`);
  console.log(`writeback: ${c.writeback ?? '-'}, discard: ${c.discard ? 'yes' : 'no'}, write-zeroes: ${c.writeZeroes ? 'yes' : 'no'}, read-only: ${blk.readOnly}`);

  // 64 KiB at 1 MiB (aligned to any block size up to 64 KiB), or at 0 on a smaller disk.
  const length = 64 * 1024;
  const offset = c.capacityBytes >= 2 * 1024 * 1024 ? 1024 * 1024 : 0;
  const data = Uint8Array.from({ length }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
  await blk.write(offset, data);
  const back = await blk.read(offset, length);
  const same = back.length === data.length && back.every((b, i) => b === data[i]);
  console.log(`wrote ${length} bytes at ${offset}, read them back: ${same ? 'identical' : 'DIFFERENT'}`);
  const t = blk.totals();
  console.log(`requests: ${t.submitted} submitted, ${t.completed} completed, ${t.failed} failed`);
  process.exitCode = same ? 0 : 1;
} finally {
  blk?.close();
  backend?.close();
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
}
