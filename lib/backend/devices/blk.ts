/**
 * The reference back-end's 'blk' device: a file or a memfd served as a
 * virtio-blk disk (virtio 1.2 §5.2): IN, OUT, FLUSH, GET_ID, DISCARD and
 * WRITE_ZEROES (with UNMAP) requests in 512-byte sectors, optionally
 * read-only (VIRTIO_BLK_F_RO), optionally holding each request for a while
 * before completing it (so tests can catch requests in flight).
 */
import { BLK_CONFIG_SIZE, SECTOR_SIZE } from '../../devices/blk/blk-config.js';
import { closeSync, fsyncSync, openSync, readSync, writeSync, fstatSync } from 'node:fs';
import { VhostUserError } from '../../errors.js';
import {
  BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from '../../protocol/virtio-blk.js';
import { C, closeFd, libc, syscallError } from '../../native/libc.js';
import { ProtocolFeature, VirtioBlkFeature, bit } from '../../protocol/constants.js';
import type { Chain, Vring } from '../vring-state.js';
import type { DeviceModel, DeviceRings } from './device.js';

/** Requests the reference back-end's blk device has served, by type (virtio 1.2 §5.2.6). */
export interface BlkStats {
  /** VIRTIO_BLK_T_IN requests completed OK. */
  reads: number;
  /** VIRTIO_BLK_T_OUT requests completed OK. */
  writes: number;
  /** VIRTIO_BLK_T_FLUSH requests completed OK. */
  flushes: number;
  /** VIRTIO_BLK_T_DISCARD requests completed OK. */
  discards: number;
  /** VIRTIO_BLK_T_WRITE_ZEROES requests completed OK. */
  writeZeroes: number;
  /** Requests answered IOERR or UNSUPP. */
  errors: number;
}

/** Where the disk comes from: `blkImage` (a file) or else a memfd of `blkSize` bytes. */
export interface BlkImageOptions {
  blkImage?: string;
  blkSize?: number;
  /** Open the image read-only and offer VIRTIO_BLK_F_RO. */
  blkReadOnly?: boolean;
}

/** How the device serves requests besides its image. */
export interface BlkDeviceOptions {
  /** Offer VIRTIO_BLK_F_RO: every write-type request is answered IOERR (§5.2.6.2). */
  readOnly?: boolean;
  /** Hold each request this many ms before serving it (default 0: at once). */
  latencyMs?: number;
  /** Offer INFLIGHT_SHMFD (default true); false makes a back-end that leaves recovery to the driver. */
  inflight?: boolean;
}

const BLK_ID = 'vhost-user-ref';
const BLK_SEG_MAX = 126;
/** Config limits offered with DISCARD and WRITE_ZEROES (§5.2.4), in 512-byte sectors. */
export const BLK_MAX_DISCARD_SECTORS = 1 << 16;
export const BLK_MAX_DISCARD_SEG = 16;
export const BLK_DISCARD_SECTOR_ALIGNMENT = 8;
export const BLK_MAX_WRITE_ZEROES_SECTORS = 1 << 16;
export const BLK_MAX_WRITE_ZEROES_SEG = 16;
/** Zeros written where a hole cannot be punched; shared, never written to. */
const ZEROS = new Uint8Array(64 * 1024);

/** The blk disk: a file or memfd accessed with pread/pwrite. */
export class BlkImage {
  readonly capacity: number;
  readonly readOnly: boolean;
  private fd: number;
  constructor(fd: number, capacity: number, readOnly = false) {
    this.fd = fd;
    this.capacity = capacity;
    this.readOnly = readOnly;
  }
  static open(options: BlkImageOptions): BlkImage {
    if (options.blkImage !== undefined) {
      let fd: number;
      try {
        fd = openSync(options.blkImage, options.blkReadOnly ? 'r' : 'r+');
      } catch (cause) {
        const code = (cause as NodeJS.ErrnoException).code;
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `cannot open blk image ${options.blkImage}: ${code ?? String(cause)}`, { errno: code, cause });
      }
      const size = fstatSync(fd).size;
      if (size < SECTOR_SIZE) {
        closeSync(fd);
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `blk image ${options.blkImage} is smaller than one ${SECTOR_SIZE}-byte sector`);
      }
      return new BlkImage(fd, size - (size % SECTOR_SIZE), options.blkReadOnly ?? false);
    }
    const size = options.blkSize ?? 64 * 2 ** 20;
    if (!Number.isSafeInteger(size) || size < SECTOR_SIZE || size % SECTOR_SIZE !== 0) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `blk size ${size} must be a positive multiple of ${SECTOR_SIZE}`);
    }
    const fd = libc.memfd_create('vhost-user-ref-blk', C.MFD_CLOEXEC);
    if (fd < 0) throw syscallError('memfd_create');
    if (libc.ftruncate(fd, size) !== 0) {
      const e = syscallError('ftruncate');
      closeFd(fd);
      throw e;
    }
    return new BlkImage(fd, size, options.blkReadOnly ?? false);
  }
  read(into: Uint8Array, position: number): void {
    let done = 0;
    while (done < into.length) {
      const n = readSync(this.fd, into, done, into.length - done, position + done);
      if (n <= 0) {
        into.fill(0, done);
        return;
      }
      done += n;
    }
  }
  write(from: Uint8Array, position: number): void {
    let done = 0;
    while (done < from.length) done += writeSync(this.fd, from, done, from.length - done, position + done);
  }
  flush(): void {
    fsyncSync(this.fd);
  }
  /**
   * Deallocates [position, position + length) when the file system can punch a
   * hole (reads then return zeros); returns false when it cannot.
   */
  punchHole(position: number, length: number): boolean {
    return libc.fallocate(this.fd, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, position, length) === 0;
  }
  /** Zeros [position, position + length): a punched hole, or zeros written where no hole can be. */
  zero(position: number, length: number, unmap: boolean): void {
    if (unmap && this.punchHole(position, length)) return;
    for (let done = 0; done < length; ) {
      const n = Math.min(ZEROS.length, length - done);
      this.write(ZEROS.subarray(0, n), position + done);
      done += n;
    }
  }
  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Serves requests against `image`, which it uses but does not own (the caller closes it). */
export class BlkDevice implements DeviceModel {
  readonly features: bigint;
  /** INFLIGHT_SHMFD: the blk device resubmits what a predecessor left in flight (inflight-area.ts). */
  /** virtio 1.2 §5: device ID. */
  readonly deviceId = 2;
  readonly protocolFeatures: bigint;
  private readonly readOnly: boolean;
  private readonly latencyMs: number;

  constructor(
    private readonly image: BlkImage,
    private readonly queueNum: number,
    private readonly stats: BlkStats,
    options: BlkDeviceOptions = {},
  ) {
    this.readOnly = (options.readOnly ?? false) || image.readOnly;
    this.latencyMs = options.latencyMs ?? 0;
    this.protocolFeatures = (options.inflight === false ? 0n : bit(ProtocolFeature.INFLIGHT_SHMFD)) | bit(ProtocolFeature.DEVICE_STATE);
    let f =
      bit(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) |
      bit(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE) |
      bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH) |
      bit(VirtioBlkFeature.VIRTIO_BLK_F_DISCARD) |
      bit(VirtioBlkFeature.VIRTIO_BLK_F_WRITE_ZEROES);
    if (queueNum > 1) f |= bit(VirtioBlkFeature.VIRTIO_BLK_F_MQ);
    if (this.readOnly) f |= bit(VirtioBlkFeature.VIRTIO_BLK_F_RO);
    this.features = f;
  }

  /** DEVICE_STATE: the capacity (the destination must serve the same disk) and the counters, f64 each. */
  saveState(): Uint8Array {
    const s = this.stats;
    const values = [this.image.capacity, s.reads, s.writes, s.flushes, s.discards, s.writeZeroes, s.errors];
    const out = new Uint8Array(values.length * 8);
    const dv = new DataView(out.buffer);
    values.forEach((v, i) => dv.setFloat64(8 * i, v, true));
    return out;
  }

  /** DEVICE_STATE: the counters go on from the source's; a disk of another size is refused. */
  loadState(state: Uint8Array): void {
    if (state.length !== 56) throw new Error(`a blk state is 56 bytes, not ${state.length}`);
    const dv = new DataView(state.buffer, state.byteOffset, state.length);
    const v = (i: number) => dv.getFloat64(8 * i, true);
    if (v(0) !== this.image.capacity) throw new Error(`the source's disk has ${v(0)} bytes, this one ${this.image.capacity}`);
    const s = this.stats;
    [s.reads, s.writes, s.flushes, s.discards, s.writeZeroes, s.errors] = [v(1), v(2), v(3), v(4), v(5), v(6)];
  }

  configSpace(): Uint8Array {
    const c = new Uint8Array(BLK_CONFIG_SIZE);
    const dv = new DataView(c.buffer);
    dv.setBigUint64(0, BigInt(Math.floor(this.image.capacity / SECTOR_SIZE)), true);
    dv.setUint32(12, BLK_SEG_MAX, true);
    dv.setUint32(20, SECTOR_SIZE, true);
    dv.setUint16(34, this.queueNum, true);
    dv.setUint32(36, BLK_MAX_DISCARD_SECTORS, true);
    dv.setUint32(40, BLK_MAX_DISCARD_SEG, true);
    dv.setUint32(44, BLK_DISCARD_SECTOR_ALIGNMENT, true);
    dv.setUint32(48, BLK_MAX_WRITE_ZEROES_SECTORS, true);
    dv.setUint32(52, BLK_MAX_WRITE_ZEROES_SEG, true);
    // §5.2.6.2: may_unmap says a write-zeroes request can deallocate: memfds and the usual
    // file systems (tmpfs, ext4, xfs, btrfs) punch holes; elsewhere zeros are written instead.
    dv.setUint8(56, 1);
    return c;
  }

  process(s: DeviceRings, r: Vring): void {
    if (this.latencyMs > 0) {
      for (let c = s.pop(r); c !== null; c = s.pop(r)) r.hold(c, this.latencyMs, () => this.serveHeld(s, r));
      return;
    }
    let done = 0;
    for (let c = s.pop(r); c !== null; c = s.pop(r)) {
      done++;
      this.serve(s, r, c);
    }
    if (done) r.notify();
  }

  /** Serves every chain `r` holds (its latency elapsed, or the ring is being drained). */
  private serveHeld(s: DeviceRings, r: Vring): void {
    const held = r.held;
    r.held = [];
    for (const c of held) this.serve(s, r, c);
    if (held.length) r.notify();
  }

  /** Serves one request and completes it in the used ring. */
  private serve(s: DeviceRings, r: Vring, c: Chain): void {
    const image = this.image;
    const mem = s.memory;
    {
      const writable = c.segments.filter((g) => g.writable);
      const last = writable[writable.length - 1];
      if (c.readableBytes < 16 || last === undefined) {
        // No header or no status byte: nothing can be reported in the chain.
        this.stats.errors++;
        r.push(c, 0);
        return;
      }
      const header = new Uint8Array(16);
      let hoff = 0;
      const dataIn: { gpa: number; len: number }[] = [];
      for (const seg of c.segments) {
        if (seg.writable) continue;
        const take = Math.min(16 - hoff, seg.len);
        if (take > 0) header.set(mem.bytes(seg.gpa, take), hoff);
        hoff += take;
        if (seg.len > take) dataIn.push({ gpa: seg.gpa + take, len: seg.len - take });
      }
      const dv = new DataView(header.buffer);
      const type = dv.getUint32(0, true);
      const sector = dv.getBigUint64(8, true);
      const dataOut = writable.slice(0, -1).map((g) => ({ gpa: g.gpa, len: g.len }));
      if (last.len > 1) dataOut.push({ gpa: last.gpa, len: last.len - 1 });
      const statusGpa = last.gpa + last.len - 1;
      let status = VIRTIO_BLK_S_OK;
      let written = 0;
      try {
        if (type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_OUT) {
          // IN fills the device-writable data segments from the disk; OUT writes the readable ones to it.
          const isIn = type === VIRTIO_BLK_T_IN;
          const data = isIn ? dataOut : dataIn;
          const len = data.reduce((a, g) => a + g.len, 0);
          // §5.2.6.2: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write
          // request if the VIRTIO_BLK_F_RO feature if offered, and MUST NOT write any data."
          if (!isIn && this.readOnly) status = VIRTIO_BLK_S_IOERR;
          else if (len % SECTOR_SIZE !== 0 || sector * BigInt(SECTOR_SIZE) + BigInt(len) > BigInt(image.capacity)) status = VIRTIO_BLK_S_IOERR;
          else {
            let pos = Number(sector) * SECTOR_SIZE;
            for (const g of data) {
              if (isIn) image.read(mem.bytes(g.gpa, g.len), pos);
              else image.write(mem.bytes(g.gpa, g.len), pos);
              pos += g.len;
            }
            if (isIn) {
              written = len;
              this.stats.reads++;
            } else {
              this.stats.writes++;
            }
          }
        } else if (type === VIRTIO_BLK_T_DISCARD || type === VIRTIO_BLK_T_WRITE_ZEROES) {
          status = this.discardOrZero(mem, type, dataIn);
        } else if (type === VIRTIO_BLK_T_FLUSH) {
          image.flush();
          this.stats.flushes++;
        } else if (type === VIRTIO_BLK_T_GET_ID) {
          const id = new Uint8Array(20);
          id.set(new TextEncoder().encode(BLK_ID));
          let off = 0;
          for (const g of dataOut) {
            const n = Math.min(g.len, 20 - off);
            if (n <= 0) break;
            mem.bytes(g.gpa, n).set(id.subarray(off, off + n));
            off += n;
          }
          written = off;
        } else {
          status = VIRTIO_BLK_S_UNSUPP;
        }
      } catch {
        status = VIRTIO_BLK_S_IOERR;
      }
      if (status !== VIRTIO_BLK_S_OK) this.stats.errors++;
      mem.bytes(statusGpa, 1)[0] = status;
      r.push(c, written + 1);
    }
  }

  /**
   * DISCARD and WRITE_ZEROES (§5.2.6): the readable data is an array of
   * virtio_blk_discard_write_zeroes segments, all checked before any is applied.
   * §5.2.6.2: UNSUPP for an unknown flag, and for UNMAP on a discard; IOERR for a
   * range beyond the capacity or the config limits, or on a read-only device.
   * Discard punches holes (the spec lets a device ignore it; reads after a discard
   * are unspecified); write-zeroes punches a hole when UNMAP allows it and writes
   * zeros otherwise, and reads return zeros either way.
   */
  private discardOrZero(mem: DeviceRings['memory'], type: number, dataIn: { gpa: number; len: number }[]): number {
    const isDiscard = type === VIRTIO_BLK_T_DISCARD;
    const raw = new Uint8Array(dataIn.reduce((a, g) => a + g.len, 0));
    let off = 0;
    for (const g of dataIn) {
      raw.set(mem.bytes(g.gpa, g.len), off);
      off += g.len;
    }
    if (raw.length === 0 || raw.length % BLK_DISCARD_SEGMENT_SIZE !== 0) return VIRTIO_BLK_S_IOERR;
    const count = raw.length / BLK_DISCARD_SEGMENT_SIZE;
    const maxSeg = isDiscard ? BLK_MAX_DISCARD_SEG : BLK_MAX_WRITE_ZEROES_SEG;
    const maxSectors = isDiscard ? BLK_MAX_DISCARD_SECTORS : BLK_MAX_WRITE_ZEROES_SECTORS;
    if (count > maxSeg) return VIRTIO_BLK_S_IOERR;
    const dv = new DataView(raw.buffer);
    const capacitySectors = BigInt(this.image.capacity / SECTOR_SIZE);
    for (let i = 0; i < count; i++) {
      const sector = dv.getBigUint64(i * BLK_DISCARD_SEGMENT_SIZE, true);
      const num = dv.getUint32(i * BLK_DISCARD_SEGMENT_SIZE + 8, true);
      const flags = dv.getUint32(i * BLK_DISCARD_SEGMENT_SIZE + 12, true);
      if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VIRTIO_BLK_S_UNSUPP;
      if (isDiscard && flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VIRTIO_BLK_S_UNSUPP;
      if (num > maxSectors || sector + BigInt(num) > capacitySectors) return VIRTIO_BLK_S_IOERR;
    }
    if (this.readOnly) return VIRTIO_BLK_S_IOERR;
    for (let i = 0; i < count; i++) {
      const pos = Number(dv.getBigUint64(i * BLK_DISCARD_SEGMENT_SIZE, true)) * SECTOR_SIZE;
      const len = dv.getUint32(i * BLK_DISCARD_SEGMENT_SIZE + 8, true) * SECTOR_SIZE;
      if (len === 0) continue;
      if (isDiscard) this.image.punchHole(pos, len);
      else this.image.zero(pos, len, (dv.getUint32(i * BLK_DISCARD_SEGMENT_SIZE + 12, true) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0);
    }
    if (isDiscard) this.stats.discards++;
    else this.stats.writeZeroes++;
    return VIRTIO_BLK_S_OK;
  }
}
