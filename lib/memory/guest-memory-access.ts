/**
 * What the device-side ring models (SplitDeviceQueue, PackedDeviceQueue) need from
 * guest memory: GPA-addressed views. GuestMemory (the driver's own memory) and
 * BackendMemory (a back-end's mapping of the front-end's fds) both provide it.
 */
export interface GuestMemoryAccess {
  /** Throws VHOST_MEMORY_OUT_OF_RANGE unless [gpa, gpa + length) lies inside one region. */
  regionOf(gpa: number, length?: number): unknown;
  bytes(gpa: number, length: number): Uint8Array;
  dataView(gpa: number, length: number): DataView;
  window(gpa: number, length: number): { buffer: ArrayBuffer; byteOffset: number };
}
