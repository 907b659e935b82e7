import { expect } from 'chai';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { Mapping } from '../../lib/native/mapping.js';
import { C, errno, errnoName, libc } from '../../lib/native/libc.js';
import { isVhostUserError } from '../../lib/errors.js';
import { resourceSnapshot, rssBytes } from '../helpers/resources.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    expect(isVhostUserError(e), String(e)).to.equal(true);
    expect((e as { code: string }).code).to.equal(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

describe('GuestMemory', () => {
  it('creates a 64 GiB guest at once without spending RAM, and its far end is shared through the fd', () => {
    const snap = resourceSnapshot();
    const rssBefore = rssBytes();
    const started = process.hrtime.bigint();
    const memory = GuestMemory.create({ size: 64 * GiB });
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    try {
      expect(elapsedMs).to.be.below(1000);
      const gpa = 63 * GiB + 12345;
      memory.write(gpa, Uint8Array.from([1, 2, 3, 4]));
      expect(rssBytes() - rssBefore).to.be.below(64 * MiB);
      // A second, independent mapping of the same fd sees the bytes: the memory a back-end gets is the same pages.
      const region = memory.regions[0]!;
      const other = Mapping.map(region.fd, 64 * GiB);
      try {
        expect(Array.from(other.bytes(gpa, 4))).to.deep.equal([1, 2, 3, 4]);
      } finally {
        other.close();
      }
    } finally {
      memory.close();
    }
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('seals memfd regions so nobody can shrink them under us', () => {
    const memory = GuestMemory.create({ size: 2 * MiB });
    try {
      const fd = memory.regions[0]!.fd;
      const seals = libc.fcntl(fd, C.F_GET_SEALS, 0);
      expect(seals & C.F_SEAL_SHRINK).to.equal(C.F_SEAL_SHRINK);
      expect(libc.ftruncate(fd, MiB)).to.equal(-1);
      expect(errnoName(errno())).to.equal('EPERM');
    } finally {
      memory.close();
    }
  });

  it('translates guest-physical addresses across regions with gaps, with bounds checks', () => {
    const memory = GuestMemory.create({
      regions: [
        { guestPhysAddr: 0, size: MiB },
        { guestPhysAddr: 4 * GiB, size: 2 * MiB },
      ],
    });
    try {
      const [low, high] = memory.regions;
      expect(memory.userAddr(0x100)).to.equal(low!.userAddr + 0x100);
      expect(memory.userAddr(4 * GiB + 0x2000)).to.equal(high!.userAddr + 0x2000);
      memory.write(4 * GiB + 2 * MiB - 2, Uint8Array.from([0xaa, 0xbb]));
      expect(Array.from(high!.bytes(2 * MiB - 2, 2))).to.deep.equal([0xaa, 0xbb]);
      expectCode(() => memory.bytes(MiB - 1, 2), 'VHOST_MEMORY_OUT_OF_RANGE');
      expectCode(() => memory.bytes(2 * MiB, 1), 'VHOST_MEMORY_OUT_OF_RANGE');
      expectCode(() => memory.bytes(4 * GiB + 2 * MiB, 1), 'VHOST_MEMORY_OUT_OF_RANGE');
      expectCode(() => memory.addRegion({ guestPhysAddr: 4 * GiB + MiB, size: 2 * MiB }), 'VHOST_MEMORY_OVERLAP');
      expectCode(() => memory.addRegion({ guestPhysAddr: 8 * GiB, size: 1000 }), 'VHOST_INVALID_ARGUMENT');
    } finally {
      memory.close();
    }
  });

  it('serves views across 1 GiB boundaries and empties them on close instead of faulting', () => {
    const snap = resourceSnapshot();
    const memory = GuestMemory.create({ size: 3 * GiB });
    const across = memory.bytes(GiB - 8, 16);
    across.fill(7);
    expect(Array.from(memory.read(GiB - 8, 16))).to.deep.equal(new Array(16).fill(7));
    memory.close();
    expect(across.length).to.equal(0);
    expect(across[0]).to.equal(undefined);
    expectCode(() => memory.bytes(0, 1), 'VHOST_MEMORY_CLOSED');
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('backs a region with 2 MiB huge pages', async function () {
    const { readFileSync } = await import('node:fs');
    const free = Number(/HugePages_Free:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
    // Huge pages must be reserved by the administrator (vm.nr_hugepages); a test must not change the host.
    if (free < 2) this.skip();
    const memory = GuestMemory.create({ regions: [{ guestPhysAddr: 0, size: 4 * MiB, backing: { kind: 'hugetlb', pageSize: '2M' } }] });
    try {
      memory.write(3 * MiB, Uint8Array.from([9, 8, 7]));
      expect(Array.from(memory.read(3 * MiB, 3))).to.deep.equal([9, 8, 7]);
      expect(readFileSync('/proc/self/maps', 'utf8')).to.match(/memfd:guest-ram.*\(deleted\)|hugepage/);
    } finally {
      memory.close();
    }
  });

  it('refuses a hugetlb region that is not a whole number of huge pages', () => {
    expectCode(() => GuestMemory.create({ regions: [{ guestPhysAddr: 0, size: MiB, backing: { kind: 'hugetlb' } }] }), 'VHOST_INVALID_ARGUMENT');
  });

  it('maps file-backed regions', async () => {
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const nodePath = await import('node:path');
    const dir = mkdtempSync(nodePath.join(tmpdir(), 'vhost-mem-'));
    try {
      const path = nodePath.join(dir, 'ram');
      const memory = GuestMemory.create({ regions: [{ guestPhysAddr: 0, size: 64 * 1024, backing: { kind: 'file', path } }] });
      memory.write(100, Buffer.from('guest'));
      memory.close();
      expect(readFileSync(path).subarray(100, 105).toString()).to.equal('guest');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
