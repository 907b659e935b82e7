import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { SplitDeviceQueue } from '../../lib/virtqueue/device/split-device.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';

const MiB = 2 ** 20;
const RING_GPA = 0x1000;
const DATA_GPA = 0x80000;

function setup(size: number, opts: { eventIdx?: boolean; indirectMax?: number } = {}) {
  const memory = GuestMemory.create({ size: 4 * MiB });
  const queue = new SplitVirtqueue({ memory, index: 0, size, ringGpa: RING_GPA, eventIdx: opts.eventIdx ?? false, indirectMax: opts.indirectMax ?? 0 });
  const device = new SplitDeviceQueue(memory, queue.layout, { eventIdx: opts.eventIdx ?? false });
  return { memory, queue, device };
}

function expectThrowCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    expect((e as { code?: string }).code, String(e)).to.equal(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

describe('SplitVirtqueue with a device model over shared guest memory', () => {
  let env: ReturnType<typeof setup> | null = null;
  afterEach(() => env?.memory.close());

  it('carries bytes both ways: a readable buffer to the device, a writable one back', () => {
    env = setup(8);
    const { memory, queue, device } = env;
    memory.write(DATA_GPA, Buffer.from('to the device'));
    expect(queue.addBuffer(DATA_GPA, 13, false, 111)).to.equal(true);
    expect(queue.addBuffer(DATA_GPA + 4096, 64, true, 222)).to.equal(true);
    expect(device.pop()).to.equal(null, 'nothing is visible before publish()');
    queue.publish();
    const tx = device.pop()!;
    expect(tx.segments).to.deep.equal([{ gpa: DATA_GPA, len: 13, writable: false }]);
    expect(Buffer.from(memory.read(tx.segments[0]!.gpa, 13)).toString()).to.equal('to the device');
    const rx = device.pop()!;
    memory.write(rx.segments[0]!.gpa, Buffer.from('from the device'));
    device.push(tx.head, 0);
    device.push(rx.head, 15);
    const tokens = new Uint32Array(8);
    const lens = new Uint32Array(8);
    expect(queue.reap(tokens, lens, 8)).to.equal(2);
    expect([tokens[0], lens[0], tokens[1], lens[1]]).to.deep.equal([111, 0, 222, 15]);
    expect(Buffer.from(memory.read(DATA_GPA + 4096, lens[1]!)).toString()).to.equal('from the device');
    expect(queue.outstanding).to.equal(0);
    expect(queue.freeCount).to.equal(8);
  });

  for (const indirectMax of [0, 4]) {
    it(`passes chains readable-then-writable ${indirectMax ? 'through indirect tables' : 'as linked descriptors'} and frees every descriptor`, () => {
      env = setup(16, { indirectMax });
      const { queue, device } = env;
      const gpas = [DATA_GPA, DATA_GPA + 100, DATA_GPA + 200, DATA_GPA + 300];
      const lengths = [10, 20, 30, 40];
      expect(queue.addChain(gpas, lengths, 4, 2, 7)).to.equal(true);
      expect(queue.freeCount).to.equal(indirectMax ? 15 : 12);
      queue.publish();
      const chain = device.pop()!;
      expect(chain.segments.map((s) => [s.gpa, s.len, s.writable])).to.deep.equal([
        [DATA_GPA, 10, false],
        [DATA_GPA + 100, 20, false],
        [DATA_GPA + 200, 30, true],
        [DATA_GPA + 300, 40, true],
      ]);
      expect(chain.writableBytes).to.equal(70);
      device.push(chain.head, 70);
      const t = new Uint32Array(1);
      const l = new Uint32Array(1);
      expect(queue.reap(t, l, 1)).to.equal(1);
      expect([t[0], l[0]]).to.deep.equal([7, 70]);
      expect(queue.freeCount).to.equal(16);
    });
  }

  for (const size of [8, 256]) {
    it(`keeps tokens and lengths straight across 100,000 operations and index wrap (size ${size})`, () => {
      env = setup(size, { eventIdx: true, indirectMax: 3 });
      const { queue, device } = env;
      const tokens = new Uint32Array(size);
      const lens = new Uint32Array(size);
      let nextToken = 0;
      let expectToken = 0;
      let seed = 12345;
      // 32-bit LCG; the high bits are the random ones.
      const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), (seed >>> 16) % n);
      const pending: { head: number; len: number }[] = [];
      while (expectToken < 100_000) {
        for (let k = rand(size) + 1; k > 0; k--) {
          const count = rand(3) + 1;
          const gpas = [DATA_GPA, DATA_GPA + 64, DATA_GPA + 128];
          const lengths = [16, 16, 16];
          if (!queue.addChain(gpas, lengths, count, 1, nextToken)) break;
          nextToken++;
        }
        queue.publish();
        for (let c = device.pop(); c; c = device.pop()) pending.push({ head: c.head, len: c.writableBytes });
        for (const p of pending.splice(0)) device.push(p.head, p.len);
        const n = queue.reap(tokens, lens, size);
        for (let i = 0; i < n; i++) {
          expect(tokens[i]).to.equal(expectToken++);
          expect(lens[i]).to.be.oneOf([0, 16, 32]);
        }
      }
      expect(queue.outstanding).to.equal(0);
      expect(queue.freeCount).to.equal(size);
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
    expect(queue.publish()).to.equal(false, 'nothing new: no kick');
  });

  it('asks for a kick exactly when publishing crosses avail_event (event index)', () => {
    env = setup(16, { eventIdx: true });
    const { queue, device } = env;
    device.setAvailEvent(3); // the device wants a kick once entry 3 is published
    const publishN = (n: number) => {
      for (let i = 0; i < n; i++) queue.addBuffer(DATA_GPA, 1, false, i);
      return queue.publish();
    };
    expect(publishN(3)).to.equal(false); // idx 0 -> 3: entries 0..2
    expect(publishN(1)).to.equal(true); // idx 3 -> 4: entry 3
    expect(publishN(2)).to.equal(false); // idx 4 -> 6
  });

  it('interrupts: the device calls only when asked, and enableInterrupts() reports work that raced in', () => {
    for (const eventIdx of [false, true]) {
      const e = setup(8, { eventIdx });
      try {
        const { queue, device } = e;
        queue.addBuffer(DATA_GPA, 8, true, 1);
        queue.addBuffer(DATA_GPA, 8, true, 2);
        queue.publish();
        const a = device.pop()!;
        const b = device.pop()!;
        device.push(a.head, 1);
        expect(device.needsCall(), `polling mode (eventIdx ${eventIdx})`).to.equal(false);
        expect(queue.enableInterrupts()).to.equal(true, 'a completion is already there');
        const t = new Uint32Array(2);
        const l = new Uint32Array(2);
        expect(queue.reap(t, l, 2)).to.equal(1);
        expect(queue.enableInterrupts()).to.equal(false);
        device.push(b.head, 1);
        expect(device.needsCall(), `interrupt mode (eventIdx ${eventIdx})`).to.equal(true);
      } finally {
        e.memory.close();
      }
    }
  });

  it('interrupt coalescing: with EVENT_IDX enableInterruptsAfter(n) brings one call after the n-th completion, not before', () => {
    env = setup(16, { eventIdx: true });
    const { queue, device } = env;
    for (let i = 0; i < 8; i++) queue.addBuffer(DATA_GPA, 8, true, i);
    queue.publish();
    const heads = Array.from({ length: 8 }, () => device.pop()!.head);
    expect(queue.enableInterruptsAfter(4)).to.equal(false, 'nothing completed yet');
    const calls: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      device.push(heads[i]!, 1);
      calls.push(device.needsCall());
    }
    expect(calls).to.deep.equal([false, false, false, true, false]);
    const t = new Uint32Array(8);
    const l = new Uint32Array(8);
    expect(queue.reap(t, l, 8)).to.equal(5);
    // Two of three wanted are already there when arming: the device will cross used_event with the third.
    device.push(heads[5]!, 1);
    device.push(heads[6]!, 1);
    expect(queue.enableInterruptsAfter(3)).to.equal(false);
    device.push(heads[7]!, 1);
    expect(device.needsCall()).to.equal(true);
    // Arming after the device already crossed the index reports the completions instead (no call would come).
    expect(queue.enableInterruptsAfter(3)).to.equal(true);
  });

  it('without EVENT_IDX enableInterruptsAfter(n) is enableInterrupts(): a call on the next completion', () => {
    env = setup(8);
    const { queue, device } = env;
    queue.addBuffer(DATA_GPA, 8, true, 1);
    queue.addBuffer(DATA_GPA, 8, true, 2);
    queue.publish();
    const a = device.pop()!;
    expect(queue.enableInterruptsAfter(2)).to.equal(false);
    device.push(a.head, 1);
    expect(device.needsCall()).to.equal(true);
  });

  const corruptions: [string, (d: SplitDeviceQueue, head: number) => void, string][] = [
    ['an id out of range', (d) => d.pushRaw(9999, 0), 'VHOST_RING_ID_OUT_OF_RANGE'],
    ['an id in range but not outstanding', (d) => d.pushRaw(5, 0), 'VHOST_RING_ID_NOT_OUTSTANDING'],
    ['a duplicate completion', (d, head) => (d.pushRaw(head, 0), d.pushRaw(head, 0)), 'VHOST_RING_ID_NOT_OUTSTANDING'],
    ['a length beyond the writable bytes', (d, head) => d.pushRaw(head, 65), 'VHOST_RING_LEN_TOO_LARGE'],
    ['an index jumping past what is outstanding', (d) => d.setUsedIdx(5), 'VHOST_RING_IDX_JUMP'],
  ];
  for (const [what, corrupt, code] of corruptions) {
    it(`rejects ${what} with ${code} and stays broken`, () => {
      env = setup(8);
      const { queue, device } = env;
      queue.addBuffer(DATA_GPA, 64, true, 1);
      queue.addBuffer(DATA_GPA + 64, 64, true, 2);
      queue.publish();
      const head = device.pop()!.head;
      corrupt(device, head);
      const t = new Uint32Array(8);
      const l = new Uint32Array(8);
      expectThrowCode(() => queue.reap(t, l, 8), code);
      expect(queue.error?.code).to.equal(code);
      expectThrowCode(() => queue.reap(t, l, 8), 'VHOST_RING_BROKEN');
      expectThrowCode(() => queue.addBuffer(DATA_GPA, 1, false, 3), 'VHOST_RING_BROKEN');
    });
  }

  it('the device model refuses a looping chain and a readable descriptor after a writable one', () => {
    env = setup(8);
    const { memory, queue, device } = env;
    const table = memory.dataView(queue.layout.desc, 8 * 16);
    const flagsOf = (d: number) => table.getUint16(d * 16 + 12, true);
    const setFlags = (d: number, f: number) => table.setUint16(d * 16 + 12, f, true);
    // A two-descriptor chain whose tail gets NEXT pointing back at the head: a loop.
    queue.addChain([DATA_GPA, DATA_GPA], [8, 8], 2, 1, 0);
    queue.publish();
    const head = memory.dataView(queue.layout.avail + 4, 2).getUint16(0, true);
    const tail = table.getUint16(head * 16 + 14, true);
    setFlags(tail, flagsOf(tail) | 1);
    table.setUint16(tail * 16 + 14, head, true);
    expectThrowCode(() => device.pop(), 'VHOST_INVALID_PAYLOAD');
    // A chain whose head is writable and whose tail is readable.
    queue.addChain([DATA_GPA, DATA_GPA], [8, 8], 2, 1, 1);
    queue.publish();
    const head2 = memory.dataView(queue.layout.avail + 6, 2).getUint16(0, true);
    const tail2 = table.getUint16(head2 * 16 + 14, true);
    setFlags(head2, flagsOf(head2) | 2);
    setFlags(tail2, flagsOf(tail2) & ~2);
    expectThrowCode(() => device.pop(), 'VHOST_INVALID_PAYLOAD');
  });

  it('reports the next avail index as the vring base', () => {
    env = setup(8);
    const { queue } = env;
    for (let i = 0; i < 5; i++) queue.addBuffer(DATA_GPA, 1, false, i);
    expect(queue.vringBase).to.equal(5);
  });

  for (const inOrder of [false, true]) it(`allocates nothing per buffer${inOrder ? ' (IN_ORDER, readable buffers)' : ''}: one million add/publish/pop/push/reap cycles run without a scavenge`, function () {
    this.timeout(60_000);
    const script = `
      const { GuestMemory } = await import(${JSON.stringify(new URL('../../lib/memory/guest-memory.js', import.meta.url).href)});
      const { SplitVirtqueue } = await import(${JSON.stringify(new URL('../../lib/virtqueue/split-queue.js', import.meta.url).href)});
      const memory = GuestMemory.create({ size: 1 << 20 });
      const size = 256;
      const q = new SplitVirtqueue({ memory, index: 0, size, ringGpa: 0x1000, eventIdx: true, inOrder: ${inOrder} });
      // A minimal device in raw typed arrays, so only the driver's own allocations show.
      const w = memory.window(q.layout.avail, 4 + 2 * size + 2); const avail = new Uint16Array(w.buffer, w.byteOffset, 2 + size + 1);
      const u = memory.window(q.layout.used, 4 + 8 * size + 4); const used32 = new Uint32Array(u.buffer, u.byteOffset, 1 + 2 * size + 1); const used16 = new Uint16Array(u.buffer, u.byteOffset, 2 + 4 * size + 2);
      const tokens = new Uint32Array(64), lens = new Uint32Array(64);
      let lastAvail = 0, usedIdx = 0;
      function cycle() {
        for (let i = 0; i < 32; i++) q.addBuffer(0x80000 + i * 2048, 2048, ${!inOrder}, i);
        q.publish();
        const a = avail[1];
        while (lastAvail !== a) { const head = avail[2 + (lastAvail & (size - 1))]; const s = usedIdx & (size - 1); used32[1 + 2 * s] = head; used32[2 + 2 * s] = 60; usedIdx = (usedIdx + 1) & 0xffff; lastAvail = (lastAvail + 1) & 0xffff; }
        Atomics.store(used16, 1, usedIdx);
        let n = 0; while (n < 32) n += q.reap(tokens, lens, 64);
      }
      for (let i = 0; i < 20000; i++) cycle();   // warm up: let the JIT optimize
      console.log('MEASURE');
      for (let i = 0; i < 1000000 / 32; i++) cycle();
      console.log('DONE');
      memory.close();
    `;
    const r = spawnSync(process.execPath, ['--trace-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    const measured = r.stdout.split('MEASURE')[1]!.split('DONE')[0]!;
    const scavenges = measured.split('\n').filter((l) => /Scavenge|Mark-Compact/.test(l));
    expect(scavenges, scavenges.join('\n')).to.have.length(0);
  });
});

describe('SplitVirtqueue with VIRTIO_F_IN_ORDER', () => {
  const SIZE = 8;
  let memory: GuestMemory | null = null;
  afterEach(() => memory?.close());

  function inOrderSetup() {
    memory = GuestMemory.create({ size: 4 * MiB });
    const queue = new SplitVirtqueue({ memory, index: 0, size: SIZE, ringGpa: RING_GPA, eventIdx: false, inOrder: true });
    const device = new SplitDeviceQueue(memory, queue.layout, { eventIdx: false });
    const u = memory.window(queue.layout.used, 4 + 8 * SIZE);
    // A device that writes used entries and used.idx itself, batch by batch (§2.7.9).
    const used32 = new Uint32Array(u.buffer, u.byteOffset, 1 + 2 * SIZE);
    const used16 = new Uint16Array(u.buffer, u.byteOffset, 2);
    const writeEntry = (pos: number, id: number, len: number) => {
      used32[1 + 2 * (pos % SIZE)] = id;
      used32[2 + 2 * (pos % SIZE)] = len;
    };
    const setUsedIdx = (idx: number) => Atomics.store(used16, 1, idx & 0xffff);
    return { memory, queue, device, writeEntry, setUsedIdx };
  }

  it('hands out descriptors in ring order, chains on consecutive descriptors, wrapping at the end of the table (§2.7.5)', () => {
    const { memory, queue, device } = inOrderSetup();
    expect(queue.addBuffer(DATA_GPA, 60, false, 10)).to.equal(true);
    expect(queue.addChain([DATA_GPA + 0x100, DATA_GPA + 0x200, DATA_GPA + 0x300], [12, 48, 64], 3, 2, 11)).to.equal(true);
    expect(queue.addBuffer(DATA_GPA + 0x400, 60, false, 12)).to.equal(true);
    queue.publish();
    const table = memory.dataView(queue.layout.desc, SIZE * 16);
    const chains = [device.pop()!, device.pop()!, device.pop()!];
    expect(chains.map((c) => c.head)).to.deep.equal([0, 1, 4]);
    // The chain's descriptors are 1 -> 2 -> 3.
    expect([table.getUint16(1 * 16 + 14, true), table.getUint16(2 * 16 + 14, true)]).to.deep.equal([2, 3]);
    for (const c of chains) device.push(c.head, c.writableBytes);
    const tokens = new Uint32Array(SIZE);
    const lens = new Uint32Array(SIZE);
    expect(queue.reap(tokens, lens, SIZE)).to.equal(3);
    expect([...tokens.subarray(0, 3)]).to.deep.equal([10, 11, 12]);
    expect([...lens.subarray(0, 3)]).to.deep.equal([0, 64, 0]);
    for (let i = 0; i < 6; i++) expect(queue.addBuffer(DATA_GPA + i * 0x100, 60, false, 20 + i)).to.equal(true);
    queue.publish();
    const heads: number[] = [];
    for (let c = device.pop(); c; c = device.pop()) heads.push(c.head);
    expect(heads).to.deep.equal([5, 6, 7, 0, 1, 2]);
  });

  it('a device that writes only the last entry of a batch: readable buffers come back in order, skipped writable ones at full length (§2.7.9)', () => {
    const { queue, writeEntry, setUsedIdx } = inOrderSetup();
    // Positions 0..4: TX, RX, RX, TX, RX; heads 0..4.
    queue.addBuffer(DATA_GPA, 60, false, 100);
    queue.addBuffer(DATA_GPA + 0x1000, 64, true, 101);
    queue.addBuffer(DATA_GPA + 0x2000, 64, true, 102);
    queue.addBuffer(DATA_GPA + 0x3000, 60, false, 103);
    queue.addBuffer(DATA_GPA + 0x4000, 64, true, 104);
    queue.publish();
    writeEntry(4, 4, 10);
    setUsedIdx(5);
    const tokens = new Uint32Array(SIZE);
    const lens = new Uint32Array(SIZE);
    expect(queue.reap(tokens, lens, SIZE)).to.equal(5);
    expect([...tokens.subarray(0, 5)]).to.deep.equal([100, 101, 102, 103, 104]);
    expect([...lens.subarray(0, 5)]).to.deep.equal([0, 64, 64, 0, 10]);
    expect(queue.outstanding).to.equal(0);
    expect(queue.freeCount).to.equal(SIZE);
  });

  it('takes at most `max` per reap and the rest on the next, in order', () => {
    const { queue, setUsedIdx } = inOrderSetup();
    for (let i = 0; i < 6; i++) queue.addBuffer(DATA_GPA + i * 0x100, 60, false, 50 + i);
    queue.publish();
    setUsedIdx(6);
    const tokens = new Uint32Array(SIZE);
    const lens = new Uint32Array(SIZE);
    expect(queue.reap(tokens, lens, 4)).to.equal(4);
    expect([...tokens.subarray(0, 4)]).to.deep.equal([50, 51, 52, 53]);
    expect(queue.reap(tokens, lens, 4)).to.equal(2);
    expect([...tokens.subarray(0, 2)]).to.deep.equal([54, 55]);
    expect(queue.reap(tokens, lens, 4)).to.equal(0);
  });

  const faults: [string, (e: ReturnType<typeof inOrderSetup>) => void, string][] = [
    ['a batch ending in an entry that names another buffer', (e) => (e.writeEntry(1, 0, 10), e.setUsedIdx(2)), 'VHOST_RING_ID_NOT_OUTSTANDING'],
    ['a length beyond the writable bytes', (e) => (e.writeEntry(1, 1, 65), e.setUsedIdx(2)), 'VHOST_RING_LEN_TOO_LARGE'],
    ['used.idx past the buffers published', (e) => e.setUsedIdx(3), 'VHOST_RING_IDX_JUMP'],
  ];
  for (const [what, corrupt, code] of faults) {
    it(`rejects ${what} with ${code} and stays broken`, () => {
      const env = inOrderSetup();
      env.queue.addBuffer(DATA_GPA, 64, true, 1);
      env.queue.addBuffer(DATA_GPA + 0x1000, 64, true, 2);
      env.queue.publish();
      corrupt(env);
      const tokens = new Uint32Array(SIZE);
      const lens = new Uint32Array(SIZE);
      expectThrowCode(() => env.queue.reap(tokens, lens, SIZE), code);
      expectThrowCode(() => env.queue.addBuffer(DATA_GPA, 1, false, 3), 'VHOST_RING_BROKEN');
    });
  }

  it('in steady state republishing the same buffers leaves the descriptor table and the avail ring as they were', () => {
    const { memory, queue, device } = inOrderSetup();
    const tokens = new Uint32Array(SIZE);
    const lens = new Uint32Array(SIZE);
    // Buffer b always goes out as the b-th of a batch, as the net driver's FIFO TX slots do.
    const cycle = () => {
      for (let b = 0; b < 4; b++) queue.addBuffer(DATA_GPA + b * 0x800, 76, false, b);
      queue.publish();
      for (let c = device.pop(); c; c = device.pop()) device.push(c.head, 0);
      expect(queue.reap(tokens, lens, SIZE)).to.equal(4);
    };
    cycle();
    cycle();
    const snapshot = () => [Buffer.from(memory.read(queue.layout.desc, SIZE * 16)), Buffer.from(memory.read(queue.layout.avail + 4, 2 * SIZE))];
    const [desc0, avail0] = snapshot();
    for (let i = 0; i < 10; i++) cycle();
    const [desc1, avail1] = snapshot();
    expect(desc1!.equals(desc0!)).to.equal(true);
    expect(avail1!.equals(avail0!)).to.equal(true);
  });
});
