import { expect } from 'chai';
import fc from 'fast-check';
import { GuestHeap } from '../../lib/memory/guest-heap.js';
import { isVhostUserError } from '../../lib/errors.js';

describe('GuestHeap', () => {
  it('allocates aligned, first fit, and -1 when nothing fits', () => {
    const h = new GuestHeap(0x10000, 0x4000);
    const a = h.alloc(100, 4096);
    const b = h.alloc(4096, 4096);
    expect([a, b]).to.deep.equal([0x10000, 0x11000]);
    expect(h.alloc(0x3000, 4096)).to.equal(-1);
    expect(h.alloc(16, 8)).to.equal(0x10000 + 104);
    expect(h.freeBytes).to.equal(0x4000 - 100 - 4096 - 16);
  });

  it('merges freed neighbours back into one extent', () => {
    const h = new GuestHeap(0, 3 * 4096);
    const xs = [h.alloc(4096), h.alloc(4096), h.alloc(4096)];
    expect(h.alloc(1)).to.equal(-1);
    h.free(xs[0]!);
    h.free(xs[2]!);
    expect(h.alloc(8192)).to.equal(-1);
    h.free(xs[1]!);
    expect(h.alloc(3 * 4096)).to.equal(0);
  });

  it('refuses a double free and nonsense sizes with VHOST_INVALID_ARGUMENT', () => {
    const h = new GuestHeap(0, 4096);
    const a = h.alloc(64);
    h.free(a);
    for (const f of [() => h.free(a), () => h.alloc(0), () => h.alloc(8, 3), () => new GuestHeap(0, 0)]) {
      try {
        f();
        expect.fail('accepted');
      } catch (e) {
        expect(isVhostUserError(e, 'VHOST_INVALID_ARGUMENT'), String(e)).to.equal(true);
      }
    }
  });

  it('property: live allocations never overlap, stay inside, and freeing all restores the whole range', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ len: fc.integer({ min: 1, max: 3000 }), align: fc.constantFrom(1, 8, 64, 4096), free: fc.nat() }), { maxLength: 60 }), (ops) => {
        const h = new GuestHeap(4096, 64 * 1024);
        const live: [number, number][] = [];
        for (const o of ops) {
          if (live.length > 0 && o.free % 3 === 0) {
            const [g] = live.splice(o.free % live.length, 1)[0]!;
            h.free(g);
            continue;
          }
          const g = h.alloc(o.len, o.align);
          if (g < 0) continue;
          expect(g % o.align).to.equal(0);
          expect(g >= 4096 && g + o.len <= 4096 + 64 * 1024).to.equal(true);
          for (const [s, l] of live) expect(g + o.len <= s || s + l <= g, 'overlap').to.equal(true);
          live.push([g, o.len]);
        }
        for (const [g] of live) h.free(g);
        expect(h.freeBytes).to.equal(64 * 1024);
        expect(h.alloc(64 * 1024, 4096)).to.equal(4096);
      }),
      { numRuns: 300 },
    );
  });
});
