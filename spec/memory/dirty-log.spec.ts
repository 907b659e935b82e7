/**
 * DirtyLog: the bitmap of SET_LOG_BASE, checked through a second mapping of the
 * same memfd, as the front-end reading it during migration would.
 */
import { expect } from 'chai';
import { DirtyLog } from '../../lib/memory/dirty-log.js';
import { VHOST_LOG_PAGE } from '../../lib/protocol/constants.js';
import { VhostUserError } from '../../lib/errors.js';
import { C, closeFd, libc } from '../../lib/native/libc.js';
import { Mapping } from '../../lib/native/mapping.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';

function memfd(size: number): number {
  const fd = libc.memfd_create('log', C.MFD_CLOEXEC);
  expect(libc.ftruncate(fd, size)).to.equal(0);
  return fd;
}

describe('DirtyLog (the bitmap of SET_LOG_BASE)', () => {
  it('sets one bit per 4 KiB page written, bit p % 8 of byte p / 8, at the given mmap offset', async () => {
    const snap = resourceSnapshot();
    const fd = memfd(8192);
    const log = DirtyLog.map(fd, 100n, 4196n, 'SET_LOG_BASE'); // an offset that is not page aligned
    const front = Mapping.map(fd, 8192);
    closeFd(fd);
    try {
      log.mark(0, 1); // page 0
      log.mark(9 * VHOST_LOG_PAGE - 1, 2); // pages 8 and 9, straddling
      log.mark(20 * VHOST_LOG_PAGE, 0); // nothing written, nothing logged
      const bits = front.bytes(4196, 100);
      expect([...bits.subarray(0, 3)]).to.deep.equal([0b0000_0001, 0b0000_0011, 0]);
      expect(log.pages).to.equal(800);
      expect(() => log.mark(800 * VHOST_LOG_PAGE, 1)).to.throw(VhostUserError).with.property('code', 'VHOST_MEMORY_OUT_OF_RANGE');
    } finally {
      log.close();
      front.close();
    }
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('create() sizes a zeroed memfd log for guest memory; sync() returns the marked pages and clears them', async () => {
    const snap = resourceSnapshot();
    const log = DirtyLog.create(64 * 1024 * 1024); // 16384 pages: 2048 bytes, one page of memfd
    try {
      expect(log.size).to.equal(4096);
      expect(log.fd).to.be.at.least(0);
      expect(log.sync()).to.deep.equal([]);
      log.mark(5 * VHOST_LOG_PAGE + 10, 1);
      log.mark(16383 * VHOST_LOG_PAGE, VHOST_LOG_PAGE);
      log.mark(0, 2 * VHOST_LOG_PAGE);
      expect(log.sync()).to.deep.equal([0, 1, 5, 16383]);
      expect(log.sync()).to.deep.equal([]);
    } finally {
      log.close();
    }
    await settle();
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('refuses a log of 0 bytes, and an fd that cannot be mapped, as violations', () => {
    const fd = memfd(4096);
    try {
      expect(() => DirtyLog.map(fd, 0n, 0n, 'SET_LOG_BASE')).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_PAYLOAD');
    } finally {
      closeFd(fd);
    }
    expect(() => DirtyLog.map(-1, 4096n, 0n, 'SET_LOG_BASE')).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_PAYLOAD');
  });
});
