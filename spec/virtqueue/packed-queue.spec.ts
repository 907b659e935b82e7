import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { PackedDeviceQueue } from '../../lib/virtqueue/device/packed-device.js';
import {
  packedRingLayout,
  type PackedRingLayout,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from '../../lib/virtqueue/packed-layout.js';
import { PackedVirtqueue } from '../../lib/virtqueue/packed-queue.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../lib/virtqueue/virtqueue.js';

const RING_GPA = 0x1000;
const DATA_GPA = 0x80000;
const AVAIL = VIRTQ_DESC_F_AVAIL;
const USED = VIRTQ_DESC_F_USED;

function setup(size: number, opts: { eventIdx?: boolean; indirectMax?: number } = {}) {
  const memory = GuestMemory.create({ size: 1 << 20 });
  const eventIdx = opts.eventIdx ?? false;
  const queue = new PackedVirtqueue({ memory, index: 0, size, ringGpa: RING_GPA, eventIdx, indirectMax: opts.indirectMax ?? 0 });
  const device = new PackedDeviceQueue(memory, queue.layout, { eventIdx });
  return { memory, queue, device };
}

function expectThrowCode(fn: () => unknown, code: string): Error {
  try {
    fn();
  } catch (e) {
    expect((e as { code?: string }).code, String(e)).to.equal(code);
    return e as Error;
  }
  expect.fail(`expected ${code}`);
}

/** Raw descriptor access, as the device sees the ring. */
function ring(memory: GuestMemory, layout: PackedRingLayout) {
  const dv = memory.dataView(layout.desc, layout.size * 16);
  return {
    flags: (slot: number) => dv.getUint16(slot * 16 + 14, true),
    id: (slot: number) => dv.getUint16(slot * 16 + 12, true),
    len: (slot: number) => dv.getUint32(slot * 16 + 8, true),
    addr: (slot: number) => Number(dv.getBigUint64(slot * 16, true)),
    write(slot: number, gpa: number, len: number, id: number, flags: number) {
      dv.setBigUint64(slot * 16, BigInt(gpa), true);
      dv.setUint32(slot * 16 + 8, len, true);
      dv.setUint16(slot * 16 + 12, id, true);
      dv.setUint16(slot * 16 + 14, flags, true);
    },
    driverEvent: () => memory.dataView(layout.driver, 4).getUint32(0, true),
  };
}

describe('packed ring layout', () => {
  it('places a 16-aligned descriptor ring and 4-aligned event areas back to back, for any size up to 2^15', () => {
    expect(packedRingLayout(0x1000, 100)).to.deep.equal({ size: 100, desc: 0x1000, driver: 0x1000 + 1600, device: 0x1000 + 1604, end: 0x1000 + 1608 });
    expect(packedRingLayout(0, 32768).end).to.equal(32768 * 16 + 8);
    for (const bad of [0, 32769, 1.5, -1, NaN]) expectThrowCode(() => packedRingLayout(0, bad), 'VHOST_INVALID_ARGUMENT');
    expectThrowCode(() => packedRingLayout(8, 16), 'VHOST_INVALID_ARGUMENT');
    expect(PackedVirtqueue.footprint(100)).to.equal(1616);
    expect(PackedVirtqueue.footprint(100, 4)).to.equal(1616 + 100 * 4 * 16);
  });
});

describe('PackedVirtqueue with a device model over shared guest memory', () => {
  let env: ReturnType<typeof setup> | null = null;
  afterEach(() => {
    env?.memory.close();
    env = null;
  });

  it('starts zeroed, polling, with both wrap counters at 1', () => {
    const memory = GuestMemory.create({ size: 1 << 20 });
    memory.bytes(RING_GPA, 8 * 16 + 8).fill(0xa5);
    const queue = new PackedVirtqueue({ memory, index: 3, size: 8, ringGpa: RING_GPA, eventIdx: false });
    env = { memory, queue, device: new PackedDeviceQueue(memory, queue.layout, { eventIdx: false }) };
    expect(Array.from(memory.bytes(RING_GPA, 8 * 16)).every((b) => b === 0)).to.equal(true);
    expect(ring(memory, queue.layout).driverEvent()).to.equal(RING_EVENT_FLAGS_DISABLE << 16);
    expect(queue.vringBase).to.equal(0x80008000);
    expect(queue.addresses).to.deep.equal({ desc: RING_GPA, driver: RING_GPA + 128, device: RING_GPA + 132 });
    expect([queue.packed, queue.size, queue.index, queue.freeCount, queue.outstanding, queue.hasUsed()]).to.deep.equal([true, 8, 3, 8, 0, false]);
  });

  it('carries bytes both ways, and nothing is visible before publish()', () => {
    env = setup(8);
    const { memory, queue, device } = env;
    const r = ring(memory, queue.layout);
    memory.write(DATA_GPA, Buffer.from('to the device'));
    expect(queue.addBuffer(DATA_GPA, 13, false, 111)).to.equal(true);
    expect(queue.addBuffer(DATA_GPA + 4096, 64, true, 222)).to.equal(true);
    // The batch head keeps its zero flags; the second descriptor is complete but hidden behind it.
    expect(r.flags(0)).to.equal(0);
    expect(r.flags(1)).to.equal(AVAIL | VIRTQ_DESC_F_WRITE);
    expect(device.pop()).to.equal(null, 'nothing is visible before publish()');
    expect(queue.publish()).to.equal(true);
    expect([r.addr(0), r.len(0), r.flags(0)]).to.deep.equal([DATA_GPA, 13, AVAIL]);
    const tx = device.pop()!;
    expect(tx.segments).to.deep.equal([{ gpa: DATA_GPA, len: 13, writable: false }]);
    expect(Buffer.from(memory.read(tx.segments[0]!.gpa, 13)).toString()).to.equal('to the device');
    const rx = device.pop()!;
    expect(device.pop()).to.equal(null);
    memory.write(rx.segments[0]!.gpa, Buffer.from('from the device'));
    device.push(tx.id, tx.descCount, 0);
    device.push(rx.id, rx.descCount, 15);
    expect(r.flags(0) & (AVAIL | USED)).to.equal(AVAIL | USED);
    const tokens = new Uint32Array(8);
    const lens = new Uint32Array(8);
    expect(queue.reap(tokens, lens, 8)).to.equal(2);
    expect([tokens[0], lens[0], tokens[1], lens[1]]).to.deep.equal([111, 0, 222, 15]);
    expect(Buffer.from(memory.read(DATA_GPA + 4096, lens[1]!)).toString()).to.equal('from the device');
    expect([queue.outstanding, queue.freeCount, queue.hasUsed()]).to.deep.equal([0, 8, false]);
  });

  for (const indirectMax of [0, 4]) {
    it(`passes chains readable-then-writable ${indirectMax ? 'through indirect tables' : 'in consecutive slots'}, also across the ring end`, () => {
      env = setup(8, { indirectMax });
      const { queue, device } = env;
      const t = new Uint32Array(8);
      const l = new Uint32Array(8);
      // Move to slot 6 so the chain crosses the end of the ring (and the wrap counter flips mid-chain).
      for (let i = 0; i < 6; i++) queue.addBuffer(DATA_GPA, 1, false, i);
      queue.publish();
      for (let c = device.pop(); c; c = device.pop()) device.push(c.id, c.descCount, 0);
      expect(queue.reap(t, l, 8)).to.equal(6);
      const gpas = [DATA_GPA, DATA_GPA + 100, DATA_GPA + 200, DATA_GPA + 300];
      const lengths = [10, 20, 30, 40];
      expect(queue.addChain(gpas, lengths, 4, 2, 7)).to.equal(true);
      expect(queue.freeCount).to.equal(indirectMax ? 7 : 4);
      queue.publish();
      const chain = device.pop()!;
      expect(chain.segments.map((s) => [s.gpa, s.len, s.writable])).to.deep.equal([
        [DATA_GPA, 10, false],
        [DATA_GPA + 100, 20, false],
        [DATA_GPA + 200, 30, true],
        [DATA_GPA + 300, 40, true],
      ]);
      expect([chain.descCount, chain.indirect, chain.readableBytes, chain.writableBytes]).to.deep.equal([indirectMax ? 1 : 4, indirectMax > 0, 30, 70]);
      device.push(chain.id, chain.descCount, 70);
      expect(queue.reap(t, l, 8)).to.equal(1);
      expect([t[0], l[0], queue.freeCount]).to.deep.equal([7, 70, 8]);
      expect(queue.vringBase).to.equal(indirectMax ? 0x80078007 : 0x00020002);
      expect(device.base).to.equal(queue.vringBase);
    });
  }

  it('falls back to a direct chain when the list is longer than indirectMax, and refuses lists that can never fit', () => {
    env = setup(8, { indirectMax: 2 });
    const { queue, device } = env;
    expect(queue.addChain([DATA_GPA, DATA_GPA, DATA_GPA], [1, 2, 3], 3, 3, 1)).to.equal(true);
    expect(queue.freeCount).to.equal(5);
    queue.publish();
    const c = device.pop()!;
    expect([c.descCount, c.indirect, c.readableBytes]).to.deep.equal([3, false, 6]);
    const nine = new Array<number>(9).fill(DATA_GPA);
    expectThrowCode(() => queue.addChain(nine, nine.map(() => 1), 9, 9, 2), 'VHOST_INVALID_ARGUMENT');
    expect(queue.addChain(nine, nine, 5, 5, 2)).to.equal(true);
    expect(queue.addBuffer(DATA_GPA, 1, false, 3)).to.equal(false, 'ring full');
    expect(queue.addChain(nine, nine, 2, 2, 3)).to.equal(false, 'no slot for the indirect descriptor either');
  });

  it('validates its arguments without breaking the queue', () => {
    env = setup(8);
    const { queue } = env;
    const cases: [string, () => unknown][] = [
      ['negative gpa', () => queue.addBuffer(-1, 1, false, 0)],
      ['fractional gpa', () => queue.addBuffer(0.5, 1, false, 0)],
      ['length above u32', () => queue.addBuffer(DATA_GPA, 2 ** 32, false, 0)],
      ['token above u32', () => queue.addBuffer(DATA_GPA, 1, false, 2 ** 32)],
      ['count 0', () => queue.addChain([DATA_GPA], [1], 0, 0, 0)],
      ['readable > count', () => queue.addChain([DATA_GPA, DATA_GPA], [1, 1], 2, 3, 0)],
      ['count > arrays', () => queue.addChain([DATA_GPA], [1], 2, 0, 0)],
      ['total of 2^32 bytes', () => queue.addChain([DATA_GPA, DATA_GPA], [0xffffffff, 1], 2, 0, 0)],
    ];
    for (const [, fn] of cases) expectThrowCode(fn, 'VHOST_INVALID_ARGUMENT');
    expect([queue.error, queue.outstanding, queue.freeCount]).to.deep.equal([null, 0, 8]);
    expect(queue.addBuffer(2 ** 40 + 4096, 1, false, 0)).to.equal(true);
    expect(ring(env.memory, queue.layout).addr(0)).to.equal(2 ** 40 + 4096);
  });

  it('skips each completed list by its own descriptor count when the device completes out of order', () => {
    env = setup(8);
    const { queue, device } = env;
    const r = ring(env.memory, queue.layout);
    queue.addChain([DATA_GPA, DATA_GPA, DATA_GPA], [8, 8, 8], 3, 1, 100); // slots 0-2
    queue.addBuffer(DATA_GPA, 8, true, 200); // slot 3
    queue.addChain([DATA_GPA, DATA_GPA], [8, 8], 2, 0, 300); // slots 4-5
    queue.publish();
    const [a, b, c] = [device.pop()!, device.pop()!, device.pop()!];
    device.push(b.id, b.descCount, 5); // used descriptor at slot 0, next at 1
    device.push(c.id, c.descCount, 6); // at slot 1, next at 3
    device.push(a.id, a.descCount, 7); // at slot 3, next at 6
    expect([r.id(0), r.id(1), r.id(3)]).to.deep.equal([b.id, c.id, a.id]);
    const t = new Uint32Array(4);
    const l = new Uint32Array(4);
    expect(queue.reap(t, l, 2)).to.equal(2);
    expect(queue.reap(t.subarray(2), l.subarray(2), 2)).to.equal(1);
    expect(Array.from(t.subarray(0, 3))).to.deep.equal([200, 300, 100]);
    expect(Array.from(l.subarray(0, 3))).to.deep.equal([5, 6, 7]);
    expect(queue.vringBase).to.equal(0x80068006);
    expect(device.base).to.equal(queue.vringBase);
  });

  // One wrap-around workload: random singles and lists (direct and indirect), published in
  // batches, consumed partly, completed out of order with random lengths, reaped in bursts.
  function stress(size: number, operations: number, eventIdx: boolean) {
    env = setup(size, { eventIdx, indirectMax: 3 });
    const { queue, device } = env;
    let seed = size * 7919 + (eventIdx ? 1 : 0);
    const rand = (n: number) => {
      // 32-bit LCG (Math.imul: a plain product loses its low bits past 2^53); its high bits are the random ones.
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return (seed >>> 12) % n;
    };
    const tokens = new Uint32Array(size);
    const lens = new Uint32Array(size);
    const gpas = [0, 0, 0, 0, 0];
    const lengths = [0, 0, 0, 0, 0];
    // Expected per token: its writable bytes, then what the device wrote. The first segment's gpa names the token.
    const writableOf = new Map<number, number>();
    const written = new Map<number, number>();
    const popped: { id: number; descCount: number; token: number; writable: number }[] = [];
    let token = 0;
    let reaped = 0;
    let deviceIdle = true;
    let laps = 0;
    let lastBase = queue.vringBase;
    for (let rounds = 0; reaped < operations; rounds++) {
      if (rounds > operations * 10) expect.fail('the workload makes no progress');
      let added = 0;
      for (let k = rand(6); k > 0; k--) {
        const count = rand(size < 5 ? size : 5) + 1;
        const readable = rand(count + 1);
        let writable = 0;
        for (let i = 0; i < count; i++) {
          gpas[i] = DATA_GPA + (i === 0 ? (token % 4096) * 64 : rand(1000));
          lengths[i] = rand(64) + 1;
          if (i >= readable) writable += lengths[i]!;
        }
        if (!queue.addChain(gpas, lengths, count, readable, token)) break;
        writableOf.set(token, writable);
        token = (token + 1) >>> 0;
        added++;
      }
      const kick = queue.publish();
      // No lost kick: a device that emptied the ring asked (by flags or by event) to hear about the next one.
      if (added > 0 && deviceIdle && !kick) expect.fail(`lost kick after ${reaped} completions`);
      if (added === 0 && kick) expect.fail('kick with nothing published');
      deviceIdle = false;
      for (let k = rand(8); ; k--) {
        if (k === 0) break;
        const c = device.pop();
        if (c === null) {
          deviceIdle = true;
          break;
        }
        const t = (c.segments[0]!.gpa - DATA_GPA) / 64;
        popped.push({ id: c.id, descCount: c.descCount, token: t, writable: c.writableBytes });
      }
      for (let k = rand(popped.length + 1); k > 0; k--) {
        const [p] = popped.splice(rand(popped.length), 1);
        const n = rand(p!.writable + 1);
        written.set(p!.token, n);
        device.push(p!.id, p!.descCount, n);
      }
      const n = queue.reap(tokens, lens, rand(size) + 1);
      for (let i = 0; i < n; i++) {
        const t = tokens[i]!;
        // Plain checks: chai per completion would dominate the run time.
        if (written.get(t % 4096) !== lens[i] || !(lens[i]! <= writableOf.get(t)!)) {
          expect.fail(`token ${t}: len ${lens[i]}, device wrote ${written.get(t % 4096)} of ${writableOf.get(t)} writable`);
        }
        writableOf.delete(t);
        written.delete(t % 4096);
      }
      reaped += n;
      const base = queue.vringBase;
      if ((base & 0x8000) !== (lastBase & 0x8000)) laps++;
      lastBase = base;
    }
    // Drain, then both sides agree on positions and wrap counters.
    queue.publish();
    for (let c = device.pop(); c; c = device.pop()) popped.push({ id: c.id, descCount: c.descCount, token: 0, writable: 0 });
    for (const p of popped.splice(0)) device.push(p.id, p.descCount, 0);
    while (queue.outstanding > 0) expect(queue.reap(tokens, lens, size)).to.be.above(0);
    expect(queue.freeCount).to.equal(size);
    expect(device.base).to.equal(queue.vringBase);
    expect(laps, 'the avail wrap counter flipped many times').to.be.above(operations / size / 4);
  }

  for (const size of [8, 256, 100, 1]) {
    it(`keeps tokens and lengths straight across 100,000 completions and many wraps (size ${size}, flags)`, () => {
      stress(size, 100_000, false);
    });
  }
  for (const size of [8, 100]) {
    it(`never loses a kick with event index across 100,000 completions (size ${size})`, () => {
      stress(size, 100_000, true);
    });
  }

  it('asks for a kick only when the device has not suppressed it (flags)', () => {
    env = setup(8);
    const { queue, device } = env;
    queue.addBuffer(DATA_GPA, 1, false, 0);
    expect(queue.publish()).to.equal(true);
    device.setNoNotify(true);
    queue.addBuffer(DATA_GPA, 1, false, 1);
    expect(queue.publish()).to.equal(false);
    device.setNoNotify(false);
    expect(queue.publish()).to.equal(false, 'nothing new: no kick');
    queue.addBuffer(DATA_GPA, 1, false, 2);
    expect(queue.publish()).to.equal(true);
  });

  it('asks for a kick exactly when a publish makes the event descriptor available (event index), across wraps', () => {
    for (const size of [8, 100]) {
      const e = setup(size, { eventIdx: true });
      try {
        const { queue, device } = e;
        const t = new Uint32Array(size);
        const l = new Uint32Array(size);
        let slot = 0;
        let wrap = 1;
        let seed = 99;
        const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff) >>> 12) % n;
        for (let round = 0; round < 400; round++) {
          const k = rand(Math.min(size, 5)) + 1;
          // The device asks for the descriptor d positions ahead of the driver: inside this batch iff d < k.
          const d = rand(k + 3);
          let evSlot = slot + d;
          let evWrap = wrap;
          if (evSlot >= size) {
            evSlot -= size;
            evWrap ^= 1;
          }
          for (let i = 0; i < k; i++) queue.addBuffer(DATA_GPA, 1, false, i);
          device.setAvailEvent(evSlot, evWrap === 1);
          expect(queue.publish(), `size ${size} round ${round}: batch of ${k}, event +${d}`).to.equal(d < k);
          slot += k;
          if (slot >= size) {
            slot -= size;
            wrap ^= 1;
          }
          for (let c = device.pop(); c; c = device.pop()) device.push(c.id, c.descCount, 0);
          expect(queue.reap(t, l, size)).to.equal(k);
        }
        expect(queue.vringBase & 0xffff).to.equal(slot | (wrap << 15));
      } finally {
        e.memory.close();
      }
    }
  });

  it('kicks for DESC without event index and for a nonsense offset: a spurious kick is harmless, a lost one hangs', () => {
    env = setup(8);
    const { queue, device } = env;
    device.setAvailEvent(5, true);
    queue.addBuffer(DATA_GPA, 1, false, 0);
    expect(queue.publish()).to.equal(true);
    env.memory.close();
    env = setup(8, { eventIdx: true });
    env.device.setAvailEvent(0x7000, true);
    env.queue.addBuffer(DATA_GPA, 1, false, 0);
    expect(env.queue.publish()).to.equal(true);
  });

  it('interrupts: the device calls only when asked, and enableInterrupts() reports work that raced in', () => {
    for (const eventIdx of [false, true]) {
      const e = setup(8, { eventIdx });
      try {
        const { queue, device, memory } = e;
        const r = ring(memory, queue.layout);
        for (let i = 0; i < 3; i++) queue.addBuffer(DATA_GPA, 8, true, i);
        queue.publish();
        const [a, b, c] = [device.pop()!, device.pop()!, device.pop()!];
        device.push(a.id, 1, 1);
        expect(device.needsCall(), `polling mode (eventIdx ${eventIdx})`).to.equal(false);
        expect(queue.hasUsed()).to.equal(true);
        expect(queue.enableInterrupts()).to.equal(true, 'a completion is already there');
        expect(r.driverEvent()).to.equal(eventIdx ? (RING_EVENT_FLAGS_DESC << 16) | 0x8000 : RING_EVENT_FLAGS_ENABLE << 16);
        const t = new Uint32Array(3);
        const l = new Uint32Array(3);
        expect(queue.reap(t, l, 3)).to.equal(1);
        expect(queue.enableInterrupts()).to.equal(false);
        expect(r.driverEvent()).to.equal(eventIdx ? (RING_EVENT_FLAGS_DESC << 16) | 0x8001 : RING_EVENT_FLAGS_ENABLE << 16);
        device.push(b.id, 1, 1);
        expect(device.needsCall(), `interrupt mode (eventIdx ${eventIdx})`).to.equal(true);
        device.push(c.id, 1, 1);
        // With event index the driver asked only for slot 1: no call for slot 2 until it re-enables.
        expect(device.needsCall()).to.equal(!eventIdx);
        queue.disableInterrupts();
        expect(r.driverEvent() >>> 16).to.equal(RING_EVENT_FLAGS_DISABLE);
        expect(queue.reap(t, l, 3)).to.equal(2);
        expect(queue.enableInterrupts()).to.equal(false);
        expect(device.needsCall()).to.equal(false, 'nothing pushed since');
      } finally {
        e.memory.close();
      }
    }
  });

  it('treats len as zero when the used descriptor lacks WRITE (§2.8.4: reserved, ignored by drivers)', () => {
    env = setup(8);
    const { queue, device } = env;
    queue.addBuffer(DATA_GPA, 8, false, 5);
    queue.publish();
    const c = device.pop()!;
    device.pushRaw(0, c.id, 0xffffffff, device.usedFlags);
    const t = new Uint32Array(1);
    const l = new Uint32Array(1);
    expect(queue.reap(t, l, 1)).to.equal(1);
    expect([t[0], l[0]]).to.deep.equal([5, 0]);
  });

  type Corrupt = (d: PackedDeviceQueue, first: { id: number; descCount: number }, queue: PackedVirtqueue) => void;
  const corruptions: [string, Corrupt, string][] = [
    ['an id out of range', (d) => d.push(200, 1, 0), 'VHOST_RING_ID_OUT_OF_RANGE'],
    ['an id in range that was never made available', (d) => d.push(5, 1, 0), 'VHOST_RING_ID_NOT_OUTSTANDING'],
    ['a duplicate completion', (d, c) => (d.push(c.id, 1, 0), d.push(c.id, 1, 0)), 'VHOST_RING_ID_NOT_OUTSTANDING'],
    ['a length beyond the writable bytes', (d, c) => d.push(c.id, 1, 65), 'VHOST_RING_LEN_TOO_LARGE'],
    [
      'an id added but not yet published',
      (d, _c, q) => {
        q.addBuffer(DATA_GPA, 8, true, 9); // id 2, hidden behind its unpublished batch head
        d.push(2, 1, 0);
      },
      'VHOST_RING_ID_NOT_OUTSTANDING',
    ],
    [
      'more completions than buffers outstanding',
      (d, c) => {
        d.push(c.id, 1, 0);
        d.push(c.id ^ 1, 1, 0);
        d.pushRaw(d.usedSlot, 0, 0, d.usedFlags); // a third used descriptor where nothing is outstanding
      },
      'VHOST_RING_IDX_JUMP',
    ],
  ];
  for (const [what, corrupt, code] of corruptions) {
    it(`rejects ${what} with ${code} and stays broken`, () => {
      env = setup(8);
      const { queue, device } = env;
      queue.addBuffer(DATA_GPA, 64, true, 1);
      queue.addBuffer(DATA_GPA + 64, 64, true, 2);
      queue.publish();
      const first = device.pop()!;
      corrupt(device, first, queue);
      const t = new Uint32Array(8);
      const l = new Uint32Array(8);
      const error = expectThrowCode(() => {
        while (queue.reap(t, l, 8) > 0);
      }, code);
      expect(queue.error).to.equal(error);
      const calls: (() => unknown)[] = [
        () => queue.reap(t, l, 8),
        () => queue.addBuffer(DATA_GPA, 1, false, 3),
        () => queue.addChain([DATA_GPA, DATA_GPA], [1, 1], 2, 1, 3),
        () => queue.publish(),
        () => queue.hasUsed(),
        () => queue.enableInterrupts(),
        () => queue.disableInterrupts(),
      ];
      for (const call of calls) expect((expectThrowCode(call, 'VHOST_RING_BROKEN') as { cause?: unknown }).cause).to.equal(error);
    });
  }

  it('rejects a used descriptor on a ring with nothing ever made available', () => {
    env = setup(8);
    const { queue, device } = env;
    device.pushRaw(0, 0, 0, device.usedFlags);
    expect(queue.hasUsed()).to.equal(true, 'a peek does not validate');
    expectThrowCode(() => queue.reap(new Uint32Array(1), new Uint32Array(1), 1), 'VHOST_RING_IDX_JUMP');
  });

  it('encodes vringBase after wraps (non-power-of-2 size), and a device started from it carries on', () => {
    env = setup(100);
    const { memory, queue, device } = env;
    const t = new Uint32Array(100);
    const l = new Uint32Array(100);
    for (let i = 0; i < 250; i++) {
      queue.addBuffer(DATA_GPA, 1, false, i);
      queue.publish();
      const c = device.pop()!;
      device.push(c.id, 1, 0);
      expect(queue.reap(t, l, 1)).to.equal(1);
    }
    // 250 descriptors: slot 50, the counters flipped twice (back to 1).
    expect(queue.vringBase).to.equal((50 | 0x8000 | (50 << 16) | 0x80000000) >>> 0);
    for (let i = 0; i < 60; i++) queue.addBuffer(DATA_GPA, 1, false, i);
    queue.publish();
    for (let c = device.pop(); c; c = device.pop()) device.push(c.id, 1, 0);
    expect(queue.reap(t, l, 100)).to.equal(60);
    expect(queue.vringBase).to.equal((10 | (10 << 16)) >>> 0, '310 descriptors: slot 10, counters 0');
    expect(device.base).to.equal(queue.vringBase);
    // A back-end restarted with SET_VRING_BASE(vringBase) picks up exactly where the old one stopped.
    const restarted = new PackedDeviceQueue(memory, queue.layout, { eventIdx: false, base: queue.vringBase });
    queue.addChain([DATA_GPA, DATA_GPA], [4, 4], 2, 1, 77);
    queue.publish();
    const c = restarted.pop()!;
    expect([c.descCount, c.writableBytes]).to.deep.equal([2, 4]);
    restarted.push(c.id, c.descCount, 3);
    expect(queue.reap(t, l, 100)).to.equal(1);
    expect([t[0], l[0]]).to.deep.equal([77, 3]);
    expect(restarted.base).to.equal(queue.vringBase);
  });
});

describe('PackedDeviceQueue refuses malformed driver rings', () => {
  let memory: GuestMemory | null = null;
  afterEach(() => memory?.close());

  // Hand-written available descriptors in a fresh ring (driver wrap counter 1: AVAIL set, USED clear).
  function raw(size: number, descs: [number, number, number, number][]) {
    memory = GuestMemory.create({ size: 1 << 20 });
    const layout = packedRingLayout(RING_GPA, size);
    const r = ring(memory, layout);
    descs.forEach(([gpa, len, id, flags], slot) => r.write(slot, gpa, len, id, flags));
    return { device: new PackedDeviceQueue(memory, layout, { eventIdx: false }), memory };
  }
  function table(mem: GuestMemory, at: number, entries: [number, number, number][]) {
    const dv = mem.dataView(at, entries.length * 16);
    entries.forEach(([gpa, len, flags], i) => {
      dv.setBigUint64(i * 16, BigInt(gpa), true);
      dv.setUint32(i * 16 + 8, len, true);
      dv.setUint16(i * 16 + 14, flags, true);
    });
  }
  const A = AVAIL;
  const N = VIRTQ_DESC_F_NEXT;
  const W = VIRTQ_DESC_F_WRITE;
  const I = VIRTQ_DESC_F_INDIRECT;
  const TABLE = 0x40000;

  const cases: [string, () => PackedDeviceQueue][] = [
    ['INDIRECT and NEXT together', () => raw(8, [[TABLE, 32, 0, A | I | N], [DATA_GPA, 1, 0, A]]).device],
    ['INDIRECT inside a NEXT list', () => raw(8, [[DATA_GPA, 1, 0, A | N], [TABLE, 32, 0, A | I]]).device],
    ['a readable descriptor after a writable one', () => raw(8, [[DATA_GPA, 1, 0, A | W | N], [DATA_GPA, 1, 0, A]]).device],
    ['a list running into a descriptor that is not available', () => raw(8, [[DATA_GPA, 1, 0, A | N], [DATA_GPA, 1, 0, USED]]).device],
    ['a list that never ends (a loop around the ring)', () => raw(4, [[DATA_GPA, 1, 0, A | N], [DATA_GPA, 1, 0, A | N], [DATA_GPA, 1, 0, A | N], [DATA_GPA, 1, 0, A | N]]).device],
    ['an indirect table of a partial descriptor', () => raw(8, [[TABLE, 20, 0, A | I]]).device],
    [
      'INDIRECT inside an indirect table',
      () => {
        const { device, memory: m } = raw(8, [[TABLE, 32, 0, A | I]]);
        table(m, TABLE, [[DATA_GPA, 1, 0], [TABLE, 16, I]]);
        return device;
      },
    ],
    [
      'a readable entry after a writable one in an indirect table',
      () => {
        const { device, memory: m } = raw(8, [[TABLE, 32, 0, A | I]]);
        table(m, TABLE, [[DATA_GPA, 1, W], [DATA_GPA, 1, 0]]);
        return device;
      },
    ],
  ];
  for (const [what, make] of cases) {
    it(`refuses ${what} with VHOST_INVALID_PAYLOAD`, () => {
      const device = make();
      const e = expectThrowCode(() => device.pop(), 'VHOST_INVALID_PAYLOAD') as { rule?: string };
      expect(e.rule).to.match(/^virtio 1\.2 §2\.8\./);
    });
  }

  it('reads a well-formed indirect table, ignoring NEXT and ids inside it (§2.8.7)', () => {
    const { device, memory: m } = raw(8, [[TABLE, 48, 4, A | I]]);
    table(m, TABLE, [[DATA_GPA, 1, N], [DATA_GPA + 1, 2, W | N], [DATA_GPA + 3, 3, W]]);
    const c = device.pop()!;
    expect([c.id, c.descCount, c.indirect, c.readableBytes, c.writableBytes]).to.deep.equal([4, 1, true, 1, 5]);
    expect(device.pop()).to.equal(null);
    expect(device.base).to.equal(0x80008001);
  });

  it('takes the buffer id from the last descriptor of a list (§2.8.6)', () => {
    const { device } = raw(8, [[DATA_GPA, 1, 9, A | N], [DATA_GPA, 1, 3, A]]);
    expect(device.pop()!.id).to.equal(3);
  });
});

describe('PackedVirtqueue hot path', () => {
  it('allocates nothing per buffer: one million add/publish/reap cycles against a raw device run without a GC', function () {
    this.timeout(60_000);
    const script = `
      const { GuestMemory } = await import(${JSON.stringify(new URL('../../lib/memory/guest-memory.js', import.meta.url).href)});
      const { PackedVirtqueue } = await import(${JSON.stringify(new URL('../../lib/virtqueue/packed-queue.js', import.meta.url).href)});
      const memory = GuestMemory.create({ size: 1 << 20 });
      const size = 256;
      const q = new PackedVirtqueue({ memory, index: 0, size, ringGpa: 0x1000, eventIdx: true });
      // A minimal in-order device in raw typed arrays, so only the driver's own allocations show.
      const w = memory.window(0x1000, size * 16);
      const d16 = new Uint16Array(w.buffer, w.byteOffset, size * 8);
      const d32 = new Uint32Array(w.buffer, w.byteOffset, size * 4);
      const tokens = new Uint32Array(64), lens = new Uint32Array(64);
      let slot = 0, wrap = 1;
      function cycle() {
        for (let i = 0; i < 32; i++) q.addBuffer(0x80000 + i * 2048, 2048, true, i);
        q.publish();
        for (let i = 0; i < 32; i++) {
          d32[slot * 4 + 2] = 60;
          Atomics.store(d16, slot * 8 + 7, (wrap ? 0x8080 : 0) | 2);
          if (++slot === size) { slot = 0; wrap ^= 1; }
        }
        let n = 0; while (n < 32) n += q.reap(tokens, lens, 64);
      }
      for (let i = 0; i < 20000; i++) cycle();
      console.log('MEASURE');
      for (let i = 0; i < 1000000 / 32; i++) cycle();
      console.log('DONE');
      memory.close();
    `;
    const r = spawnSync(process.execPath, ['--trace-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    const measured = r.stdout.split('MEASURE')[1]!.split('DONE')[0]!;
    const gcs = measured.split('\n').filter((line) => /Scavenge|Mark-Compact/.test(line));
    expect(gcs, gcs.join('\n')).to.have.length(0);
  });
});
