/**
 * The memory side of a verified migration: copies the source guest memory to the
 * destination the way a precopy migration does (everything once, then the dirty
 * pages of each round), and judges every page on the way.
 *
 * Whose write is it? The back-end's writes must be in the dirty log
 * (vhost-user.rst, "Migration"); the driver's are the hypervisor's to track
 * (KVM's dirty log for a real guest). Node cannot write-protect its own pages,
 * and this kernel has no soft-dirty bits, so the driver's writes are found by
 * comparing what the driver owns (memory-map.ts) with the destination copy:
 * exact, and the packet path is left untouched. A page that changed is then
 * - logged: copied (the back-end did its duty);
 * - not logged, changed only in bytes the driver writes: copied (tracked guest write);
 * - not logged, changed in bytes only the device writes (a used ring, an RX
 *   buffer, a packed descriptor now in used form): a suspect. An external
 *   back-end sets the log bit just after its write, so a suspect is cleared when
 *   the next sync logs the page, and confirmed otherwise. After GET_VRING_BASE
 *   (the last round) the back-end has finished and logged everything, so a
 *   suspect of the last round is confirmed at once.
 * Suspects are copied too ("repaired"), so one run names every unlogged page and
 * the device keeps working on the destination; a real migration would have lost
 * those writes.
 *
 * Precision: a page logged at least once that holds nothing the device writes
 * (only driver areas, or unused memory) was logged for a write the device
 * cannot have made: a wrong log address. Pages logged that never differed at
 * any sync are reported too, as evidence only (a write of the bytes already
 * there, such as a status byte, looks the same). Quiet: the source
 * memory is kept (the back-end still maps it) and compared at the end with a
 * snapshot taken after the last copy: any page changed was written after
 * GET_VRING_BASE.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { VhostUserError } from '../errors.js';
import { describePage, describeRange, type MemoryArea } from './memory-map.js';
import { VIRTIO_PAGE } from './pages.js';

/** One page the verifier reports. */
export interface PageFinding {
  /** Guest page number (GPA / 4096). */
  page: number;
  /** What lives there. */
  areas: string[];
  /** The round it was found in (0: the first full copy; the last: switchover). */
  round: number;
}

/** The memory numbers of one round. */
export interface RoundCopy {
  /** Pages the dirty log named this round. */
  loggedPages: number;
  /** Pages the driver changed (found by comparison) and the log did not name. */
  driverPages: number;
  /** Pages dirty this round: logged or changed by the driver (what a hypervisor would copy). */
  dirtyPages: number;
  /** Pages copied to the destination (dirty, and unlogged back-end writes repaired). */
  copiedPages: number;
  /** Bytes copied. */
  bytes: number;
  /** Back-end writes found this round and not (yet) in the log. */
  suspects: number;
}

/** Byte ranges of one page the device writes (device-only, or packed descriptors). */
interface DeviceRange {
  offset: number;
  length: number;
  area: MemoryArea;
}

interface Region {
  gpa: number;
  pages: number;
  src: Buffer;
  dst: Buffer;
}

/** Copies and judges guest pages from a source memory to a destination of the same layout. */
export class MigrationVerifier {
  /** Guest pages per region start: pages are numbered by GPA. */
  private readonly regions: Region[];
  private readonly deviceRanges = new Map<number, DeviceRange[]>();
  /** Pages holding any area (rings, buffers): the only ones the driver or a correct device writes. */
  private readonly areaPages = new Set<number>();
  private readonly loggedEver = new Set<number>();
  private readonly changedEver = new Set<number>();
  /** Back-end writes not logged: page to the round and areas it was seen in. */
  private suspects = new Map<number, PageFinding>();
  private readonly confirmed = new Map<number, PageFinding>();
  private snapshot: Map<number, Buffer> | null = null;
  private roundNo = 0;
  /** Pages that differed at the last round before its copy. */
  differingAtSwitchover = 0;

  constructor(
    source: GuestMemory,
    destination: GuestMemory,
    private readonly areas: readonly MemoryArea[],
  ) {
    this.regions = source.regions.map((r, i) => {
      const d = destination.regions[i]!;
      if (r.size > 2 ** 30 || d.size !== r.size || d.guestPhysAddr !== r.guestPhysAddr) {
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'the verifier needs source and destination of the same layout, regions of at most 1 GiB');
      }
      const view = (m: GuestMemory) => {
        const w = m.window(r.guestPhysAddr, r.size);
        return Buffer.from(w.buffer, w.byteOffset, r.size);
      };
      return { gpa: r.guestPhysAddr, pages: r.size / VIRTIO_PAGE, src: view(source), dst: view(destination) };
    });
    for (const a of areas) {
      for (let p = Math.floor(a.gpa / VIRTIO_PAGE); p * VIRTIO_PAGE < a.gpa + a.length; p++) this.areaPages.add(p);
      if (a.writer === 'driver') continue;
      for (let gpa = a.gpa; gpa < a.gpa + a.length; ) {
        const page = Math.floor(gpa / VIRTIO_PAGE);
        const end = Math.min(a.gpa + a.length, (page + 1) * VIRTIO_PAGE);
        let list = this.deviceRanges.get(page);
        if (!list) this.deviceRanges.set(page, (list = []));
        list.push({ offset: gpa - page * VIRTIO_PAGE, length: end - gpa, area: a });
        gpa = end;
      }
    }
  }

  /** Pages of guest memory. */
  get pageCount(): number {
    return this.regions.reduce((n, r) => n + r.pages, 0);
  }

  /** Round 0: every page copied. */
  copyAll(): RoundCopy {
    let pages = 0;
    for (const r of this.regions) {
      r.src.copy(r.dst, 0, 0, r.src.length);
      pages += r.pages;
    }
    this.roundNo = 1;
    return { loggedPages: 0, driverPages: 0, dirtyPages: pages, copiedPages: pages, bytes: pages * VIRTIO_PAGE, suspects: 0 };
  }

  /**
   * One round after a log sync: `logged` are the pages the back-end logged since
   * the last sync. `last`: the back-end has stopped (after GET_VRING_BASE), so
   * suspects are confirmed at once.
   */
  round(logged: readonly number[], last: boolean): RoundCopy {
    const round = this.roundNo++;
    const loggedSet = new Set(logged);
    // Suspects of the previous round: logged late (fine) or never (confirmed).
    for (const [page, f] of this.suspects) if (!loggedSet.has(page)) this.confirmed.set(page, f);
    this.suspects = new Map();
    const n = { driverPages: 0, copied: 0, differing: 0 };
    for (const page of logged) this.loggedEver.add(page);
    if (last) {
      // In the downtime only the pages that can have changed: the log's and the areas'
      // (rings and buffers: where the driver and the device write). Plain guest RAM is
      // compared by sweepPlainPages() once the destination runs.
      const pages = new Set([...this.areaPages, ...loggedSet]);
      for (const page of pages) this.judge(page, loggedSet, true, round, n);
      this.differingAtSwitchover = n.differing;
      for (const [page, f] of this.suspects) this.confirmed.set(page, f);
      this.suspects = new Map();
    } else {
      for (const r of this.regions) {
        const first = r.gpa / VIRTIO_PAGE;
        for (let i = 0; i < r.pages; i++) this.judge(first + i, loggedSet, false, round, n, r, i);
      }
    }
    return { loggedPages: loggedSet.size, driverPages: n.driverPages, dirtyPages: loggedSet.size + n.driverPages, copiedPages: n.copied, bytes: n.copied * VIRTIO_PAGE, suspects: this.suspects.size };
  }

  /** Compares one page, classifies a change (see the file comment) and copies it. */
  private judge(page: number, loggedSet: Set<number>, last: boolean, round: number, n: { driverPages: number; copied: number; differing: number }, region?: Region, index?: number): void {
    const r = region ?? this.regionOfPage(page);
    if (r === undefined) return;
    const i = index ?? page - r.gpa / VIRTIO_PAGE;
    const o = i * VIRTIO_PAGE;
    const isLogged = loggedSet.has(page);
    if (r.src.compare(r.dst, o, o + VIRTIO_PAGE, o, o + VIRTIO_PAGE) === 0) {
      if (isLogged) n.copied++; // a hypervisor copies what the log names, changed or not (nothing to do here)
      return;
    }
    n.differing++;
    this.changedEver.add(page);
    if (!isLogged) {
      const device = this.deviceWrites(r, i);
      if (device.length > 0) {
        const finding = { page, areas: device, round };
        if (last) this.confirmed.set(page, finding);
        else this.suspects.set(page, finding);
      } else {
        n.driverPages++;
      }
    }
    r.src.copy(r.dst, o, o, o + VIRTIO_PAGE);
    n.copied++;
  }

  private regionOfPage(page: number): Region | undefined {
    return this.regions.find((r) => page >= r.gpa / VIRTIO_PAGE && page < r.gpa / VIRTIO_PAGE + r.pages);
  }

  /**
   * After the switchover, with the source stopped and `source`/`destination` of
   * the constructor now showing the destination's and the source's memory
   * (swapBacking): the pages outside every area (plain guest RAM, which neither
   * the driver nor a correct device writes) are compared between the two. A page
   * that differs was written by the source back-end after the last copy of the
   * precopy rounds and never logged. Outside the downtime: it scans all of memory.
   */
  sweepPlainPages(): PageFinding[] {
    const out: PageFinding[] = [];
    for (const r of this.regions) {
      const first = r.gpa / VIRTIO_PAGE;
      for (let i = 0; i < r.pages; i++) {
        const page = first + i;
        if (this.areaPages.has(page)) continue;
        const o = i * VIRTIO_PAGE;
        if (r.src.compare(r.dst, o, o + VIRTIO_PAGE, o, o + VIRTIO_PAGE) !== 0 && !this.confirmed.has(page)) {
          const f = { page, areas: describePage(this.areas, page), round: this.roundNo - 1 };
          this.confirmed.set(page, f);
          out.push(f);
        }
      }
    }
    return out;
  }

  /** Area pages still different between source and destination (0 after the last round: the byte-for-byte check at switchover; plain RAM is sweepPlainPages()'s). */
  differingPages(): number {
    let n = 0;
    for (const page of this.areaPages) {
      const r = this.regionOfPage(page);
      if (r === undefined) continue;
      const o = (page - r.gpa / VIRTIO_PAGE) * VIRTIO_PAGE;
      if (r.src.compare(r.dst, o, o + VIRTIO_PAGE, o, o + VIRTIO_PAGE) !== 0) n++;
    }
    return n;
  }

  /** Names of the device-written areas of page `i` of `r` that differ from the destination. */
  private deviceWrites(r: Region, i: number): string[] {
    const page = r.gpa / VIRTIO_PAGE + i;
    const ranges = this.deviceRanges.get(page);
    const base = i * VIRTIO_PAGE;
    // No area known there: nobody should write it, so it is the back-end.
    if (ranges === undefined) return this.inAnyArea(page) ? [] : describePage(this.areas, page);
    const out: string[] = [];
    for (const d of ranges) {
      const o = base + d.offset;
      if (d.area.packedDescriptors) {
        // A packed descriptor is in used form when its AVAIL and USED flags agree (virtio 1.2 §2.8.1).
        for (let s = o; s + 16 <= o + d.length; s += 16) {
          if (r.src.compare(r.dst, s, s + 16, s, s + 16) === 0) continue;
          const flags = r.src.readUInt16LE(s + 14);
          if (((flags >> 7) & 1) === ((flags >> 15) & 1)) {
            const slot = (r.gpa + s - d.area.gpa) / 16;
            out.push(`${d.area.label}: descriptor ${slot} (used)`);
            break;
          }
        }
      } else if (r.src.compare(r.dst, o, o + d.length, o, o + d.length) !== 0) {
        // Name the changed units only (the RX buffers written, not every one on the page).
        const step = d.area.unit ?? d.length;
        for (let u = o; u < o + d.length; ) {
          const gpaU = r.gpa + u;
          const next = Math.min(o + d.length, u + step - ((gpaU - d.area.gpa) % step));
          if (r.src.compare(r.dst, u, next, u, next) !== 0) {
            const name = describeRange(d.area, gpaU, r.gpa + next);
            if (name !== null && !out.includes(name)) out.push(name);
          }
          u = next;
        }
      }
    }
    return out;
  }

  private inAnyArea(page: number): boolean {
    const start = page * VIRTIO_PAGE;
    return this.areas.some((a) => a.gpa < start + VIRTIO_PAGE && a.gpa + a.length > start);
  }

  /**
   * Keeps a copy of the area pages of the destination as they are now (right
   * after the last copy), for {@link quietCheck}; plain guest RAM needs none: the
   * destination keeps it unchanged, so it is its own snapshot.
   */
  takeSnapshot(): void {
    this.snapshot = new Map();
    for (const page of this.areaPages) {
      const r = this.regionOfPage(page);
      if (r === undefined) continue;
      const o = (page - r.gpa / VIRTIO_PAGE) * VIRTIO_PAGE;
      this.snapshot.set(page, Buffer.from(r.dst.subarray(o, o + VIRTIO_PAGE)));
    }
  }

  /**
   * Pages of the source memory (still mapped by the old back-end; after the swap
   * it is what the constructor's `destination` shows) that changed since the
   * switchover: area pages against the snapshot, plain RAM against the destination
   * memory (which nothing writes there). Written after GET_VRING_BASE.
   */
  quietCheck(): PageFinding[] {
    if (this.snapshot === null) throw new VhostUserError('VHOST_INVALID_STATE', 'no snapshot taken');
    const out: PageFinding[] = [];
    for (const r of this.regions) {
      const first = r.gpa / VIRTIO_PAGE;
      for (let i = 0; i < r.pages; i++) {
        const page = first + i;
        const o = i * VIRTIO_PAGE;
        const snap = this.snapshot.get(page);
        // After the swap `dst` shows the source, `src` the destination.
        const changed = snap !== undefined ? r.dst.compare(snap, 0, VIRTIO_PAGE, o, o + VIRTIO_PAGE) !== 0 : !this.confirmed.has(page) && r.src.compare(r.dst, o, o + VIRTIO_PAGE, o, o + VIRTIO_PAGE) !== 0;
        if (changed) out.push({ page, areas: describePage(this.areas, page), round: this.roundNo });
      }
    }
    return out;
  }

  /** Back-end writes never logged, by page. */
  unlogged(): PageFinding[] {
    return [...this.confirmed.values()].sort((a, b) => a.page - b.page);
  }

  /**
   * Pages logged at least once that hold nothing the device may write (only
   * driver areas, or no area): the back-end logged a write it had no business
   * doing, or logged at the wrong address. Sound, unlike "never changed", which
   * rounds cannot prove (a status byte written with the value it had).
   */
  loggedForeign(): PageFinding[] {
    return [...this.loggedEver]
      .filter((p) => !this.deviceRanges.has(p))
      .sort((a, b) => a - b)
      .map((page) => ({ page, areas: describePage(this.areas, page), round: -1 }));
  }

  /** Pages logged at least once that never differed at any sync (evidence only: a write of the same bytes looks the same). */
  loggedUnchanged(): PageFinding[] {
    return [...this.loggedEver]
      .filter((p) => !this.changedEver.has(p))
      .sort((a, b) => a - b)
      .map((page) => ({ page, areas: describePage(this.areas, page), round: -1 }));
  }

  /** Pages ever logged. */
  get loggedCount(): number {
    return this.loggedEver.size;
  }
}
