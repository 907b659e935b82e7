/**
 * Property tests for the wire format: whatever bytes a peer sends, decoding
 * either yields a value or throws a VhostUserError (never a TypeError, a
 * RangeError from a DataView, ...), and what decodes re-encodes canonically.
 * The framing property runs random byte streams through a real socket pair.
 *
 * fast-check prints the seed and the shrunk counterexample on failure; replay
 * one with `fc.assert(prop, { seed, path })`.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { VhostUserError } from '../../lib/errors.js';
import { VHOST_USER_HDR_SIZE, VHOST_USER_MAX_PAYLOAD } from '../../lib/protocol/constants.js';
import { decodeHeader, encodeHeader } from '../../lib/protocol/header.js';
import type { PayloadCodec } from '../../lib/protocol/payloads.js';
import { allBackendRequestSpecs, allFrontendRequestSpecs } from '../../lib/protocol/requests.js';
import { Connection, type VhostUserMessage } from '../../lib/transport/connection.js';
import { resourceSnapshot, settle } from '../helpers/resources.js';
import { streamPair } from '../helpers/socket-pair.js';

const RUNS = 200;

/** Runs `fn`; a thrown non-VhostUserError fails the property with what was thrown. */
function decodeOrVhostError<T>(fn: () => T): { ok: true; value: T } | { ok: false; error: VhostUserError } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof VhostUserError) return { ok: false, error: e };
    throw new Error(`threw ${(e as Error)?.name ?? typeof e} instead of a VhostUserError: ${String(e)}`, { cause: e });
  }
}

/**
 * Bytes built from little-endian u32 words biased towards 0, small values and
 * all-ones, so size fields, flags and u64 sums land on the interesting edges
 * and enough payloads get through the field checks.
 */
function biasedBytes(minLength: number, maxLength: number): fc.Arbitrary<Uint8Array> {
  const word = fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.constant(0xffffffff) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 3 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  );
  return fc.integer({ min: minLength, max: maxLength }).chain((n) =>
    fc.array(word, { minLength: Math.ceil(n / 4), maxLength: Math.ceil(n / 4) }).map((words) => {
      const out = new Uint8Array(Math.ceil(n / 4) * 4);
      const dv = new DataView(out.buffer);
      words.forEach((w, i) => dv.setUint32(4 * i, w >>> 0, true));
      return out.subarray(0, n);
    }),
  );
}

function u32le(bytes: Uint8Array, off: number, v: number): void {
  if (off + 4 <= bytes.length) new DataView(bytes.buffer, bytes.byteOffset).setUint32(off, v >>> 0, true);
}

// ------------------------------------------------------------------ header

const anyU32 = fc.integer({ min: 0, max: 0xffffffff });
/** Request codes: real ones, 0, just past the table, and anything. */
const requestCode = fc.oneof(fc.integer({ min: 0, max: 60 }), anyU32);
/** Flags: the valid combinations, a wrong version, stray bits, anything. */
const headerFlags = fc.oneof(
  fc.constantFrom(1, 5, 9, 13),
  fc.integer({ min: 0, max: 15 }),
  fc.integer({ min: 0, max: 31 }).map((b) => (1 | (1 << b)) >>> 0),
  anyU32,
);
/** Sizes: small, at the limit, just past it, anything. */
const headerSize = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.constantFrom(VHOST_USER_MAX_PAYLOAD - 1, VHOST_USER_MAX_PAYLOAD, VHOST_USER_MAX_PAYLOAD + 1),
  anyU32,
);

/** A header with random fields, then random payload that may be shorter, exact or longer than `size`. */
const structuredFrame = fc
  .record({
    request: requestCode,
    flags: headerFlags,
    size: headerSize,
    slack: fc.integer({ min: -8, max: 8 }),
    fill: fc.integer({ min: 0, max: 255 }),
  })
  .map(({ request, flags, size, slack, fill }) => {
    const bodyLength = Math.max(0, Math.min(size, VHOST_USER_MAX_PAYLOAD + 16) + slack);
    const out = new Uint8Array(VHOST_USER_HDR_SIZE + bodyLength).fill(fill);
    encodeHeader({ request, flags, size }, out, 0);
    return out;
  });

function checkHeader(bytes: Uint8Array): void {
  const r = decodeOrVhostError(() => decodeHeader(bytes));
  if (!r.ok) return;
  const h = r.value;
  expect(bytes.length).to.be.at.least(VHOST_USER_HDR_SIZE);
  expect(h.flags & 3, 'version').to.equal(1);
  expect(h.flags & ~0xf, 'unknown flag bits').to.equal(0);
  expect(h.size).to.be.at.most(VHOST_USER_MAX_PAYLOAD);
  // The header has no padding: it re-encodes to exactly the bytes it came from.
  const again = new Uint8Array(VHOST_USER_HDR_SIZE);
  encodeHeader(h, again, 0);
  expect(Array.from(again)).to.deep.equal(Array.from(bytes.subarray(0, VHOST_USER_HDR_SIZE)));
}

// ------------------------------------------------------------------ payload codecs

interface NamedCodec {
  /** Every request (and side, and payload/reply) the codec serves. */
  uses: string[];
  codec: PayloadCodec<unknown>;
}

function codecsUnderTest(): NamedCodec[] {
  const byCodec = new Map<PayloadCodec<unknown>, string[]>();
  const add = (codec: PayloadCodec<unknown> | null, use: string): void => {
    if (codec === null) return;
    const uses = byCodec.get(codec) ?? [];
    uses.push(use);
    byCodec.set(codec, uses);
  };
  for (const s of allFrontendRequestSpecs()) {
    add(s.payload, `front-end ${s.name} payload`);
    add(s.reply, `front-end ${s.name} reply`);
  }
  for (const s of allBackendRequestSpecs()) {
    add(s.payload, `back-end ${s.name} payload`);
    add(s.reply, `back-end ${s.name} reply`);
  }
  return [...byCodec].map(([codec, uses]) => ({ codec, uses }));
}

/**
 * Inputs for one codec: plain random bytes; biased bytes of a length the codec
 * accepts; and, for the length-prefixed layouts, a count/size word that agrees
 * with the length so decoding reaches the field checks.
 */
function inputsFor(codec: PayloadCodec<unknown>): fc.Arbitrary<Uint8Array> {
  const max = Math.min(codec.maxSize, 2 * VHOST_USER_MAX_PAYLOAD);
  const sized = fc
    .oneof(fc.constantFrom(codec.minSize, codec.maxSize), fc.integer({ min: codec.minSize, max }))
    .chain((n) => biasedBytes(n, n));
  // Sized, then a few bytes set to small values (u8 fields such as the IOTLB type and permissions).
  const poked = fc
    .tuple(sized, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 4 })), { maxLength: 4 }))
    .map(([b, pokes]) => {
      for (const [at, v] of pokes) if (b.length) b[at % b.length] = v;
      return b;
    });
  const variants: fc.Arbitrary<Uint8Array>[] = [fc.uint8Array({ maxLength: 600 }), sized, poked, biasedBytes(0, 64)];
  if (codec.name === 'Multiple Memory regions description') {
    // num regions 0..9, length 8 + 32n give or take a byte.
    variants.push(
      fc
        .record({ n: fc.integer({ min: 0, max: 9 }), slack: fc.constantFrom(-1, 0, 0, 0, 1) })
        .chain(({ n, slack }) => biasedBytes(Math.max(0, 8 + 32 * n + slack), Math.max(0, 8 + 32 * n + slack)).map((b) => (u32le(b, 0, n), b))),
    );
  }
  if (codec.name === 'Virtio device config space') {
    variants.push(
      fc
        .record({
          offset: fc.oneof(fc.integer({ min: 0, max: 300 }), anyU32),
          size: fc.oneof(fc.integer({ min: 0, max: 300 }), anyU32),
          flags: fc.integer({ min: 0, max: 3 }),
          slack: fc.constantFrom(-1, 0, 0, 0, 1),
        })
        .chain(({ offset, size, flags, slack }) => {
          const n = Math.max(0, Math.min(12 + size + slack, 600));
          return biasedBytes(n, n).map((b) => {
            u32le(b, 0, offset);
            u32le(b, 4, size);
            u32le(b, 8, flags);
            return b;
          });
        }),
    );
  }
  if (codec.name === 'VIRTIO Shared Memory Region configuration') {
    variants.push(
      fc.integer({ min: 0, max: 300 }).chain((n) => biasedBytes(codec.minSize, codec.minSize).map((b) => (u32le(b, 0, n), b))),
    );
  }
  return fc.oneof(...variants);
}

/** Decode, and when it decodes, encode(decode(b)) must be a fixed point of encode∘decode. */
function checkCodec(codec: PayloadCodec<unknown>, bytes: Uint8Array, request: string): boolean {
  const r = decodeOrVhostError(() => codec.decode(bytes, request));
  if (!r.ok) return false;
  expect(bytes.length, 'a decoded payload is within the codec bounds').to.be.within(codec.minSize, codec.maxSize);
  // A value decode accepted must be encodable...
  let once: Uint8Array;
  try {
    once = codec.encode(r.value);
  } catch (e) {
    throw new Error(`${codec.name}: encode(decode(b)) threw ${String(e)}`, { cause: e });
  }
  expect(once.length, 'encode(decode(b)) keeps the length').to.equal(bytes.length);
  // ...and what it encodes to decodes again (same rules) to a value that encodes the same.
  const back = decodeOrVhostError(() => codec.decode(once, request));
  if (!back.ok) throw new Error(`${codec.name}: decode(encode(decode(b))) failed: ${back.error.toLine()}`);
  const twice = codec.encode(back.value);
  expect(Array.from(twice), 'encode(decode(b)) is a fixed point').to.deep.equal(Array.from(once));
  expect(back.value).to.deep.equal(r.value);
  return true;
}

// ------------------------------------------------------------------ framing

type Expected = { messages: { request: number; flags: number; payload: number[] }[]; closeCode: string };

/** What a correct framer makes of `stream`: the whole messages before the first bad header, then how it ends. */
function referenceParse(stream: Uint8Array): Expected {
  const messages: Expected['messages'] = [];
  let at = 0;
  for (;;) {
    if (stream.length - at < VHOST_USER_HDR_SIZE) return { messages, closeCode: 'VHOST_DISCONNECTED' };
    let h;
    try {
      h = decodeHeader(stream.subarray(at, at + VHOST_USER_HDR_SIZE));
    } catch (e) {
      return { messages, closeCode: (e as VhostUserError).code };
    }
    if (stream.length - at - VHOST_USER_HDR_SIZE < h.size) return { messages, closeCode: 'VHOST_DISCONNECTED' };
    const start = at + VHOST_USER_HDR_SIZE;
    messages.push({ request: h.request, flags: h.flags, payload: Array.from(stream.subarray(start, start + h.size)) });
    at = start + h.size;
  }
}

/** A byte stream: random bytes, or frames (mostly valid) with optional garbage after. */
const byteStream = fc.oneof(
  fc.uint8Array({ maxLength: 600 }),
  fc
    .tuple(fc.array(structuredFrame, { minLength: 0, maxLength: 5 }), fc.uint8Array({ maxLength: 40 }))
    .map(([frames, tail]) => {
      const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0) + tail.length);
      let at = 0;
      for (const f of [...frames, tail]) {
        out.set(f, at);
        at += f.length;
      }
      return out;
    }),
);

/** A stream and the points where the sender splits it into separate writes. */
const splitStream = byteStream.chain((bytes) =>
  fc
    .uniqueArray(fc.integer({ min: 1, max: Math.max(1, bytes.length - 1) }), { maxLength: 8 })
    .map((cuts) => ({ bytes, cuts: cuts.filter((c) => c < bytes.length).sort((a, b) => a - b) })),
);

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function frameOnce(bytes: Uint8Array, cuts: number[]): Promise<void> {
  const pair = await streamPair();
  const rx = new Connection(pair.b);
  const got: VhostUserMessage[] = [];
  let strayError: Error | null = null;
  rx.on('message', (m) => {
    got.push(m);
  });
  const closed = new Promise<VhostUserError | undefined>((resolve) => rx.once('close', resolve));
  try {
    let prev = 0;
    for (const cut of [...cuts, bytes.length]) {
      if (cut > prev) {
        try {
          // UnixStream.send takes at most 8 KiB per call.
          for (let at = prev; at < cut; at += 4096) pair.a.send(bytes.subarray(at, Math.min(cut, at + 4096)));
        } catch (e) {
          // The receiver may already have closed on a bad header: EPIPE/ECONNRESET.
          if (!(e instanceof VhostUserError && e.code === 'VHOST_DISCONNECTED')) strayError = e instanceof Error ? e : new Error(String(e));
          break;
        }
      }
      prev = cut;
      // Let the receiver run between writes, so it sees the stream in pieces.
      await new Promise((r) => setImmediate(r));
    }
    // Let queued bytes drain before EOF: UnixStream.close() drops its send queue.
    await settle(1);
    pair.a.close();
    const error = await withTimeout(closed, 2000, 'receiver close');
    if (strayError !== null) throw strayError;
    expect(error, 'the receiver closes with a VhostUserError').to.be.instanceOf(VhostUserError);
    const expected = referenceParse(bytes);
    expect(error!.code).to.equal(expected.closeCode);
    expect(got.map((m) => ({ request: m.request, flags: m.flags, payload: Array.from(m.payload) }))).to.deep.equal(expected.messages);
    for (const m of got) expect(m.fds).to.deep.equal([]);
  } finally {
    rx.close();
    pair.close();
  }
}

// ------------------------------------------------------------------ specs

describe('protocol properties (fast-check)', () => {
  it(`decodeHeader: any bytes give a checked header or a VhostUserError (${RUNS} random + ${RUNS} structured)`, () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), checkHeader), { numRuns: RUNS });
    fc.assert(fc.property(structuredFrame, checkHeader), { numRuns: RUNS });
  });

  const codecs = codecsUnderTest();
  const decodedRuns = new Map<string, number>();
  it('covers every payload and reply codec of the request tables', () => {
    expect(codecs.length).to.be.greaterThan(10);
  });

  for (const { codec, uses } of codecs) {
    it(`${codec.name} (${uses.length} uses): decode returns or throws VhostUserError; encode∘decode is a fixed point`, () => {
      let decoded = 0;
      fc.assert(
        fc.property(inputsFor(codec), fc.constantFrom(...uses), (bytes, use) => {
          if (checkCodec(codec, bytes, use)) decoded++;
        }),
        { numRuns: RUNS },
      );
      decodedRuns.set(codec.name, decoded);
    });
  }

  // Not a correctness property: a guard that the generators reach past the size and field
  // checks for most codecs (per codec it is random; IOTLB and the memory table succeed rarely).
  it('generators reach a successful decode for most codecs', () => {
    const reached = [...decodedRuns.values()].filter((n) => n > 0).length;
    expect(reached, JSON.stringify(Object.fromEntries(decodedRuns))).to.be.at.least(Math.ceil(codecs.length / 2));
  });

  it('Connection framing: random streams split at random points give the reference messages, then a VhostUserError close; no fd leaks (50 runs)', async function () {
    this.timeout(60000);
    const snap = resourceSnapshot();
    await fc.assert(
      fc.asyncProperty(splitStream, async ({ bytes, cuts }) => {
        await frameOnce(bytes, cuts);
      }),
      { numRuns: 50 },
    );
    await settle();
    expect(snap.leaked(), 'fds/maps leaked').to.deep.equal({ fds: 0, maps: 0 });
  });
});
