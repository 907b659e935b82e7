/** Data integrity: what the device hands back is byte for byte what the rule says (net frames, blk sectors). */
import { framePayloadIntact } from '../../net/frame-builder.js';
import { expectThat, fail, type Check } from '../check.js';
import { BlkRequestType } from '../datapath.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';

const FRAMES = 32;
const SECTORS = 8;

export const dataChecks: Check[] = [
  {
    id: 'data.net-frames-intact',
    rule: "virtio 1.2, 'Network Device: Device Operation': a received packet is the virtio_net_hdr followed by the frame, and the used length covers both (a forwarding back-end returns the frames it was sent)",
    title: `net: ${FRAMES} frames of 60 to 1514 bytes come back whole, with the used length of header + frame`,
    devices: ['net'],
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await openDataPlane(ctx);
      const net = plane.net!;
      const sizes = Array.from({ length: FRAMES }, (_, i) => 60 + Math.round((i * (1514 - 60)) / (FRAMES - 1)));
      for (const [i, size] of sizes.entries()) {
        const seq = 1000 + i;
        if (!net.send(seq, size)) fail(`the TX ring is full after ${i} frames`);
        if (!(await net.waitFor(seq, WORK_MS))) fail(`frame ${i} (${size} bytes) did not come back`);
        const frame = net.frames[net.received.indexOf(seq)]!;
        expectThat(frame.length === size, `frame ${i}: sent ${size} bytes, the used length says ${frame.length} after the 12-byte header`);
        expectThat(framePayloadIntact(frame), `frame ${i} (${size} bytes) came back with its payload altered`);
      }
      return `${FRAMES} frames of ${sizes[0]}..${sizes.at(-1)} bytes intact`;
    },
  },
  {
    id: 'data.blk-write-read',
    rule: "virtio 1.2, 'Block Device: Device Operation': VIRTIO_BLK_T_OUT writes the data to the sectors from `sector`, VIRTIO_BLK_T_IN reads them back; status VIRTIO_BLK_S_OK (0) on success",
    title: `blk: ${SECTORS} sectors written read back identical, the used length of IN covers data + status`,
    devices: ['blk'],
    timeoutMs: 15_000,
    async run(ctx) {
      const plane = await openDataPlane(ctx);
      const blk = plane.blk!;
      const length = SECTORS * 512;
      const pattern = Uint8Array.from({ length }, (_, i) => (i * 31 + 17) & 0xff);
      const w = await blk.request(BlkRequestType.OUT, 16n, length, WORK_MS, pattern);
      expectThat(w !== null, 'the write did not complete');
      expectThat(w.status === 0, `the write completed with status ${w.status}`);
      blk.memory.bytes(blk.dataGpa, length).fill(0);
      const r = await blk.request(BlkRequestType.IN, 16n, length, WORK_MS);
      expectThat(r !== null, 'the read did not complete');
      expectThat(r.status === 0, `the read completed with status ${r.status}`);
      expectThat(r.len === length + 1, `the read's used length is ${r.len}, not ${length} data bytes + 1 status byte`);
      const got = blk.read(length);
      const first = got.findIndex((b, i) => b !== pattern[i]);
      expectThat(first < 0, `the sectors read back differ from those written, first at byte ${first}`);
      return `${SECTORS} sectors at sector 16 written and read back identical`;
    },
  },
];
