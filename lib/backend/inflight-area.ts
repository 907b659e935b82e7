/**
 * The inflight I/O tracking area of the reference back-end (vhost-user.rst,
 * "Inflight I/O tracking", protocol feature INFLIGHT_SHMFD): one region per
 * queue, "queue0 region | queue1 region | ... | queueN region", in a memfd the
 * back-end allocates (GET_INFLIGHT_FD) and the front-end keeps and hands to the
 * next back-end (SET_INFLIGHT_FD), so that one which crashed or restarted can
 * resubmit what its predecessor had taken from the rings and not completed.
 * The layout follows the rings: QueueRegionSplit (here) or QueueRegionPacked
 * (inflight-packed.ts) when VIRTIO_F_RING_PACKED was negotiated.
 *
 * Split layout, as the spec gives it (little-endian, x86 and arm64):
 *
 *   QueueRegionSplit { u64 features @0; u16 version @8; u16 desc_num @10;
 *                      u16 last_batch_head @12; u16 used_idx @14;
 *                      DescStateSplit desc[desc_num] @16 }
 *   DescStateSplit   { u8 inflight @0; u8 padding[5]; u16 next @6; u64 counter @8 }
 *
 * Each region is rounded up to 64 bytes, as libvhost-user and DPDK lay it out,
 * so the front-end (or a back-end of another make) finds the same offsets.
 */
import { fstatSync } from 'node:fs';
import { C, closeFd, libc, syscallError } from '../native/libc.js';
import { Mapping } from '../native/mapping.js';
import type { Inflight } from '../protocol/payloads.js';
import { VIRTQUEUE_MAX_SIZE } from '../virtqueue/split-layout.js';
import { violation } from './violation.js';
import { INFLIGHT_ALIGNMENT, INFLIGHT_VERSION } from './inflight-constants.js';
import { PackedInflightRegion, packedRegionSize } from './inflight-packed.js';

export { INFLIGHT_ALIGNMENT, INFLIGHT_VERSION } from './inflight-constants.js';
export { INFLIGHT_DESC_STATE_PACKED, INFLIGHT_PACKED_HEADER, PackedInflightRegion, packedRegionSize, type PackedInflightDesc, type PackedRecovery } from './inflight-packed.js';

/** QueueRegionSplit before its desc[] array. */
export const INFLIGHT_SPLIT_HEADER = 16;
/** sizeof(DescStateSplit). */
export const INFLIGHT_DESC_STATE_SPLIT = 16;

/** Bytes of one split queue region for a ring of `queueSize` entries. */
export function splitRegionSize(queueSize: number): number {
  const raw = INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/**
 * The tracking steps for one split ring (vhost-user.rst, "Inflight I/O tracking",
 * split virtqueue). Completions are published one at a time, so every batch is
 * one descriptor long: last_batch_head names it and desc[i].next ends the list.
 */
export class SplitInflightRegion {
  readonly layout = 'split' as const;
  private readonly dv: DataView;
  /** The global counter: the order in which heads were taken from the avail ring. */
  private counter = 0n;

  constructor(
    private readonly mapping: Mapping,
    private readonly offset: number,
    readonly descNum: number,
  ) {
    this.dv = mapping.dataView(offset, splitRegionSize(descNum));
  }

  get version(): number {
    return this.dv.getUint16(8, true);
  }

  /** desc_num as written in the region (may differ from the size it was mapped for). */
  get headerDescNum(): number {
    return this.dv.getUint16(10, true);
  }

  get lastBatchHead(): number {
    return this.dv.getUint16(12, true);
  }

  get usedIdx(): number {
    return this.dv.getUint16(14, true);
  }

  isInflight(head: number): boolean {
    return this.dv.getUint8(INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head) === 1;
  }

  counterOf(head: number): bigint {
    return this.dv.getBigUint64(INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head + 8, true);
  }

  /** Writes a fresh header (features 0, version 1, desc_num) and clears every entry. */
  initialise(usedIdx = 0): void {
    new Uint8Array(this.dv.buffer, this.dv.byteOffset, this.dv.byteLength).fill(0);
    this.dv.setUint16(8, INFLIGHT_VERSION, true);
    this.dv.setUint16(10, this.descNum, true);
    this.dv.setUint16(14, usedIdx, true);
    this.counter = 0n;
  }

  /** "When receiving available buffers": counter, then inflight = 1, before the request is processed. */
  begin(head: number): void {
    const e = INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head;
    this.dv.setBigUint64(e + 8, this.counter++, true);
    this.dv.setUint8(e, 1);
  }

  /** "When supplying used buffers", steps 1-3, before the used entry and used.idx are written. */
  beforeUsed(head: number): void {
    const e = INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head;
    this.dv.setUint16(e + 6, this.lastBatchHead, true);
    this.dv.setUint16(12, head, true);
  }

  /** The rest, after used.idx was published: inflight = 0, then used_idx = used.idx. */
  afterUsed(head: number, usedIdx: number): void {
    this.dv.setUint8(INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head, 0);
    this.dv.setUint16(14, usedIdx, true);
  }

  /**
   * "When reconnecting": if used_idx lags the ring's used.idx, the last batch
   * (last_batch_head, `used.idx - used_idx` entries linked by next) was published
   * but not cleared, so it is cleared now; then the heads still in flight, in the
   * order of their counter, are what the back-end resubmits. The counter resumes
   * after the largest one seen.
   */
  recover(ringUsedIdx: number): number[] {
    if (this.version === 0) {
      this.initialise(ringUsedIdx);
      return [];
    }
    const lag = (ringUsedIdx - this.usedIdx) & 0xffff;
    if (lag > this.descNum) {
      throw violation('VHOST_INVALID_PAYLOAD', `inflight used_idx ${this.usedIdx} is ${lag} behind used.idx ${ringUsedIdx}, more than the ${this.descNum} descriptors of the ring`, 'SET_INFLIGHT_FD', "vhost-user.rst, 'Inflight I/O tracking'");
    }
    let head = this.lastBatchHead;
    for (let i = 0; i < lag; i++) {
      if (head >= this.descNum) {
        throw violation('VHOST_INVALID_PAYLOAD', `inflight last batch links to descriptor ${head}, outside a ring of ${this.descNum}`, 'SET_INFLIGHT_FD', "vhost-user.rst, 'Inflight I/O tracking'");
      }
      const e = INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * head;
      this.dv.setUint8(e, 0);
      head = this.dv.getUint16(e + 6, true);
    }
    this.dv.setUint16(14, ringUsedIdx, true);
    const heads: number[] = [];
    let max = -1n;
    for (let i = 0; i < this.descNum; i++) {
      const flag = this.dv.getUint8(INFLIGHT_SPLIT_HEADER + INFLIGHT_DESC_STATE_SPLIT * i);
      if (flag > 1) {
        throw violation('VHOST_INVALID_PAYLOAD', `inflight flag ${flag} for descriptor ${i} is neither 0 nor 1`, 'SET_INFLIGHT_FD', "vhost-user.rst, 'Inflight I/O tracking'");
      }
      if (flag === 1) heads.push(i);
      const c = this.counterOf(i);
      if (c > max) max = c;
    }
    heads.sort((a, b) => (this.counterOf(a) < this.counterOf(b) ? -1 : this.counterOf(a) > this.counterOf(b) ? 1 : a - b));
    this.counter = max + 1n;
    return heads;
  }

  /** @internal The mapping offset of this region (tests read the raw bytes). */
  get regionOffset(): number {
    return this.offset;
  }

  /** @internal */
  get area(): Mapping {
    return this.mapping;
  }
}

/** One queue's region of the area, in the layout of the device's rings. */
export type InflightRegion = SplitInflightRegion | PackedInflightRegion;

/** Bytes of one queue region in the given layout. */
export function regionSize(queueSize: number, packed: boolean): number {
  return packed ? packedRegionSize(queueSize) : splitRegionSize(queueSize);
}

function region(mapping: Mapping, offset: number, queueSize: number, packed: boolean): InflightRegion {
  return packed ? new PackedInflightRegion(mapping, offset, queueSize) : new SplitInflightRegion(mapping, offset, queueSize);
}

/** One inflight area: its mapping and a region per queue, all in one layout. */
export class InflightArea {
  private constructor(
    private readonly mapping: Mapping,
    readonly numQueues: number,
    readonly queueSize: number,
    /** QueueRegionPacked (true) or QueueRegionSplit regions. */
    readonly packed: boolean,
    readonly regions: InflightRegion[],
  ) {}

  /** Checks num_queues and queue_size against the device (CVE-2021-3839: num_queues unbounded). */
  static checkShape(desc: Pick<Inflight, 'numQueues' | 'queueSize'>, maxQueues: number, request: string): void {
    if (desc.numQueues < 1 || desc.numQueues > maxQueues) {
      throw violation('VHOST_INVALID_PAYLOAD', `num_queues ${desc.numQueues} is not in 1..${maxQueues} (the device's queues)`, request, "vhost-user.rst, 'Inflight description'");
    }
    if (desc.queueSize < 1 || desc.queueSize > VIRTQUEUE_MAX_SIZE) {
      throw violation('VHOST_INVALID_PAYLOAD', `queue_size ${desc.queueSize} is not in 1..${VIRTQUEUE_MAX_SIZE}`, request, 'virtio 1.2 §2.7: Queue Size');
    }
  }

  /**
   * GET_INFLIGHT_FD: a zeroed memfd with an initialised region per queue. Returns
   * the area (mapped) and the fd to send, which the caller closes once sent.
   */
  static allocate(numQueues: number, queueSize: number, packed = false): { area: InflightArea; fd: number; mmapSize: number } {
    const per = regionSize(queueSize, packed);
    const size = per * numQueues;
    const fd = libc.memfd_create('vhost-user-ref-inflight', C.MFD_CLOEXEC);
    if (fd < 0) throw syscallError('memfd_create');
    try {
      if (libc.ftruncate(fd, size) !== 0) throw syscallError('ftruncate');
      const mapping = Mapping.map(fd, size);
      const regions = Array.from({ length: numQueues }, (_, q) => region(mapping, q * per, queueSize, packed));
      for (const r of regions) r.initialise();
      return { area: new InflightArea(mapping, numQueues, queueSize, packed, regions), fd, mmapSize: size };
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /**
   * SET_INFLIGHT_FD: maps the area the front-end hands over. `fd` is closed here
   * whatever happens (the mapping keeps the memory). Every size is checked
   * against what the description and the file actually hold. `packed`: the
   * layout the negotiated rings call for.
   */
  static adopt(fd: number, desc: Inflight, maxQueues: number, request: string, packed = false): InflightArea {
    try {
      InflightArea.checkShape(desc, maxQueues, request);
      const per = regionSize(desc.queueSize, packed);
      const need = BigInt(per * desc.numQueues);
      if (desc.mmapSize < need) {
        throw violation('VHOST_INVALID_PAYLOAD', `mmap_size ${desc.mmapSize} is smaller than ${desc.numQueues} queue regions of ${per} bytes`, request, "vhost-user.rst, 'Inflight I/O tracking'");
      }
      if (desc.mmapOffset % 4096n !== 0n) {
        throw violation('VHOST_INVALID_PAYLOAD', `mmap_offset ${desc.mmapOffset} is not page aligned`, request);
      }
      let fileSize: number;
      try {
        fileSize = fstatSync(fd).size;
      } catch {
        throw violation('VHOST_INVALID_PAYLOAD', 'the inflight fd cannot be examined (fstat failed)', request);
      }
      const end = desc.mmapOffset + need;
      if (BigInt(fileSize) < end) {
        throw violation('VHOST_INVALID_PAYLOAD', `the inflight fd holds ${fileSize} bytes, less than mmap_offset + the regions (${end})`, request);
      }
      const mapping = Mapping.map(fd, Number(need), { offset: Number(desc.mmapOffset) });
      const regions = Array.from({ length: desc.numQueues }, (_, q) => region(mapping, q * per, desc.queueSize, packed));
      for (const [q, r] of regions.entries()) {
        const version = r.version;
        const descNum = r.headerDescNum;
        if (version !== 0 && (version !== INFLIGHT_VERSION || descNum !== desc.queueSize)) {
          mapping.close();
          throw violation('VHOST_INVALID_PAYLOAD', `queue ${q} region: version ${version}, desc_num ${descNum} (expected version ${INFLIGHT_VERSION}, desc_num ${desc.queueSize})`, request, "vhost-user.rst, 'Inflight I/O tracking'");
        }
      }
      return new InflightArea(mapping, desc.numQueues, desc.queueSize, packed, regions);
    } finally {
      closeFd(fd);
    }
  }

  close(): void {
    this.mapping.close();
  }
}
