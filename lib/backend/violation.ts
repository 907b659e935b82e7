/**
 * How the reference back-end classifies a front-end's mistake: a Violation
 * closes the connection; a Refusal is a well-formed request the back-end will
 * not honour (nack when asked, and carry on). Both are reported to listeners as
 * a ViolationInfo.
 */
import { VhostUserError, type VhostErrorCode } from '../errors.js';

export interface ViolationInfo {
  connection: number;
  code: VhostErrorCode;
  request: string | undefined;
  message: string;
  error: VhostUserError;
}

/** A violation: the connection is closed. */
export class Violation extends VhostUserError {}
/** A refusal: nack (when asked) and carry on. */
export class Refusal extends VhostUserError {}

export function violation(code: VhostErrorCode, message: string, request?: string, rule?: string): Violation {
  return new Violation(code, message, { request, rule });
}

export function violationInfo(connection: number, e: VhostUserError): ViolationInfo {
  return { connection, code: e.code, request: e.request, message: e.message, error: e };
}
