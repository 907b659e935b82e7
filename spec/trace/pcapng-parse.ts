/**
 * A small pcapng reader for the specs: walks the blocks, checks each block's two
 * length fields agree and are multiples of 4, and decodes the SHB, IDBs and EPBs
 * with their options. Structural, independent of the writer's code.
 */
import { expect } from 'chai';

export interface ParsedBlock {
  type: number;
  length: number;
  body: DataView;
  options: Map<number, Uint8Array[]>;
}

export interface ParsedEpb {
  interfaceId: number;
  timestampNs: bigint;
  capLen: number;
  origLen: number;
  data: Uint8Array;
  flags: number | undefined;
  comment: string | undefined;
}

function parseOptions(bytes: Uint8Array, start: number, end: number): Map<number, Uint8Array[]> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  const out = new Map<number, Uint8Array[]>();
  let p = start;
  while (p + 4 <= end) {
    const code = dv.getUint16(p, true);
    const len = dv.getUint16(p + 2, true);
    if (code === 0) {
      expect(len, 'opt_endofopt length').to.equal(0);
      expect(p + 4, 'opt_endofopt is the last option').to.equal(end);
      return out;
    }
    expect(p + 4 + len, `option ${code} fits its block`).to.be.at.most(end);
    for (let i = len; i < ((len + 3) & ~3); i++) expect(bytes[p + 4 + i], 'option padding is zero').to.equal(0);
    out.set(code, [...(out.get(code) ?? []), bytes.slice(p + 4, p + 4 + len)]);
    p += 4 + ((len + 3) & ~3);
  }
  expect(p, 'options end at the trailer').to.equal(end);
  return out;
}

const BODY_FIXED: Record<number, number> = { 0x0a0d0d0a: 16, 1: 8 };

export function parsePcapng(file: Uint8Array): { blocks: ParsedBlock[]; epbs: ParsedEpb[]; idbs: { linkType: number; snaplen: number; options: Map<number, Uint8Array[]> }[] } {
  const bytes = new Uint8Array(file); // a copy: slices of a Buffer would share the whole pool
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const blocks: ParsedBlock[] = [];
  const epbs: ParsedEpb[] = [];
  const idbs: { linkType: number; snaplen: number; options: Map<number, Uint8Array[]> }[] = [];
  let p = 0;
  while (p < bytes.length) {
    const type = dv.getUint32(p, true);
    const length = dv.getUint32(p + 4, true);
    expect(length % 4, `block at ${p}: length multiple of 4`).to.equal(0);
    expect(p + length, `block at ${p} fits the file`).to.be.at.most(bytes.length);
    expect(dv.getUint32(p + length - 4, true), `block at ${p}: trailing length`).to.equal(length);
    const body = new DataView(bytes.buffer, bytes.byteOffset + p + 8, length - 12);
    let fixed = BODY_FIXED[type];
    if (type === 6) fixed = 20 + ((body.getUint32(12, true) + 3) & ~3);
    expect(fixed, `known block type 0x${type.toString(16)}`).to.not.equal(undefined);
    const options = parseOptions(bytes, p + 8 + fixed!, p + length - 4);
    blocks.push({ type, length, body, options });
    if (type === 0x0a0d0d0a) {
      expect(body.getUint32(0, true)).to.equal(0x1a2b3c4d);
      expect(body.getUint16(4, true)).to.equal(1);
    } else if (type === 1) {
      idbs.push({ linkType: body.getUint16(0, true), snaplen: body.getUint32(4, true), options });
    } else if (type === 6) {
      const capLen = body.getUint32(12, true);
      const start = p + 8 + 20;
      for (let i = capLen; i < ((capLen + 3) & ~3); i++) expect(bytes[start + i], 'packet padding is zero').to.equal(0);
      const flags = options.get(2)?.[0];
      const comment = options.get(1)?.[0];
      epbs.push({
        interfaceId: body.getUint32(0, true),
        timestampNs: (BigInt(body.getUint32(4, true)) << 32n) | BigInt(body.getUint32(8, true)),
        capLen,
        origLen: body.getUint32(16, true),
        data: bytes.slice(start, start + capLen),
        flags: flags ? new DataView(flags.buffer).getUint32(0, true) : undefined,
        comment: comment ? new TextDecoder().decode(comment) : undefined,
      });
    }
    p += length;
  }
  expect(blocks[0]?.type, 'the file starts with a section header').to.equal(0x0a0d0d0a);
  return { blocks, epbs, idbs };
}
