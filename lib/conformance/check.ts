/**
 * What a conformance check is and what it reports. A check enforces one rule of
 * the vhost-user specification (QEMU docs/interop/vhost-user.rst) or the virtio
 * specification against a live back-end, and ends in one of three ways:
 *
 * - pass: the back-end's replies, fds and ring writes were what the rule asks;
 * - fail: a finding, with the evidence (the messages exchanged);
 * - skip: the rule does not apply (a feature the back-end does not offer).
 *
 * Checks signal fail and skip by throwing `Finding` / `Skip`; any other error a
 * check lets escape (a VhostUserError from the client: a timeout, a NAK, a
 * disconnect) is a finding too, reported with its code.
 */
import type { CheckContext } from './context.js';

/** How a check ended: the rule held, the back-end broke it (a finding), or it does not apply. */
export type CheckStatus = 'pass' | 'fail' | 'skip';

/** The device the back-end serves; 'fs' and 'generic' run the device-independent checks only. */
export type ConformanceDevice = 'net' | 'blk' | 'fs' | 'generic';

/** Every {@link ConformanceDevice}, in the order the CLI lists them. */
export const CONFORMANCE_DEVICES: readonly ConformanceDevice[] = ['net', 'blk', 'fs', 'generic'];

/** One rule checked against a live back-end; pass your own in {@link ConformanceOptions.checks}. */
export interface Check {
  /** Stable id, `area.name`, e.g. `rings.initially-disabled`; what --only matches. */
  readonly id: string;
  /** The spec rule, with section and a short quote. */
  readonly rule: string;
  /** One line saying what the check does. */
  readonly title: string;
  /** Devices the check applies to (default: all). */
  readonly devices?: readonly ConformanceDevice[];
  /** Overrides the runner's per-check deadline (data-plane checks wait for traffic). */
  readonly timeoutMs?: number;
  /** Resolves with a detail line for a pass; throws Finding / Skip otherwise. */
  run(ctx: CheckContext): Promise<string | void>;
}

/** The outcome of one {@link Check}, as the reports print it. */
export interface CheckResult {
  /** {@link Check.id}. */
  id: string;
  /** {@link Check.rule}. */
  rule: string;
  /** {@link Check.title}. */
  title: string;
  /** How the check ended. */
  status: CheckStatus;
  /** Why it failed or was skipped; what was observed when it passed. */
  detail: string;
  /** The messages exchanged (failures only), oldest first. */
  evidence: string[];
  /** Wall-clock milliseconds the check took, cleanup included. */
  ms: number;
  /** A spawned back-end that crashed during the check: the signal (`SIGSEGV`) or `exit N`. */
  crash?: string;
}

/** A rule the back-end broke: throw it from {@link Check.run}; the message is the finding. */
export class Finding extends Error {
  /** Always `'Finding'`. */
  override readonly name = 'Finding';
}

/** The rule does not apply to this back-end: throw it from {@link Check.run}; the message says why. */
export class Skip extends Error {
  /** Always `'Skip'`. */
  override readonly name = 'Skip';
}

/** Ends the running check as failed, with `detail` as the finding. */
export function fail(detail: string): never {
  throw new Finding(detail);
}

/** Ends the running check as skipped: the rule does not apply, for `reason`. */
export function skip(reason: string): never {
  throw new Skip(reason);
}

/** Fails with `detail` unless `condition` holds. */
export function expectThat(condition: boolean, detail: string): asserts condition {
  if (!condition) fail(detail);
}

/** Whether `check` applies to `device`. */
export function appliesTo(check: Check, device: ConformanceDevice): boolean {
  return check.devices === undefined || check.devices.includes(device);
}

/**
 * --only: comma-separated patterns; `*` matches any run of characters, and a
 * pattern without `*` matches ids that start with it (`rings` selects every
 * `rings.*` check).
 */
export function matchesOnly(id: string, only: string | undefined): boolean {
  if (only === undefined || only.trim() === '') return true;
  return only
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .some((p) => {
      if (!p.includes('*')) return id.startsWith(p);
      const re = new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
      return re.test(id);
    });
}
