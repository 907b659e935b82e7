/**
 * How the reference back-end classifies a front-end's mistake: a Violation
 * closes the connection; a Refusal is a well-formed request the back-end will
 * not honour (nack when asked, and carry on). Both are reported to listeners as
 * a ViolationInfo.
 */
import { VhostUserError, type VhostErrorCode } from '../errors.js';

/** A protocol violation by a front-end, as the reference back-end reports it before closing that connection. */
export interface ViolationInfo {
  /** The connection's number (1 for the first front-end served). */
  connection: number;
  /** The error's stable code (e.g. VHOST_INVALID_PAYLOAD). */
  code: VhostErrorCode;
  /** Spec name of the request that broke the rule; undefined when no request was decoded. */
  request: string | undefined;
  /** What was wrong, in words. */
  message: string;
  /** The error itself, with its rule. */
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
