import { expect } from 'chai';
import { BackendMemory } from '../../lib/backend/backend-memory.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import type { MemoryRegion } from '../../lib/protocol/payloads.js';
import { SplitDeviceQueue } from '../../lib/virtqueue/device/split-device.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import { fdCount, resourceSnapshot, settle } from '../helpers/resources.js';

const MiB = 1 << 20;

function memfd(size: number): number {
  const fd = libc.memfd_create('backend-memory-spec', C.MFD_CLOEXEC);
  expect(fd).to.be.greaterThan(0);
  expect(libc.ftruncate(fd, size)).to.equal(0);
  return fd;
}

/** A dup of `fd` (fcntl F_DUPFD_CLOEXEC), since BackendMemory takes ownership of what it is given. */
function dup(fd: number): number {
  const d = libc.fcntl(fd, C.F_DUPFD_CLOEXEC, 0);
  expect(d).to.be.greaterThan(0);
  return d;
}

function region(gpa: number, size: number, ua: bigint, offset = 0): MemoryRegion {
  return { guestPhysAddr: BigInt(gpa), memorySize: BigInt(size), userAddr: ua, mmapOffset: BigInt(offset) };
}

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    expect((e as { code: string }).code, (e as Error).message).to.equal(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

describe('BackendMemory', () => {
  let mem: BackendMemory;
  afterEach(() => mem?.close());

  it('maps each fd from its mmap offset and translates GPAs and user addresses', () => {
    const fd = memfd(2 * MiB);
    const view = Mapping.map(fd, 2 * MiB);
    view.bytes(MiB + 100, 5).set(Buffer.from('hello'));
    mem = new BackendMemory();
    mem.setTable([region(0x100000, MiB, 0x7000_0000_0000n, MiB)], [dup(fd)]);
    expect(Buffer.from(mem.bytes(0x100000 + 100, 5)).toString()).to.equal('hello');
    mem.dataView(0x100000 + 200, 4).setUint32(0, 0xdeadbeef, true);
    expect(view.dataView(MiB + 200, 4).getUint32(0, true)).to.equal(0xdeadbeef);
    expect(mem.userToGpa(0x7000_0000_0000n + 300n, 16)).to.equal(0x100000 + 300);
    expectCode(() => mem.userToGpa(0x7000_0000_0000n + BigInt(MiB) - 8n, 16), 'VHOST_MEMORY_OUT_OF_RANGE');
    expectCode(() => mem.bytes(0x100000 + MiB - 1, 2), 'VHOST_MEMORY_OUT_OF_RANGE');
    expectCode(() => mem.bytes(0, 1), 'VHOST_MEMORY_OUT_OF_RANGE');
    view.close();
    closeFd(fd);
  });

  it('refuses zero-sized, overflowing and overlapping regions, and fds that are too short, closing every fd', () => {
    mem = new BackendMemory();
    const fds0 = fdCount();
    const cases: [MemoryRegion[], number[], string][] = [
      [[region(0, 0, 0x1000n)], [memfd(MiB)], 'VHOST_INVALID_PAYLOAD'],
      [[{ ...region(0, MiB, 0x1000n), guestPhysAddr: (1n << 64n) - 4096n }], [memfd(MiB)], 'VHOST_INVALID_PAYLOAD'],
      [[{ ...region(0, MiB, 0x1000n), mmapOffset: (1n << 64n) - 4096n }], [memfd(MiB)], 'VHOST_INVALID_PAYLOAD'],
      [[region(0, MiB, 0x10000000n), region(MiB / 2, MiB, 0x20000000n)], [memfd(MiB), memfd(MiB)], 'VHOST_MEMORY_OVERLAP'],
      [[region(0, MiB, 0x10000000n), region(4 * MiB, MiB, 0x10000000n + BigInt(MiB / 2))], [memfd(MiB), memfd(MiB)], 'VHOST_MEMORY_OVERLAP'],
      [[region(0, MiB, 0x10000000n, 4096)], [memfd(MiB)], 'VHOST_MEMORY_OUT_OF_RANGE'],
      [[region(0, MiB, 0x10000000n)], [], 'VHOST_INVALID_PAYLOAD'],
    ];
    for (const [regions, fds, code] of cases) expectCode(() => mem.setTable(regions, fds), code);
    expect(fdCount()).to.equal(fds0);
    expect(mem.isEmpty).to.equal(true);
  });

  it('adds and removes single regions, honouring the slot limit', () => {
    mem = new BackendMemory(2);
    mem.add(region(0, MiB, 0x10000000n), memfd(MiB));
    expectCode(() => mem.add(region(MiB / 2, MiB, 0x30000000n), memfd(MiB)), 'VHOST_MEMORY_OVERLAP');
    mem.add(region(8 * MiB, MiB, 0x20000000n), memfd(MiB));
    expectCode(() => mem.add(region(16 * MiB, MiB, 0x40000000n), memfd(MiB)), 'VHOST_INVALID_PAYLOAD');
    expect(mem.regions.map((r) => r.guestPhysAddr)).to.deep.equal([0, 8 * MiB]);
    expect(mem.remove(region(0, MiB, 0x10000000n))).to.equal(true);
    expect(mem.remove(region(0, MiB, 0x10000000n))).to.equal(false);
    expectCode(() => mem.bytes(0, 1), 'VHOST_MEMORY_OUT_OF_RANGE');
    expect(mem.bytes(8 * MiB, 1)).to.have.length(1);
  });

  it('runs the device ring model over the front-end memory it mapped', () => {
    const guest = GuestMemory.create({ size: MiB });
    const vq = new SplitVirtqueue({ memory: guest, index: 0, size: 16, ringGpa: 0, eventIdx: true });
    mem = new BackendMemory();
    const r = guest.regions[0]!;
    mem.setTable([region(0, MiB, BigInt(r.userAddr))], [dup(r.fd)]);
    const a = vq.addresses;
    const dev = new SplitDeviceQueue(mem, { num: 16, desc: a.desc, avail: a.driver, used: a.device, end: a.device + 6 + 8 * 16 }, { eventIdx: true });
    guest.write(0x8000, Buffer.from('ping'));
    vq.addBuffer(0x8000, 4, false, 7);
    vq.publish();
    const chain = dev.pop()!;
    expect(chain.segments).to.deep.equal([{ gpa: 0x8000, len: 4, writable: false }]);
    expect(Buffer.from(mem.bytes(0x8000, 4)).toString()).to.equal('ping');
    dev.push(chain.head, 0);
    const tokens = new Uint32Array(1);
    expect(vq.reap(tokens, new Uint32Array(1), 1)).to.equal(1);
    expect(tokens[0]).to.equal(7);
    guest.close();
  });

  it('releases every mapping on close()', async () => {
    const snap = resourceSnapshot();
    const m = new BackendMemory();
    m.setTable([region(0, MiB, 0x10000000n), region(MiB, MiB, 0x20000000n)], [memfd(MiB), memfd(MiB)]);
    m.add(region(4 * MiB, MiB, 0x30000000n), memfd(MiB));
    m.close();
    m.close();
    await settle(5);
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
    expectCode(() => m.bytes(0, 1), 'VHOST_MEMORY_CLOSED');
  });
});
