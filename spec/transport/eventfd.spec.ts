/**
 * EventFd.waitAny: the blocking poll(2) wait BlkBatch.wait sleeps in, on real eventfds.
 */
import { expect } from 'chai';
import { EventFd } from '../../lib/transport/eventfd.js';

describe('EventFd.waitAny', () => {
  it('times out with 0 when nothing is signalled, after about the timeout', () => {
    const a = new EventFd();
    try {
      const t0 = performance.now();
      expect(EventFd.waitAny([a], 1, 30)).to.equal(0);
      const took = performance.now() - t0;
      expect(took).to.be.at.least(25);
      expect(took).to.be.below(2000);
      expect(EventFd.waitAny([a], 1, 0)).to.equal(0, 'timeout 0 only looks');
    } finally {
      a.close();
    }
  });

  it('returns how many were signalled, consumes their counters, and skips null and entries past count', () => {
    const a = new EventFd();
    const b = new EventFd();
    const c = new EventFd();
    try {
      b.signal();
      b.signal();
      c.signal();
      expect(EventFd.waitAny([a, null, b, c], 3, 1000)).to.equal(1, 'c is past count');
      expect(b.consume()).to.equal(0n, "b's counter was consumed");
      expect(c.consume()).to.equal(1n, 'c was left alone');
      expect(EventFd.waitAny([a, b], 2, 0)).to.equal(0);
    } finally {
      for (const e of [a, b, c]) e.close();
    }
  });

  it('a closed eventfd is skipped, not polled', () => {
    const a = new EventFd();
    a.signal();
    a.close();
    expect(EventFd.waitAny([a], 1, 10)).to.equal(0);
  });
});
