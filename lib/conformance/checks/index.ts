/** Every check, in the order the suite runs them. */
import type { Check } from '../check.js';
import { configChecks } from './config.js';
import { dataChecks } from './data.js';
import { handshakeChecks } from './handshake.js';
import { inflightChecks } from './inflight.js';
import { leakChecks } from './leak.js';
import { logChecks } from './log.js';
import { migrationChecks } from './migration.js';
import { memoryChecks } from './memory.js';
import { negativeChecks } from './negative.js';
import { offloadChecks } from './offload.js';
import { rarpChecks } from './rarp.js';
import { reconnectChecks } from './reconnect.js';
import { replyAckChecks } from './reply-ack.js';
import { resetChecks } from './reset.js';
import { ringChecks } from './rings.js';

/** The built-in checks, in the order the suite runs them (the default of {@link ConformanceOptions.checks}). */
export const allChecks: readonly Check[] = [
  ...handshakeChecks,
  ...replyAckChecks,
  ...ringChecks,
  ...dataChecks,
  ...offloadChecks,
  ...memoryChecks,
  ...configChecks,
  ...inflightChecks,
  ...logChecks,
  ...migrationChecks,
  ...rarpChecks,
  ...resetChecks,
  ...reconnectChecks,
  ...negativeChecks,
  ...leakChecks,
];
