/**
 * The packed layout of the inflight area, step by step (vhost-user.rst,
 * "Inflight I/O tracking", packed virtqueue): the bytes a fresh region holds,
 * what receiving and supplying buffers write, and the reconnection procedure for
 * a back-end that died before, during and after each step, on a real memfd area.
 */
import { expect } from 'chai';
import { VhostUserError } from '../../lib/errors.js';
import { closeFd } from '../../lib/native/libc.js';
import {
  INFLIGHT_DESC_STATE_PACKED as DESC,
  INFLIGHT_PACKED_HEADER as HEADER,
  InflightArea,
  PackedInflightRegion,
  packedRegionSize,
} from '../../lib/backend/inflight-area.js';

const N = 8;
const NEXT = 1;
const WRITE = 2;
const AVAIL = 1 << 7;
const USED = 1 << 15;

describe('inflight area, packed layout', () => {
  let area: InflightArea;
  let r: PackedInflightRegion;
  let dv: DataView;

  beforeEach(() => {
    const a = InflightArea.allocate(1, N, true);
    closeFd(a.fd);
    area = a.area;
    r = area.regions[0] as PackedInflightRegion;
    dv = r.area.dataView(0, packedRegionSize(N));
  });
  afterEach(() => area.close());

  /** Takes a chain of `n` descriptors (addresses 0x1000 * (k + 1) + tag); returns its head entry. */
  function take(n: number, tag: number): number {
    const entry = r.oldFreeHead;
    for (let k = 0; k < n; k++) r.receive(0x1_0000_0000 + 0x1000 * (k + 1) + tag, 16 + k, AVAIL | (k < n - 1 ? NEXT : WRITE), tag, k === 0, k === n - 1);
    return entry;
  }

  function complete(entry: number): void {
    r.beforeUsed(entry);
    r.afterUsed(entry);
  }

  /** A descriptor ring stub: every slot still carries the available flags of `wrap` unless listed as used. */
  function ring(wrap: number, used: number[] = []): (slot: number) => number {
    return (slot) => (used.includes(slot) ? (wrap ? AVAIL | USED : 0) : wrap ? AVAIL : USED);
  }

  function code(f: () => unknown): string | undefined {
    try {
      f();
    } catch (e) {
      return e instanceof VhostUserError ? e.code : `not typed: ${String(e)}`;
    }
    return undefined;
  }

  it('QueueRegionPacked is 32 bytes of header and 32-byte DescStatePacked entries, each region 64-byte aligned', () => {
    expect([HEADER, DESC, packedRegionSize(8), packedRegionSize(256)]).to.deep.equal([32, 32, 320, 8256]);
    expect(Number(dv.getBigUint64(0, true)), 'features').to.equal(0);
    expect(dv.getUint16(8, true), 'version').to.equal(1);
    expect(dv.getUint16(10, true), 'desc_num').to.equal(N);
    expect([dv.getUint16(12, true), dv.getUint16(14, true), dv.getUint16(16, true), dv.getUint16(18, true)], 'free_head, old_free_head, used_idx, old_used_idx').to.deep.equal([0, 0, 0, 0]);
    expect([dv.getUint8(20), dv.getUint8(21)], 'used_wrap_counter, old_used_wrap_counter: a fresh ring').to.deep.equal([1, 1]);
    // Every entry free, linked to the next.
    expect(Array.from({ length: N }, (_, i) => dv.getUint16(HEADER + DESC * i + 2, true))).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('receiving copies each descriptor into the next free entry; the head entry holds inflight, num, last and counter', () => {
    const a = take(3, 0xa);
    const b = take(1, 0xb);
    expect([a, b]).to.deep.equal([0, 3]);
    const e = (i: number) => HEADER + DESC * i;
    expect([dv.getUint8(e(0)), dv.getUint16(e(0) + 6, true), dv.getUint16(e(0) + 4, true), Number(dv.getBigUint64(e(0) + 8, true))], 'A: inflight, num, last, counter').to.deep.equal([1, 3, 2, 0]);
    expect([dv.getUint8(e(3)), dv.getUint16(e(3) + 6, true), dv.getUint16(e(3) + 4, true), Number(dv.getBigUint64(e(3) + 8, true))], 'B').to.deep.equal([1, 1, 3, 1]);
    // id @16, flags @18, len @20, addr @24 of A's second descriptor.
    expect([dv.getUint16(e(1) + 16, true), dv.getUint16(e(1) + 18, true), dv.getUint32(e(1) + 20, true), dv.getBigUint64(e(1) + 24, true)]).to.deep.equal([0xa, AVAIL | NEXT, 17, 0x1_0000_200an]);
    expect([dv.getUint8(e(1)), dv.getUint8(e(2))], 'only head entries are marked').to.deep.equal([0, 0]);
    expect([r.freeHead, r.oldFreeHead]).to.deep.equal([4, 4]);
    expect(r.chainOf(a).map((d) => d.addr)).to.deep.equal([0x1_0000_100a, 0x1_0000_200a, 0x1_0000_300a]);
  });

  it('supplying puts the chain back at the front of the free list, moves used_idx by its num, then clears and commits', () => {
    const a = take(3, 0xa);
    const b = take(1, 0xb);
    complete(b); // out of order: B before A
    expect([r.freeHead, r.usedIdx, r.oldFreeHead, r.oldUsedIdx, r.isInflight(b)]).to.deep.equal([b, 1, b, 1, false]);
    expect(r.nextOf(b), 'B links to the old free head').to.equal(4);
    complete(a);
    expect([r.freeHead, r.usedIdx, r.oldUsedIdx, r.isInflight(a)]).to.deep.equal([a, 4, 4, false]);
    expect(r.nextOf(r.lastOf(a)), "A's last entry links to B").to.equal(b);
    // Past the end of the ring: the used wrap counter flips.
    const c = take(3, 0xc);
    const d = take(2, 0xd);
    complete(c);
    complete(d);
    expect([r.usedIdx, r.usedWrapCounter, r.oldUsedIdx, r.oldUsedWrapCounter]).to.deep.equal([1, 0, 1, 0]);
  });

  it('reconnecting resubmits what is in flight in counter order, and counting resumes past it', () => {
    const a = take(2, 0xa);
    const b = take(1, 0xb);
    const c = take(2, 0xc);
    complete(b);
    const rec = r.recover(0, 1, ring(1));
    expect(rec).to.deep.equal({ entries: [a, c], slots: 4, usedIdx: 1, usedWrap: 1 });
    const d = take(1, 0xd);
    expect(r.counterOf(d)).to.equal(3);
  });

  it('a back-end that died half-way through receiving a chain: rolled back, the chain is taken again from the ring', () => {
    const a = take(2, 0xa);
    r.receive(0x5000, 16, AVAIL | NEXT, 0xe, true, false); // first of two descriptors
    expect(r.freeHead).to.not.equal(r.oldFreeHead);
    const rec = r.recover(0, 1, ring(1));
    expect(rec.entries).to.deep.equal([a]);
    expect(rec.slots).to.equal(2);
    expect(r.freeHead).to.equal(r.oldFreeHead);
  });

  it('a back-end that died supplying a buffer before its flags were written: rolled back, the request is resubmitted', () => {
    const a = take(2, 0xa);
    const b = take(1, 0xb);
    r.beforeUsed(a); // used_idx moved, d.flags not written
    expect([r.usedIdx, r.oldUsedIdx]).to.deep.equal([2, 0]);
    const rec = r.recover(0, 1, ring(1));
    expect(rec).to.deep.equal({ entries: [a, b], slots: 3, usedIdx: 0, usedWrap: 1 });
    expect(r.freeHead).to.equal(3);
  });

  it('a back-end that died after the used flags reached the driver: committed, the request is not resubmitted', () => {
    const a = take(2, 0xa);
    const b = take(1, 0xb);
    r.beforeUsed(a);
    // The used descriptor is in slot old_used_idx (0) of the ring; inflight and old_* were never written.
    const rec = r.recover(0, 1, ring(1, [0]));
    expect(rec).to.deep.equal({ entries: [b], slots: 1, usedIdx: 2, usedWrap: 1 });
    expect([r.isInflight(a), r.freeHead, r.oldFreeHead]).to.deep.equal([false, a, a]);
  });

  it('an uninitialised region (version 0) starts at the ring position it is given', () => {
    new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength).fill(0);
    expect(r.recover(5, 0, ring(0))).to.deep.equal({ entries: [], slots: 0, usedIdx: 5, usedWrap: 0 });
    expect([r.version, r.usedIdx, r.oldUsedIdx, r.usedWrapCounter, r.nextOf(7)]).to.deep.equal([1, 5, 5, 0, 8]);
  });

  describe('a corrupt or hostile area is a violation, never a hang or an out-of-range entry', () => {
    const e = (i: number) => HEADER + DESC * i;
    const cases: [string, () => void][] = [
      ['free list that loops', () => dv.setUint16(e(0) + 2, 0, true)],
      ['used_idx beyond the ring', () => dv.setUint16(16, N, true)],
      ['wrap counter 2', () => dv.setUint8(21, 2)],
      ['free_head beyond desc_num', () => (dv.setUint16(12, N + 1, true), dv.setUint16(14, N + 1, true))],
      [
        'inflight flag 2 on an entry off the free list',
        () => {
          take(1, 1);
          dv.setUint8(e(0), 2);
        },
      ],
      [
        'an in-flight chain of 0 descriptors',
        () => {
          take(1, 1);
          dv.setUint16(e(0) + 6, 0, true);
        },
      ],
      [
        'an in-flight chain whose last disagrees with its links',
        () => {
          take(3, 1);
          dv.setUint16(e(0) + 4, 1, true);
        },
      ],
      [
        'an in-flight chain linking outside the array',
        () => {
          take(2, 1);
          dv.setUint16(e(0) + 2, 200, true);
        },
      ],
    ];
    for (const [what, corrupt] of cases) {
      it(what, () => {
        corrupt();
        expect(code(() => r.recover(0, 1, ring(1)))).to.equal('VHOST_INVALID_PAYLOAD');
      });
    }

    it('receiving with an exhausted free list', () => {
      dv.setUint16(12, N, true);
      expect(code(() => r.receive(0, 1, AVAIL, 0, true, true))).to.equal('VHOST_INVALID_PAYLOAD');
    });
  });
});
