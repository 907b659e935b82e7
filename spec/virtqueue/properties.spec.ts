/**
 * Property tests for the driver side of both ring layouts against a device that
 * writes anything at all into the memory it may write: whatever the used ring
 * holds, reap() either returns completions the driver can believe (tokens that
 * were published and outstanding, each once, with len within the buffer's
 * writable bytes) or throws a VHOST_RING_* VhostUserError and stays broken.
 *
 * fast-check prints the seed and the shrunk counterexample on failure; replay
 * one with `fc.assert(prop, { seed, path })`.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { VhostUserError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from '../../lib/virtqueue/packed-layout.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, type Virtqueue } from '../../lib/virtqueue/virtqueue.js';

const RUNS = Number(process.env.PROP_RUNS ?? 200);
const RING_GPA = 0x1000;
const DATA_GPA = 0x80000;
const MAX_REAP_CALLS = 64;

// ------------------------------------------------------------------ generators

const segment = fc.record({
  len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 65536 })),
  writable: fc.boolean(),
});
/** One chain: 1..3 segments; readable ones are moved before writable ones when added. */
const chain = fc.array(segment, { minLength: 1, maxLength: 3 });

/** What the device writes, as raw numbers mapped onto the ring state in the test body. */
const splitMutation = fc.oneof(
  // Every byte of the used ring, flags, idx and avail_event included.
  fc.record({ kind: fc.constant('raw' as const), seed: fc.uint8Array({ minLength: 8, maxLength: 8 + 8 * 64 + 2 }) }),
  // A used.idx near the driver's position and entries with plausible ids and lens.
  fc.record({
    kind: fc.constant('near' as const),
    advance: fc.integer({ min: -2, max: 12 }),
    entries: fc.array(
      fc.record({
        slot: fc.nat(),
        id: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0xffffffff })),
        len: fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 0xffffffff })),
      }),
      { maxLength: 12 },
    ),
  }),
);

const usedFlags = fc.oneof(
  fc.constantFrom(
    VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED,
    0,
    VIRTQ_DESC_F_AVAIL,
    VIRTQ_DESC_F_USED,
    VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_NEXT,
  ),
  fc.integer({ min: 0, max: 0xffff }),
);

const packedMutation = fc.oneof(
  // Random bytes over the whole descriptor ring.
  fc.record({ kind: fc.constant('raw' as const), seed: fc.uint8Array({ minLength: 16, maxLength: 16 * 40 }) }),
  // Random descriptors with random flags/id/len at random slots.
  fc.record({
    kind: fc.constant('descs' as const),
    descs: fc.array(
      fc.record({
        slot: fc.nat(),
        id: fc.oneof(fc.integer({ min: 0, max: 41 }), fc.integer({ min: 0, max: 0xffff })),
        flags: usedFlags,
        len: fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 0xffffffff })),
      }),
      { maxLength: 12 },
    ),
  }),
);

function rounds<M>(mutation: fc.Arbitrary<M>) {
  return fc.array(
    fc.record({
      add: fc.array(chain, { maxLength: 12 }),
      publish: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      mutate: fc.option(mutation, { freq: 5 }),
      reaps: fc.array(fc.integer({ min: 1, max: 70 }), { minLength: 1, maxLength: 4 }),
    }),
    { minLength: 1, maxLength: 6 },
  );
}

// ------------------------------------------------------------------ the driver-side oracle

interface Model {
  /** Token -> writable bytes, for chains made available and published. */
  published: Map<number, number>;
  /** Added but not yet published: the device cannot have seen them. */
  unpublished: Map<number, number>;
  added: number;
  completed: number;
  nextToken: number;
}

function addChains(q: Virtqueue, m: Model, chains: { len: number; writable: boolean }[][]): void {
  for (const c of chains) {
    const ordered = [...c.filter((s) => !s.writable), ...c.filter((s) => s.writable)];
    const readable = c.length - c.filter((s) => s.writable).length;
    const gpas = ordered.map((_, i) => DATA_GPA + i * 0x10000);
    const lengths = ordered.map((s) => s.len);
    // Packed rings reject (VHOST_INVALID_ARGUMENT) a direct chain longer than the ring.
    if (ordered.length > q.size) continue;
    const token = m.nextToken++;
    if (!q.addChain(gpas, lengths, ordered.length, readable, token)) continue;
    m.unpublished.set(token, ordered.filter((s) => s.writable).reduce((n, s) => n + s.len, 0));
    m.added++;
  }
}

function isRingError(e: unknown): e is VhostUserError {
  return e instanceof VhostUserError && e.code.startsWith('VHOST_RING_');
}

/**
 * Drives one queue through `plan`; `mutate` writes the device's bytes.
 * Returns whether the queue broke (for the coverage guard).
 */
function drive<M>(
  q: Virtqueue,
  plan: { add: { len: number; writable: boolean }[][]; publish: boolean; mutate: M | null; reaps: number[] }[],
  mutate: (mutation: M, m: Model) => void,
): { broke: boolean; completions: number } {
  const m: Model = { published: new Map(), unpublished: new Map(), added: 0, completed: 0, nextToken: 1 };
  const tokens = new Uint32Array(128);
  const lengths = new Uint32Array(128);
  let calls = 0;
  for (const round of plan) {
    addChains(q, m, round.add);
    if (round.publish) {
      q.publish();
      for (const [t, w] of m.unpublished) m.published.set(t, w);
      m.unpublished.clear();
    }
    if (round.mutate !== null) mutate(round.mutate, m);
    for (const max of round.reaps) {
      if (++calls > MAX_REAP_CALLS) break;
      let n: number;
      try {
        n = q.reap(tokens, lengths, max);
      } catch (e) {
        if (!isRingError(e)) throw new Error(`reap threw ${String(e)}, not a VHOST_RING_* VhostUserError`, { cause: e });
        expect(q.error, 'a failed reap breaks the queue').to.not.equal(null);
        // Broken for good: the next call says so, with a VHOST_RING_* code too.
        try {
          q.reap(tokens, lengths, 1);
          expect.fail('reap on a broken queue returned');
        } catch (again) {
          expect((again as VhostUserError).code).to.equal('VHOST_RING_BROKEN');
        }
        return { broke: true, completions: m.completed };
      }
      expect(n).to.be.a('number');
      expect(Number.isInteger(n) && n >= 0 && n <= max, `reap returned ${n} for max ${max}`).to.equal(true);
      for (let i = 0; i < n; i++) {
        const t = tokens[i]!;
        if (m.unpublished.has(t)) {
          throw new Error(`reap returned token ${t}, which was added but never published: the device cannot have been given it`);
        }
        const writable = m.published.get(t);
        expect(writable, `reap returned token ${t}, which is not outstanding`).to.not.equal(undefined);
        expect(lengths[i], `len of token ${t}`).to.be.at.most(writable!);
        m.published.delete(t);
      }
      m.completed += n;
      expect(m.completed, 'completions never exceed what was added').to.be.at.most(m.added);
      expect(q.outstanding).to.equal(m.added - m.completed);
    }
  }
  return { broke: false, completions: m.completed };
}

// ------------------------------------------------------------------ specs

describe('virtqueue properties (fast-check): a device writing anything', () => {
  let memory: GuestMemory;
  before(() => {
    memory = GuestMemory.create({ size: 1 << 20 });
  });
  after(() => memory.close());

  it(`split: reap() returns believable completions or throws VHOST_RING_* (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 4, 8, 16, 32),
        fc.constantFrom(0, 0, 4),
        fc.boolean(),
        rounds(splitMutation),
        (size, indirectMax, eventIdx, plan) => {
          const q = new SplitVirtqueue({ memory, index: 0, size, ringGpa: RING_GPA, eventIdx, indirectMax });
          const usedGpa = q.layout.used;
          const usedBytes = q.layout.end - q.layout.used;
          const w = memory.window(usedGpa, usedBytes);
          const bytes = new Uint8Array(w.buffer, w.byteOffset, usedBytes);
          const dv = new DataView(w.buffer, w.byteOffset, usedBytes);
          drive(q, plan, (mut, m) => {
            if (mut.kind === 'raw') {
              for (let i = 0; i < usedBytes; i++) bytes[i] = mut.seed[i % mut.seed.length]!;
              return;
            }
            // The driver's used position is what it has reaped so far (mod 2^16).
            const base = m.completed & 0xffff;
            for (const e of mut.entries) {
              const slot = (base + (e.slot % 16)) & (size - 1);
              dv.setUint32(4 + 8 * slot, e.id >>> 0, true);
              dv.setUint32(8 + 8 * slot, e.len >>> 0, true);
            }
            dv.setUint16(2, (base + mut.advance) & 0xffff, true);
          });
        },
      ),
      { numRuns: RUNS },
    );
    // Coverage (not asserted: it varies with the seed): runs that broke the queue, completions accepted.
  });

  it(`packed: reap() returns believable completions or throws VHOST_RING_* (${RUNS} runs)`, () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom(0, 0, 4),
        fc.boolean(),
        rounds(packedMutation),
        (size, indirectMax, eventIdx, plan) => {
          const q = new PackedVirtqueue({ memory, index: 0, size, ringGpa: RING_GPA, eventIdx, indirectMax });
          const ringBytes = 16 * size;
          const w = memory.window(q.layout.desc, ringBytes);
          const bytes = new Uint8Array(w.buffer, w.byteOffset, ringBytes);
          const dv = new DataView(w.buffer, w.byteOffset, ringBytes);
          drive(q, plan, (mut) => {
            if (mut.kind === 'raw') {
              for (let i = 0; i < ringBytes; i++) bytes[i] = mut.seed[i % mut.seed.length]!;
              return;
            }
            for (const d of mut.descs) {
              const at = 16 * (d.slot % size);
              dv.setUint32(at + 8, d.len >>> 0, true);
              dv.setUint16(at + 12, d.id, true);
              dv.setUint16(at + 14, d.flags, true);
            }
          });
        },
      ),
      { numRuns: RUNS },
    );
  });
});
