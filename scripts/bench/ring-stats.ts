/**
 * `bench:net --ring-stats`: counts what our TX ring does, for finding out why a
 * full ring costs what it costs. The worker builds its virtqueues through the
 * driver's `createQueue` hook with these subclasses, so the library itself carries
 * no counters on its packet path; runs with --ring-stats are for the counts, not
 * for the rates (every call goes through one more frame).
 *
 * The counts do not depend on how busy the machine is the way rates do: how many
 * used.idx reads found nothing new (and how many of those while the ring was
 * full), how many buffers each reap and each publish carried, and how many kicks.
 */
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import type { Virtqueue, VirtqueueOptions } from '../../lib/virtqueue/virtqueue.js';

/** Sizes 0..MAX_SIZE counted exactly; larger ones in the last bucket. */
const MAX_SIZE = 64;

/** What one ring did over a run. */
export interface RingStats {
  /** reap() calls: each reads used.idx once (split) or the next used descriptor (packed). */
  reaps: number;
  /** Of those, the ones that found nothing new. */
  emptyReaps: number;
  /** Reaps made while no descriptor was free (the ring full). */
  reapsWhileFull: number;
  /** Of those, the ones that found nothing new. */
  emptyReapsWhileFull: number;
  /** Buffers taken back by reaps that found some, on average. */
  meanReap: number;
  /** publish() calls that made at least one buffer visible. */
  publishes: number;
  /** Buffers made visible per such publish, on average. */
  meanPublish: number;
  /** publish() calls after which the device wanted a kick. */
  kicks: number;
  /** Non-zero buckets of reap sizes ("65+" for larger): how many reaps took that many. */
  reapSizes: Record<string, number>;
  /** Likewise for publish sizes. */
  publishSizes: Record<string, number>;
}

class Counter {
  readonly reapHist = new Float64Array(MAX_SIZE + 2);
  readonly publishHist = new Float64Array(MAX_SIZE + 2);
  reaps = 0;
  emptyReaps = 0;
  reapsWhileFull = 0;
  emptyReapsWhileFull = 0;
  publishes = 0;
  kicks = 0;
  added = 0;

  reaped(n: number, full: boolean): void {
    this.reaps++;
    if (full) this.reapsWhileFull++;
    if (n === 0) {
      this.emptyReaps++;
      if (full) this.emptyReapsWhileFull++;
    } else {
      this.reapHist[n > MAX_SIZE ? MAX_SIZE + 1 : n]!++;
    }
  }

  published(kick: boolean): void {
    if (this.added > 0) {
      this.publishes++;
      this.publishHist[this.added > MAX_SIZE ? MAX_SIZE + 1 : this.added]!++;
      this.added = 0;
    }
    if (kick) this.kicks++;
  }

  summary(): RingStats {
    const buckets = (h: Float64Array) => {
      const out: Record<string, number> = {};
      let total = 0;
      let weighted = 0;
      for (let i = 1; i < h.length; i++) {
        if (h[i] === 0) continue;
        out[i > MAX_SIZE ? `${MAX_SIZE + 1}+` : String(i)] = h[i]!;
        total += h[i]!;
        weighted += i * h[i]!;
      }
      return { out, mean: total > 0 ? weighted / total : 0 };
    };
    const r = buckets(this.reapHist);
    const p = buckets(this.publishHist);
    return {
      reaps: this.reaps,
      emptyReaps: this.emptyReaps,
      reapsWhileFull: this.reapsWhileFull,
      emptyReapsWhileFull: this.emptyReapsWhileFull,
      meanReap: r.mean,
      publishes: this.publishes,
      meanPublish: p.mean,
      kicks: this.kicks,
      reapSizes: r.out,
      publishSizes: p.out,
    };
  }
}

class CountingSplit extends SplitVirtqueue {
  readonly counter = new Counter();
  override addBuffer(gpa: number, length: number, writable: boolean, token: number): boolean {
    const ok = super.addBuffer(gpa, length, writable, token);
    if (ok) this.counter.added++;
    return ok;
  }
  override reap(tokens: Uint32Array, lengths: Uint32Array, max: number): number {
    const full = this.freeCount === 0;
    const n = super.reap(tokens, lengths, max);
    this.counter.reaped(n, full);
    return n;
  }
  override publish(): boolean {
    const kick = super.publish();
    this.counter.published(kick);
    return kick;
  }
}

class CountingPacked extends PackedVirtqueue {
  readonly counter = new Counter();
  override addBuffer(gpa: number, length: number, writable: boolean, token: number): boolean {
    const ok = super.addBuffer(gpa, length, writable, token);
    if (ok) this.counter.added++;
    return ok;
  }
  override reap(tokens: Uint32Array, lengths: Uint32Array, max: number): number {
    const full = this.freeCount === 0;
    const n = super.reap(tokens, lengths, max);
    this.counter.reaped(n, full);
    return n;
  }
  override publish(): boolean {
    const kick = super.publish();
    this.counter.published(kick);
    return kick;
  }
}

/** A `createQueue` hook that counts on every ring, and reads the counts of one ring afterwards. */
export function countingQueues(): {
  createQueue: (kind: 'split' | 'packed', options: VirtqueueOptions) => Virtqueue;
  stats: (index: number) => RingStats | null;
} {
  const made = new Map<number, CountingSplit | CountingPacked>();
  return {
    createQueue: (kind, options) => {
      const q = kind === 'packed' ? new CountingPacked(options) : new CountingSplit(options);
      made.set(options.index, q);
      return q;
    },
    stats: (index) => made.get(index)?.counter.summary() ?? null,
  };
}

/** One line for the progress log. */
export function describeRingStats(s: RingStats): string {
  const pct = (a: number, b: number) => (b > 0 ? `${((a / b) * 100).toFixed(0)}%` : '-');
  return (
    `ring: ${s.reaps} reaps (${pct(s.emptyReaps, s.reaps)} empty; ${s.reapsWhileFull} while full, ${pct(s.emptyReapsWhileFull, s.reapsWhileFull)} of them empty), ` +
    `mean reap ${s.meanReap.toFixed(1)}, ${s.publishes} publishes of ${s.meanPublish.toFixed(1)} on average, ${s.kicks} kicks`
  );
}
