/**
 * The retry policy of a reconnect: attempts until one succeeds, with a pause
 * doubling from `initialDelayMs` up to `maxDelayMs`, within `timeoutMs` overall,
 * ended early by a cancel (close()). What an attempt does is the caller's.
 */
import { VhostUserError } from '../errors.js';

/** How hard to try getting a back-end back after it went away. */
export interface ReconnectOptions {
  /** Give up (and emit `disconnect`) when no back-end is back within this time (default 30 000 ms). */
  timeoutMs?: number;
  /** First pause between attempts (default 50 ms), doubled after each failure. */
  initialDelayMs?: number;
  /** Longest pause between attempts (default 1000 ms). */
  maxDelayMs?: number;
}

/** How the retry loop ended. @internal */
export type RetryOutcome = { ok: true; attempts: number } | { ok: false; error: VhostUserError } | { ok: false; cancelled: true };

/** @internal */
export class Backoff {
  private stopWaiting: (() => void) | null = null;
  private cancelled = false;

  /** Ends the current pause and every later attempt. */
  cancel(): void {
    this.cancelled = true;
    this.stopWaiting?.();
  }

  /**
   * Runs `attempt(timeLeftMs)` until it resolves. An attempt that throws is
   * retried after the pause, unless `fatal(error)` says no other attempt can
   * succeed (a corrupted ring) or the time is up; the last error is returned.
   */
  async run(o: ReconnectOptions, attempt: (timeLeftMs: number) => Promise<void>, fatal: (e: VhostUserError) => boolean, first: VhostUserError): Promise<RetryOutcome> {
    const deadline = Date.now() + (o.timeoutMs ?? 30_000);
    let delay = o.initialDelayMs ?? 50;
    let last = first;
    for (let attempts = 1; !this.cancelled; attempts++) {
      try {
        await attempt(Math.max(1, deadline - Date.now()));
        return this.cancelled ? { ok: false, cancelled: true } : { ok: true, attempts };
      } catch (e) {
        last = e instanceof VhostUserError ? e : new VhostUserError('VHOST_INVALID_STATE', String(e), { cause: e });
        if (fatal(last)) return { ok: false, error: last };
      }
      if (this.cancelled || Date.now() + delay >= deadline) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => ((this.stopWaiting = null), resolve()), delay);
        this.stopWaiting = () => (clearTimeout(timer), (this.stopWaiting = null), resolve());
      });
      delay = Math.min(delay * 2, o.maxDelayMs ?? 1000);
    }
    return this.cancelled ? { ok: false, cancelled: true } : { ok: false, error: last };
  }
}
