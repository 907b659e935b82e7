/** The back-end conformance suite (issue #5): `runConformance`, the checks, the report formats. */
export {
  appliesTo,
  CONFORMANCE_DEVICES,
  Finding,
  matchesOnly,
  Skip,
  type Check,
  type CheckResult,
  type CheckStatus,
  type ConformanceDevice,
} from './check.js';
export { RawSession, type Outcome, type RawHandshake } from './raw-session.js';
export type { CheckContext } from './context.js';
export { allChecks } from './checks/index.js';
export { runConformance, type ConformanceOptions, type ConformanceReport, type SpawnedBackend } from './runner.js';
export { formatJson, formatJunit, formatResultLine, formatSummary, formatText, formatTextFooter, toJsonReport } from './report.js';
