import { expect } from 'chai';
import { Mapping, MAX_VIEW_LENGTH } from '../../lib/native/mapping.js';
import { resourceSnapshot } from '../helpers/resources.js';

describe('Mapping', () => {
  it('hands out views, refuses ranges outside or too large, and unmaps on close', () => {
    const snap = resourceSnapshot();
    const m = Mapping.anonymous(1 << 20);
    const v = m.bytes(4096, 16);
    v[0] = 42;
    expect(m.dataView(4096, 1).getUint8(0)).to.equal(42);
    expect(() => m.bytes((1 << 20) - 1, 2)).to.throw().with.property('code', 'VHOST_MEMORY_OUT_OF_RANGE');
    expect(() => m.bytes(-1, 1)).to.throw().with.property('code', 'VHOST_MEMORY_OUT_OF_RANGE');
    expect(MAX_VIEW_LENGTH).to.equal(2 ** 30);
    m.close();
    m.close();
    expect(v.length).to.equal(0);
    expect(snap.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  });

  it('rejects zero and non-integer lengths', () => {
    expect(() => Mapping.anonymous(0)).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
    expect(() => Mapping.anonymous(1.5)).to.throw().with.property('code', 'VHOST_INVALID_ARGUMENT');
  });
});
