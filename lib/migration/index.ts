/** Live migration of a vhost-user device between two back-ends, verified. */
export { migrate, migrateWorkload, type MigrateOptions, type PrecopyOptions } from './migrate.js';
export { NetWorkload } from './net-workload.js';
export { BlkWorkload } from './blk-workload.js';
export { MigrationVerifier, type PageFinding, type RoundCopy } from './verifier.js';
export { describePage, ringAreas, type AreaWriter, type MemoryArea } from './memory-map.js';
export { summarize, type DeviceStateReport, type MigrationReport, type RoundReport } from './report.js';
export { migrationSvg } from './svg.js';
export { loadDeviceState, saveDeviceState } from './device-state.js';
export type { ExactlyOnceReport, InFlightReport, MigrationWorkload, WorkloadHandOver, WorkloadHandOverSteps, WorkloadMarks } from './workload.js';
