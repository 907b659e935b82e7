/**
 * What a reference back-end device model sees of a connection, and what the
 * session needs of a device model. Device models never see the session itself.
 */
import type { BackendMemory } from '../backend-memory.js';
import type { Chain, Vring } from '../vring-state.js';

/** The session's rings, as a device model uses them. */
export interface DeviceRings {
  readonly memory: BackendMemory;
  readonly rings: readonly Vring[];
  /** The features of the last SET_FEATURES, null before it (what the device may act on). */
  readonly ackedFeatures: bigint | null;
  /** Started, enabled and with a queue model (built now if it can be). */
  isReady(r: Vring): boolean;
  /** The next available chain, or null when the ring is not ready or empty. */
  pop(r: Vring): Chain | null;
}

export interface DeviceModel {
  /** Device-specific feature bits offered in GET_FEATURES. */
  readonly features: bigint;
  /** Config space (GET_CONFIG). */
  configSpace(): Uint8Array;
  /** Serves a kicked ring. */
  process(s: DeviceRings, r: Vring): void;
  /** Device-specific protocol features offered on top of the common ones (net: RARP, MTU). */
  readonly protocolFeatures?: bigint;
  /** SEND_RARP (net, protocol feature RARP): announce `mac`. */
  sendRarp?(s: DeviceRings, mac: Uint8Array): void;
  /** NET_SET_MTU (net, protocol feature MTU): whether the MTU is acceptable. */
  acceptsMtu?(mtu: number): boolean;
  /** The virtio device ID (virtio 1.2 §5: net 1, blk 2); tags the DEVICE_STATE stream. */
  readonly deviceId?: number;
  /** DEVICE_STATE: the device's internal state, to move to another back-end (with loadState). */
  saveState?(): Uint8Array;
  /** DEVICE_STATE: takes over a state saveState() made elsewhere; throws when it does not fit this device. */
  loadState?(state: Uint8Array): void;
}
