import { expect } from 'chai';
import {
  FrontendRequest,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VringState,
  decodeHeader,
  encodeHeader,
  encodeMessage,
  isReply,
  needsReply,
} from '../../lib/protocol/index.js';
import { hex, thrown, toHex } from './hex.js';

function header(request: number, flags: number, size: number): Uint8Array {
  const out = new Uint8Array(12);
  encodeHeader({ request, flags, size }, out);
  return out;
}

describe('protocol header', () => {
  const roundTrips: [string, { request: number; flags: number; size: number }, string][] = [
    ['GET_FEATURES request', { request: 1, flags: 0x1, size: 0 }, '01000000 01000000 00000000'],
    ['GET_FEATURES reply', { request: 1, flags: 0x5, size: 8 }, '01000000 05000000 08000000'],
    ['NEED_REPLY request', { request: 20, flags: 0x9, size: 8 }, '14000000 09000000 08000000'],
    ['largest payload', { request: 5, flags: 0x1, size: 4096 }, '05000000 01000000 00100000'],
  ];
  for (const [name, h, bytes] of roundTrips) {
    it(`round-trips ${name}`, () => {
      expect(toHex(header(h.request, h.flags, h.size))).to.equal(toHex(hex(bytes)));
      expect(decodeHeader(hex(bytes))).to.deep.equal(h);
    });
  }

  it('encodes at an offset and decodes only the first 12 bytes', () => {
    const buf = new Uint8Array(20).fill(0xee);
    encodeHeader({ request: 11, flags: 1, size: 8 }, buf, 4);
    expect(toHex(buf)).to.equal('eeeeeeee' + '0b000000' + '01000000' + '08000000' + 'eeeeeeee');
    expect(decodeHeader(buf.subarray(4))).to.deep.equal({ request: 11, flags: 1, size: 8 });
  });

  it('encodeMessage joins header and payload', () => {
    const msg = encodeMessage(
      FrontendRequest.GET_VRING_BASE,
      VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK,
      VringState.encode({ index: 1, num: 0 }),
    );
    expect(toHex(msg)).to.equal(toHex(hex('0b000000 09000000 08000000 01000000 00000000')));
    expect(toHex(encodeMessage(3, 1))).to.equal(toHex(hex('03000000 01000000 00000000')));
  });

  it('reads the REPLY and NEED_REPLY bits', () => {
    expect(isReply(0x5)).to.equal(true);
    expect(isReply(0x9)).to.equal(false);
    expect(needsReply(0x9)).to.equal(true);
    expect(needsReply(0x5)).to.equal(false);
    expect(isReply(0xd) && needsReply(0xd)).to.equal(true);
    expect(VHOST_USER_REPLY_MASK | VHOST_USER_VERSION).to.equal(5);
  });

  const rejects: [string, Uint8Array, string][] = [
    ['version 0', header(1, 0x0, 0), 'VHOST_BAD_VERSION'],
    ['version 2', header(1, 0x2, 0), 'VHOST_BAD_VERSION'],
    ['version 3', header(1, 0x3, 0), 'VHOST_BAD_VERSION'],
    ['version 0 with REPLY', header(1, 0x4, 0), 'VHOST_BAD_VERSION'],
    ['version 0 and unknown bit (version first)', header(1, 0x10, 0), 'VHOST_BAD_VERSION'],
    ['flag bit 4', header(1, 0x11, 0), 'VHOST_BAD_FLAGS'],
    ['flag bit 31', header(1, 0x80000001, 0), 'VHOST_BAD_FLAGS'],
    ['size 4097', header(1, 0x1, 4097), 'VHOST_PAYLOAD_TOO_LARGE'],
    ['size 0x7fffffff', header(1, 0x1, 0x7fffffff), 'VHOST_PAYLOAD_TOO_LARGE'],
    ['size 0xffffffff', header(1, 0x5, 0xffffffff), 'VHOST_PAYLOAD_TOO_LARGE'],
    ['11 bytes', new Uint8Array(11), 'VHOST_INVALID_ARGUMENT'],
    ['no bytes', new Uint8Array(0), 'VHOST_INVALID_ARGUMENT'],
  ];
  for (const [name, bytes, code] of rejects) {
    it(`decode rejects ${name} with ${code}`, () => {
      const err = thrown(() => decodeHeader(bytes));
      expect(err.code).to.equal(code);
      if (code !== 'VHOST_INVALID_ARGUMENT') expect(err.rule).to.be.a('string');
    });
  }

  it('encodes malformed headers on purpose (for conformance tests)', () => {
    expect(toHex(header(0, 0x2, 0x7fffffff))).to.equal('00000000' + '02000000' + 'ffffff7f');
  });

  const badFields: [string, () => void][] = [
    ['negative request', () => header(-1, 1, 0)],
    ['request above u32', () => header(2 ** 32, 1, 0)],
    ['fractional size', () => header(1, 1, 1.5)],
    ['no room in target', () => encodeHeader({ request: 1, flags: 1, size: 0 }, new Uint8Array(11))],
    ['offset past room', () => encodeHeader({ request: 1, flags: 1, size: 0 }, new Uint8Array(12), 1)],
  ];
  for (const [name, fn] of badFields) {
    it(`encode rejects ${name} with VHOST_INVALID_ARGUMENT`, () => {
      expect(thrown(fn).code).to.equal('VHOST_INVALID_ARGUMENT');
    });
  }
});
