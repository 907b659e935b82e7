/**
 * GuestMemory.swapBacking: how the driver moves to the destination memory at
 * switchover. Views taken before the exchange (what rings and buffer pools hold)
 * show the other memfd afterwards, at unchanged addresses; each side then owns
 * the other's fd, and both close cleanly.
 */
import { expect } from 'chai';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { Mapping } from '../../lib/native/mapping.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';

describe('GuestMemory.swapBacking (MAP_FIXED exchange of two memories)', () => {
  it('views follow the exchange; fds and addresses are exchanged and kept; nothing leaks', async () => {
    const snap = resourceSnapshot();
    const src = GuestMemory.create({ size: 4 * 4096 });
    const dst = GuestMemory.createLike(src);
    try {
      const view = src.bytes(4096, 16); // taken before, like a ring's view
      view.fill(0xaa);
      dst.bytes(4096, 16).fill(0x55);
      const [srcFd, dstFd, srcAddr] = [src.regions[0]!.fd, dst.regions[0]!.fd, src.regions[0]!.userAddr];
      const live = Mapping.liveCount;
      src.swapBacking(dst);
      expect([...view.subarray(0, 2)]).to.deep.equal([0x55, 0x55]);
      expect([...dst.bytes(4096, 2)]).to.deep.equal([0xaa, 0xaa]);
      expect([src.regions[0]!.fd, dst.regions[0]!.fd, src.regions[0]!.userAddr]).to.deep.equal([dstFd, srcFd, srcAddr]);
      expect(Mapping.liveCount).to.equal(live);
      view[0] = 1; // the driver now writes the other memory
      expect(dst.bytes(4096, 1)[0]).to.equal(0xaa);
      const other = GuestMemory.create({ size: 4096 });
      expect(() => src.swapBacking(other)).to.throw(/different layouts/);
      other.close();
    } finally {
      src.close();
      dst.close();
    }
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });
});
