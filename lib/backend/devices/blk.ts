/**
 * The reference back-end's 'blk' device: a file or a memfd served as a
 * virtio-blk disk (IN, OUT, FLUSH and GET_ID requests; 512-byte sectors).
 */
import { BLK_CONFIG_SIZE, SECTOR_SIZE } from '../../devices/blk/blk-config.js';
import { closeSync, fsyncSync, openSync, readSync, writeSync, fstatSync } from 'node:fs';
import { VhostUserError } from '../../errors.js';
import { C, closeFd, libc, syscallError } from '../../native/libc.js';
import { VirtioBlkFeature, bit } from '../../protocol/constants.js';
import type { Vring } from '../vring-state.js';
import type { DeviceModel, DeviceRings } from './device.js';

export interface BlkStats {
  reads: number;
  writes: number;
  flushes: number;
  errors: number;
}

/** Where the disk comes from: `blkImage` (a file) or else a memfd of `blkSize` bytes. */
export interface BlkImageOptions {
  blkImage?: string;
  blkSize?: number;
}

const BLK_T_IN = 0;
const BLK_T_OUT = 1;
const BLK_T_FLUSH = 4;
const BLK_T_GET_ID = 8;
const BLK_S_OK = 0;
const BLK_S_IOERR = 1;
const BLK_S_UNSUPP = 2;
const BLK_ID = 'vhost-user-ref';
const BLK_SEG_MAX = 126;

/** The blk disk: a file or memfd accessed with pread/pwrite. */
export class BlkImage {
  readonly capacity: number;
  private fd: number;
  constructor(fd: number, capacity: number) {
    this.fd = fd;
    this.capacity = capacity;
  }
  static open(options: BlkImageOptions): BlkImage {
    if (options.blkImage !== undefined) {
      let fd: number;
      try {
        fd = openSync(options.blkImage, 'r+');
      } catch (cause) {
        const code = (cause as NodeJS.ErrnoException).code;
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `cannot open blk image ${options.blkImage}: ${code ?? String(cause)}`, { errno: code, cause });
      }
      const size = fstatSync(fd).size;
      if (size < SECTOR_SIZE) {
        closeSync(fd);
        throw new VhostUserError('VHOST_INVALID_ARGUMENT', `blk image ${options.blkImage} is smaller than one ${SECTOR_SIZE}-byte sector`);
      }
      return new BlkImage(fd, size - (size % SECTOR_SIZE));
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
    return new BlkImage(fd, size);
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
  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Serves requests against `image`, which it uses but does not own (the caller closes it). */
export class BlkDevice implements DeviceModel {
  readonly features: bigint;

  constructor(
    private readonly image: BlkImage,
    private readonly queueNum: number,
    private readonly stats: BlkStats,
  ) {
    let f = bit(VirtioBlkFeature.VIRTIO_BLK_F_SEG_MAX) | bit(VirtioBlkFeature.VIRTIO_BLK_F_BLK_SIZE) | bit(VirtioBlkFeature.VIRTIO_BLK_F_FLUSH);
    if (queueNum > 1) f |= bit(VirtioBlkFeature.VIRTIO_BLK_F_MQ);
    this.features = f;
  }

  configSpace(): Uint8Array {
    const c = new Uint8Array(BLK_CONFIG_SIZE);
    const dv = new DataView(c.buffer);
    dv.setBigUint64(0, BigInt(Math.floor(this.image.capacity / SECTOR_SIZE)), true);
    dv.setUint32(12, BLK_SEG_MAX, true);
    dv.setUint32(20, SECTOR_SIZE, true);
    dv.setUint16(34, this.queueNum, true);
    return c;
  }

  process(s: DeviceRings, r: Vring): void {
    const image = this.image;
    const mem = s.memory;
    let done = 0;
    for (let c = s.pop(r); c !== null; c = s.pop(r)) {
      done++;
      const writable = c.segments.filter((g) => g.writable);
      const last = writable[writable.length - 1];
      if (c.readableBytes < 16 || last === undefined) {
        // No header or no status byte: nothing can be reported in the chain.
        this.stats.errors++;
        r.push(c, 0);
        continue;
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
      let status = BLK_S_OK;
      let written = 0;
      try {
        if (type === BLK_T_IN || type === BLK_T_OUT) {
          // IN fills the device-writable data segments from the disk; OUT writes the readable ones to it.
          const isIn = type === BLK_T_IN;
          const data = isIn ? dataOut : dataIn;
          const len = data.reduce((a, g) => a + g.len, 0);
          if (len % SECTOR_SIZE !== 0 || sector * BigInt(SECTOR_SIZE) + BigInt(len) > BigInt(image.capacity)) status = BLK_S_IOERR;
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
        } else if (type === BLK_T_FLUSH) {
          image.flush();
          this.stats.flushes++;
        } else if (type === BLK_T_GET_ID) {
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
          status = BLK_S_UNSUPP;
        }
      } catch {
        status = BLK_S_IOERR;
      }
      if (status !== BLK_S_OK) this.stats.errors++;
      mem.bytes(statusGpa, 1)[0] = status;
      r.push(c, written + 1);
    }
    if (done) r.notify();
  }
}
