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
