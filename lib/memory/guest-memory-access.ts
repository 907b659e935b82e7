/**
 * What the device-side ring models (SplitDeviceQueue, PackedDeviceQueue) need from
 * guest memory: GPA-addressed views. GuestMemory (the driver's own memory) and
 * BackendMemory (a back-end's mapping of the front-end's fds) both provide it.
 */
export interface GuestMemoryAccess {
  /** Throws VHOST_MEMORY_OUT_OF_RANGE unless [gpa, gpa + length) lies inside one region. */
  regionOf(gpa: number, length?: number): unknown;
  /** Zero-copy view of guest bytes (inside one region). */
  bytes(gpa: number, length: number): Uint8Array;
  /** A DataView on guest bytes (inside one region). */
  dataView(gpa: number, length: number): DataView;
  /** The ArrayBuffer window and offset of a guest range, for typed arrays of any element type. */
  window(gpa: number, length: number): {
    /** The mapping's ArrayBuffer. */
    buffer: ArrayBuffer;
    /** Where the range starts in it. */
    byteOffset: number;
  };
}
