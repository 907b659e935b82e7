export {
  BackendHandle,
  BackendProcess,
  findExecutable,
  isSocket,
  liveBackends,
  makeTempDir,
  MAX_SOCKET_PATH,
  spawnBackend,
  stopAll,
  type ExitStatus,
  type SpawnBackendOptions,
} from './backend-process.js';
export { processGroupMembers, signalGroup } from './process-group.js';
export {
  dpdkRuntimeDir,
  parsePortStats,
  startTestpmd,
  TestpmdBackend,
  type PortStats,
  type TestpmdForwardMode,
  type TestpmdOptions,
} from './dpdk-testpmd.js';
export {
  QemuStorageDaemonBackend,
  startQemuStorageDaemon,
  type QemuStorageDaemonOptions,
} from './qemu-storage-daemon.js';
export {
  ReferenceBackendProcess,
  startReferenceBackend,
  type ReferenceBackendProcessOptions,
} from './reference-backend.js';
export { qemuStorageDaemonVersion, testpmdVersion, virtiofsdVersion } from './versions.js';
export {
  findVirtiofsd,
  startVirtiofsd,
  VIRTIOFSD_PATHS,
  VirtiofsdBackend,
  type VirtiofsdOptions,
} from './virtiofsd.js';
export {
  buildVhostBlk,
  startVhostBlk,
  VhostBlkBackend,
  VHOST_BLK_BLOCK_SIZE,
  VHOST_BLK_CAPACITY,
  VHOST_BLK_SOCKET,
  VHOST_BLK_SOURCES,
  type BuildVhostBlkOptions,
  type VhostBlkOptions,
} from './dpdk-vhost-blk.js';
export {
  OVS_SCHEMA,
  OVS_VSWITCHD_DPDK,
  OvsBackend,
  ovsDpdkInstalled,
  parseOfctlPortStats,
  parseOvsMap,
  readOvsPortStats,
  startOvs,
  type OvsOptions,
  type OvsPort,
  type OvsPortKind,
  type OvsPortOptions,
  type OvsPortStats,
} from './ovs.js';
export {
  buildInitramfs,
  findKernel,
  parseGuestResults,
  QEMU_BINARY,
  qemuAvailable,
  QemuProcess,
  startQemu,
  type MigrationResult,
  type QemuBlkDevice,
  type QemuNetDevice,
  type QemuOptions,
  type VirtioDeviceInfo,
  type VirtqueueStatus,
} from './qemu.js';
export { QmpClient, QmpError, type QmpConnectOptions, type QmpEvent, type QmpTimestamp } from './qmp.js';
