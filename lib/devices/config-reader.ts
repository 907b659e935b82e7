/**
 * Little-endian reads from a device config space that may be shorter than the
 * struct: a field that does not fit is null rather than an exception, because a
 * back-end may legitimately answer GET_CONFIG with fewer bytes than asked for
 * (the config struct grew across virtio versions).
 *
 * Fields are little-endian: vhost-user back-ends are VERSION_1 devices, and for a
 * legacy device "guest native" is little-endian on every host this library runs on.
 */
import { hasBit } from '../protocol/constants.js';

/** @internal */
export class ConfigReader {
  private readonly view: DataView;

  constructor(
    bytes: Uint8Array,
    private readonly features: bigint,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Whether `size` bytes at `offset` are present. */
  has(offset: number, size: number): boolean {
    return offset + size <= this.view.byteLength;
  }

  u8(offset: number): number | null {
    return this.has(offset, 1) ? this.view.getUint8(offset) : null;
  }

  u16(offset: number): number | null {
    return this.has(offset, 2) ? this.view.getUint16(offset, true) : null;
  }

  u32(offset: number): number | null {
    return this.has(offset, 4) ? this.view.getUint32(offset, true) : null;
  }

  u64(offset: number): bigint | null {
    return this.has(offset, 8) ? this.view.getBigUint64(offset, true) : null;
  }

  bytes(offset: number, size: number): Uint8Array | null {
    return this.has(offset, size) ? new Uint8Array(this.view.buffer, this.view.byteOffset + offset, size) : null;
  }

  /**
   * `read()` when any of the feature `bits` is set and bytes `[offset, end)` are
   * present, else null: a config field "only exists if" its feature is set (virtio 1.3).
   */
  when<T>(bits: number | readonly number[], end: number, read: () => T): T | null {
    const any = (typeof bits === 'number' ? [bits] : bits).some((b) => hasBit(this.features, b));
    return any && this.has(0, end) ? read() : null;
  }
}
