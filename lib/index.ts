/**
 * vhost-user-client: a vhost-user front-end for Node.js.
 * See README.md for a tour; names follow the vhost-user specification.
 */
export { VhostUserError, isVhostUserError, type VhostErrorCode, type VhostErrorDetails } from './errors.js';
export { nodeFileSystem, type FileSystem, type FsCallback } from './file-system.js';
export {
  VhostUserClient,
  SUPPORTED_PROTOCOL_FEATURES,
  type VhostUserClientOptions,
  type VhostUserClientEvents,
  type NegotiateOptions,
  type Negotiated,
  type VringAddrOptions,
  type VringBase,
  type InflightArea,
} from './client/vhost-user-client.js';
export type { TraceEvent, TraceHook } from './client/trace.js';
export type { HostNotifier } from './client/backend-channel.js';
export { GuestMemory, type GuestMemoryOptions } from './memory/guest-memory.js';
export { GuestRegion, type GuestRegionOptions, type RegionBacking } from './memory/guest-region.js';
export { EventFd } from './transport/eventfd.js';
export { UnixListener } from './transport/unix-listener.js';
export { UnixStream, type ConnectOptions } from './transport/unix-stream.js';
export type { RecvResult } from './transport/msg-scratch.js';
export { Connection, type VhostUserMessage, type ConnectionEvents } from './transport/connection.js';
export { Mapping, type MapOptions } from './native/mapping.js';
export * from './protocol/index.js';
export * from './virtqueue/split-layout.js';
export * from './launch/index.js';
export { SplitVirtqueue, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY } from './virtqueue/split-queue.js';
export { SplitDeviceQueue, type DeviceChain, type DescSegment } from './virtqueue/device/split-device.js';
export * from './virtqueue/virtqueue.js';
export {
  VhostDevice,
  type VhostDeviceOptions,
  type VhostDeviceEvents,
  type VhostDeviceHooks,
  type FeatureWishes,
  type FeatureRequirement,
  type QueuePlan,
  type DeviceQueue,
  type RingStart,
  type DeviceReconnectReport,
  type DeviceHandOverReport,
  type HandOverSteps,
  type PackedLogAddr,
} from './devices/vhost-device.js';
export {
  VirtioNet,
  RxBurst,
  NetCounter,
  type NetCounters,
  type VirtioNetOptions,
  type VirtioNetEvents,
  type RingKind,
  type ReconnectOptions,
  type ReconnectReport,
  type HandOverReport,
  type NetHandOverOptions,
  type GuestArea,
} from './devices/net/virtio-net.js';
export * from './devices/net/virtio-net-hdr.js';
export { TxOffloads } from './devices/net/tx-offloads.js';
export { decodeNetConfig, NET_CONFIG_SIZE, type NetConfig, type NetStatus } from './devices/net/net-config.js';
export {
  decodeBlkConfig,
  BLK_CONFIG_SIZE,
  SECTOR_SIZE,
  type BlkConfig,
  type BlkGeometry,
  type BlkTopology,
  type BlkDiscard,
  type BlkWriteZeroes,
} from './devices/blk/blk-config.js';
export * from './devices/blk/blk-request.js';
export {
  BlkQueue,
  BLK_RESULT_ABORTED,
  BLK_RESULT_BAD_STATUS,
  BLK_RESULT_TIMEOUT,
  BLK_RESULT_USED_LEN,
  type BlkCompletionMode,
  type BlkInflightPolicy,
  type BlkQueueCounters,
  type BlkQueueOptions,
  type GuestBuffer,
  type BlkArea,
  type BlkQueueAreas,
} from './devices/blk/blk-queue.js';
export { BlkBatch, BlkBatchResults } from './devices/blk/blk-batch.js';
export { VirtioBlk, type VirtioBlkOptions, type VirtioBlkEvents, type BlkReconnectReport } from './devices/blk/virtio-blk.js';
export { GuestHeap } from './memory/guest-heap.js';
export * from './pcap/index.js';
export * from './net/frame-builder.js';
export * from './net/checksum.js';
export * from './net/l4-frame.js';
export { Segmenter } from './net/segment.js';
export { PackedVirtqueue } from './virtqueue/packed-queue.js';
export * from './virtqueue/packed-layout.js';
export { PackedDeviceQueue, type PackedDeviceChain, type PackedDescSegment } from './virtqueue/device/packed-device.js';
export type { GuestMemoryAccess } from './memory/guest-memory-access.js';
export { BackendMemory, type BackendRegion } from './backend/backend-memory.js';
export {
  ReferenceBackend,
  type ReferenceBackendOptions,
  type ReferenceBackendEvents,
  type ViolationInfo,
  type NetStats,
  type BlkStats,
} from './backend/reference-backend.js';
export {
  FAULT_NAMES,
  MESSAGE_FAULTS,
  RING_FAULTS,
  LOG_FAULTS,
  parseFault,
  formatFault,
  FaultPlan,
  type Fault,
  type FaultName,
  type MessageFaultName,
  type RingFaultName,
  type LogFaultName,
} from './backend/faults.js';
export {
  runConformance,
  allChecks,
  Finding,
  Skip,
  RawSession,
  formatJson as formatConformanceJson,
  formatJunit as formatConformanceJunit,
  formatText as formatConformanceText,
  type Check,
  type CheckContext,
  type CheckResult,
  type CheckStatus,
  type ConformanceDevice,
  type ConformanceOptions,
  type ConformanceReport,
  type Outcome,
  type RawHandshake,
  type SpawnedBackend,
} from './conformance/index.js';
export * from './migration/index.js';
export * from './trace/index.js';
