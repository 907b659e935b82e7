/**
 * What lives where in a migrating device's guest memory, and who writes it: the
 * driver (avail ring, descriptors, TX frames, blk request headers and write
 * data), the device (used ring, RX buffers, blk read data and status), or both
 * (a packed ring's descriptors: the driver makes them available, the device
 * writes used entries over them, virtio 1.2 §2.8). The verifier uses it to tell
 * the driver's writes (which the "hypervisor", this library, tracks itself) from
 * the back-end's (which must be in the dirty log), and to name a page it reports.
 */
import type { VhostDevice } from '../devices/vhost-device.js';
import type { Virtqueue } from '../virtqueue/virtqueue.js';
import { VIRTIO_PAGE } from './pages.js';

/** Who writes an area. */
export type AreaWriter = 'driver' | 'device' | 'both';

/** One range of guest memory with one meaning. */
export interface MemoryArea {
  /** First guest-physical byte. */
  gpa: number;
  /** Bytes. */
  length: number;
  /** Who writes it. */
  writer: AreaWriter;
  /** What it is, for reports: "ring 0 used ring", "RX buffers 0-127 of queue pair 0". */
  label: string;
  /** For areas split into equal units (RX buffers, packed descriptors): bytes per unit, named "label unit N". */
  unit?: number;
  /** Name of one unit in reports ("RX buffer", "descriptor"). */
  unitName?: string;
  /** Packed descriptor ring: a changed descriptor in used form (AVAIL == USED) was last written by the device. */
  packedDescriptors?: boolean;
}

const SPLIT_DESC = 16;

/** The areas of every ring of a device; `names` gives each ring index a name (net: "receiveq 0"). */
export function ringAreas(device: VhostDevice, names: (index: number) => string): MemoryArea[] {
  const out: MemoryArea[] = [];
  for (const { vq } of device.queues) out.push(...vqAreas(vq, `ring ${vq.index} (${names(vq.index)})`));
  return out;
}

function vqAreas(vq: Virtqueue, name: string): MemoryArea[] {
  const areas = ringParts(vq, name);
  // After the ring, to the end of its footprint: the driver's indirect descriptor tables.
  const end = Math.max(...areas.map((x) => x.gpa + x.length));
  const tables = Math.ceil(end / 16) * 16;
  const length = vq.addresses.desc + vq.footprint - tables;
  if (length > 0) areas.push({ gpa: tables, length, writer: 'driver', label: `${name} indirect descriptor tables` });
  return areas;
}

function ringParts(vq: Virtqueue, name: string): MemoryArea[] {
  const a = vq.addresses;
  const n = vq.size;
  if (vq.packed) {
    // virtio 1.2 §2.8.10: 16-byte descriptors; §2.8.14: 4-byte event suppression structures.
    return [
      { gpa: a.desc, length: 16 * n, writer: 'both', label: `${name} descriptor ring`, unit: 16, unitName: 'descriptor', packedDescriptors: true },
      { gpa: a.driver, length: 4, writer: 'driver', label: `${name} driver event area` },
      { gpa: a.device, length: 4, writer: 'device', label: `${name} device event area` },
    ];
  }
  // virtio 1.2 §2.7.5-§2.7.8: flags, idx, ring[n], then used_event / avail_event.
  return [
    { gpa: a.desc, length: SPLIT_DESC * n, writer: 'driver', label: `${name} descriptor table` },
    { gpa: a.driver, length: 4 + 2 * n + 2, writer: 'driver', label: `${name} avail ring` },
    { gpa: a.device, length: 4 + 8 * n + 2, writer: 'device', label: `${name} used ring` },
  ];
}

/** Names of the areas touching guest page `page`, for a report ("ring 0 (receiveq 0) used ring"). */
export function describePage(areas: readonly MemoryArea[], page: number): string[] {
  const start = page * VIRTIO_PAGE;
  const out: string[] = [];
  for (const a of areas) {
    const name = describeRange(a, start, start + VIRTIO_PAGE);
    if (name !== null) out.push(name);
  }
  return out.length > 0 ? out : ['unused guest memory'];
}

/** The name of what of `a` lies in [start, end), or null when nothing does; units are counted from the area's start. */
export function describeRange(a: MemoryArea, start: number, end: number): string | null {
  if (a.gpa >= end || a.gpa + a.length <= start) return null;
  if (a.unit === undefined) return a.label;
  const first = Math.floor((Math.max(start, a.gpa) - a.gpa) / a.unit);
  const last = Math.floor((Math.min(end, a.gpa + a.length) - 1 - a.gpa) / a.unit);
  return first === last ? `${a.label}: ${a.unitName} ${first}` : `${a.label}: ${a.unitName}s ${first}-${last}`;
}
