/**
 * The client against a misbehaving back-end: the reference back-end with each
 * injected fault (lib/backend/faults.ts). Every case asserts the typed error
 * (code and the request or ring it names), that it came within the configured
 * bound, that no fd or mapping was left behind, and that the client works
 * again on a fresh connection (faults fire once).
 */
import { expect } from 'chai';
import { parseFault, ReferenceBackend, type Fault } from '../../lib/backend/reference-backend.js';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { RxBurst, VirtioNet, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { VhostUserError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { buildUdpFrameOfSize, isRarpFrame } from '../../lib/net/frame-builder.js';
import { resourceSnapshot, settle, timerCount } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const TIMEOUT_MS = 300;

/** Runs `body` against a back-end with `faults`, then checks nothing leaked and a fresh connection works. */
async function withFaultyBackend(faults: Fault[], body: (path: string, backend: ReferenceBackend) => Promise<void>): Promise<void> {
  const tmp = tempSocketPath();
  await settle(0); // mocha arms the test's own timeout timer once the test function has returned
  const before = resourceSnapshot();
  const timers = timerCount();
  const backend = ReferenceBackend.listen(tmp.path, { device: 'net', faults });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    await body(tmp.path, backend);
    await settle();
    expect(unhandled, 'unhandled rejections').to.deep.equal([]);
    expect(backend.faults.fired.length, 'the fault fired').to.be.greaterThan(0);
    // Usable again: the next connection is served without the fault.
    const net = await VirtioNet.open(tmp.path, { timeoutMs: 2000 });
    try {
      const frames = Array.from({ length: 8 }, (_, i) => buildUdpFrameOfSize(100, i));
      expect(net.sendBurst(frames)).to.equal(8);
      const burst = new RxBurst();
      let got = 0;
      for (const deadline = Date.now() + 2000; got < 8 && Date.now() < deadline; await settle(1)) got += net.receiveBurst(0, burst);
      expect(got, 'frames looped back on the next connection').to.equal(8);
    } finally {
      net.close();
    }
  } finally {
    process.off('unhandledRejection', onUnhandled);
    backend.close();
    tmp.cleanup();
  }
  await settle();
  expect(before.leaked()).to.deep.equal({ fds: 0, maps: 0 });
  expect(timerCount(), 'timers left running').to.be.at.most(timers);
}

async function rejection(p: Promise<unknown>): Promise<VhostUserError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(VhostUserError);
    return e as VhostUserError;
  }
  throw new Error('expected a rejection, but it resolved');
}

describe('fault injection: the client against a misbehaving reference back-end', function () {
  this.timeout(20_000);

  describe('parseFault', () => {
    it('reads NAME, NAME@REQUEST and NAME@RING, and rejects the rest with VHOST_INVALID_ARGUMENT', () => {
      expect(parseFault('no-reply')).to.deep.equal({ name: 'no-reply' });
      expect(parseFault('nak@set_mem_table')).to.deep.equal({ name: 'nak', request: 'SET_MEM_TABLE' });
      expect(parseFault('wrong-size@VHOST_USER_GET_FEATURES')).to.deep.equal({ name: 'wrong-size', request: 'GET_FEATURES' });
      expect(parseFault('used-idx-jump@1')).to.deep.equal({ name: 'used-idx-jump', ring: 1 });
      for (const bad of ['explode', 'nak@NOT_A_REQUEST', 'stop-ring@GET_FEATURES', 'used-duplicate@-1']) {
        expect(() => parseFault(bad), bad).to.throw(VhostUserError).with.property('code', 'VHOST_INVALID_ARGUMENT');
      }
    });
  });

  describe('reply faults', () => {
    // [fault, the code the client must report]
    const cases: [Fault['name'], string][] = [
      ['wrong-code', 'VHOST_REPLY_MISMATCH'],
      ['wrong-flags', 'VHOST_BAD_REPLY_FLAGS'],
      ['wrong-size', 'VHOST_BAD_REPLY_SIZE'],
      ['huge-size', 'VHOST_PAYLOAD_TOO_LARGE'],
      ['unexpected-fds', 'VHOST_UNEXPECTED_FDS'],
      ['no-reply', 'VHOST_TIMEOUT'],
      ['late-reply', 'VHOST_TIMEOUT'],
    ];
    // A reply of its own (GET_QUEUE_NUM) and a REPLY_ACK (SET_MEM_TABLE).
    for (const request of ['GET_QUEUE_NUM', 'SET_MEM_TABLE']) {
      for (const [name, code] of cases) {
        it(`${name}@${request}: ${code} naming ${request} within the timeout; the client is broken, then works on reconnect`, async () => {
          await withFaultyBackend([{ name, request, delayMs: TIMEOUT_MS * 3 }], async (path) => {
            const client = await VhostUserClient.connect(path, { timeoutMs: TIMEOUT_MS });
            const memory = GuestMemory.create({ size: 2 * 1024 * 1024 });
            const disconnected = new Promise<VhostUserError>((r) => client.once('disconnect', r));
            try {
              const t0 = Date.now();
              const err = await rejection(
                (async () => {
                  await client.negotiate();
                  await client.setMemTable(memory);
                })(),
              );
              const ms = Date.now() - t0;
              expect(err.code, err.message).to.equal(code);
              expect(err.request).to.equal(request);
              expect(ms).to.be.below(TIMEOUT_MS + 500);
              expect((await disconnected).code).to.equal(code);
              expect(client.isBroken).to.equal(true);
              const after = await rejection(client.getFeatures());
              expect(after.code).to.equal('VHOST_CLIENT_BROKEN');
            } finally {
              client.close();
              memory.close();
            }
          });
        });
      }
    }

    it('late-reply within the timeout is just a slow answer', async () => {
      await withFaultyBackend([{ name: 'late-reply', request: 'GET_FEATURES', delayMs: 100 }], async (path) => {
        const client = await VhostUserClient.connect(path, { timeoutMs: 2000 });
        try {
          const t0 = Date.now();
          const n = await client.negotiate();
          expect(Date.now() - t0).to.be.at.least(90);
          expect(n.queueNum).to.equal(8);
        } finally {
          client.close();
        }
      });
    });

    it('nak@SET_MEM_TABLE: VHOST_NACK naming it; the client stays usable on the same connection', async () => {
      await withFaultyBackend([{ name: 'nak', request: 'SET_MEM_TABLE' }], async (path) => {
        const client = await VhostUserClient.connect(path, { timeoutMs: 2000 });
        const memory = GuestMemory.create({ size: 2 * 1024 * 1024 });
        try {
          await client.negotiate();
          const err = await rejection(client.setMemTable(memory));
          expect(err.code).to.equal('VHOST_NACK');
          expect(err.request).to.equal('SET_MEM_TABLE');
          expect(client.isBroken).to.equal(false);
          await client.setMemTable(memory); // the fault fired once: accepted now
          expect(await client.getQueueNum()).to.equal(8);
        } finally {
          client.close();
          memory.close();
        }
      });
    });
  });

  describe('disconnect before and after each request of a virtio-net start', () => {
    // Every request VirtioNet.open sends to the reference back-end, in order.
    const sequence = [
      'GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'GET_MAX_MEM_SLOTS', 'SET_OWNER',
      'SET_FEATURES', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_BASE', 'SET_VRING_CALL', 'SET_VRING_KICK',
      'SET_VRING_ENABLE', 'GET_CONFIG', 'SET_STATUS',
    ];
    for (const when of ['before', 'after'] as const) {
      it(`disconnect-${when}@each: a typed error naming a request, or a disconnect event, within the timeout; nothing leaks`, async () => {
        for (const request of sequence) {
          await withFaultyBackend([{ name: `disconnect-${when}`, request }], async (path) => {
            const t0 = Date.now();
            let err: VhostUserError;
            try {
              const net = await VirtioNet.open(path, { timeoutMs: TIMEOUT_MS });
              // Only after the very last request can the start complete.
              expect(`${when}@${request}`).to.equal('after@SET_STATUS');
              err = net.client.error ?? (await new Promise<VhostUserError>((r) => net.once('disconnect', r)));
              net.close();
            } catch (e) {
              expect(e, String(e)).to.be.instanceOf(VhostUserError);
              err = e as VhostUserError;
              expect(err.request, `${when}@${request}: ${err.message}`).to.be.a('string');
              // With REPLY_ACK every request waits for an answer, so the error names the request hit.
              if (when === 'before' && sequence.indexOf(request) > sequence.indexOf('SET_PROTOCOL_FEATURES')) expect(err.request).to.equal(request);
            }
            expect(['VHOST_DISCONNECTED', 'VHOST_CLIENT_BROKEN', 'VHOST_SOCKET_ERROR'], `${when}@${request}: ${err.toLine()}`).to.include(err.code);
            expect(Date.now() - t0).to.be.below(TIMEOUT_MS + 500);
          });
        }
      });
    }
  });

  describe('used-ring faults', () => {
    const cases: [Fault['name'], number, Record<RingKind, string>][] = [
      ['used-id-out-of-range', 1, { split: 'VHOST_RING_ID_OUT_OF_RANGE', packed: 'VHOST_RING_ID_OUT_OF_RANGE' }],
      ['used-id-not-outstanding', 1, { split: 'VHOST_RING_ID_NOT_OUTSTANDING', packed: 'VHOST_RING_ID_NOT_OUTSTANDING' }],
      ['used-len-too-large', 1, { split: 'VHOST_RING_LEN_TOO_LARGE', packed: 'VHOST_RING_LEN_TOO_LARGE' }],
      ['used-len-too-large', 0, { split: 'VHOST_RING_LEN_TOO_LARGE', packed: 'VHOST_RING_LEN_TOO_LARGE' }],
      // Two completions for one buffer: the split index then runs ahead of what is outstanding.
      ['used-duplicate', 1, { split: 'VHOST_RING_IDX_JUMP', packed: 'VHOST_RING_IDX_JUMP' }],
      ['used-idx-jump', 1, { split: 'VHOST_RING_IDX_JUMP', packed: 'VHOST_RING_IDX_JUMP' }],
    ];
    for (const ring of ['split', 'packed'] as const) {
      for (const [name, index, codes] of cases) {
        it(`${ring} ${name}@${index}: ${codes[ring]} from the driver, then the queue stays broken`, async () => {
          await withFaultyBackend([{ name, ring: index }], async (path) => {
            const net = await VirtioNet.open(path, { timeoutMs: 2000, ring });
            try {
              const frame = buildUdpFrameOfSize(200, 1);
              const burst = new RxBurst();
              expect(net.sendBurst([frame])).to.equal(1);
              const t0 = Date.now();
              let err: unknown = null;
              while (err === null && Date.now() - t0 < 1000) {
                try {
                  net.txInFlight(0);
                  net.receiveBurst(0, burst);
                } catch (e) {
                  err = e;
                }
                await settle(1);
              }
              expect(err, 'no error within 1 s').to.be.instanceOf(VhostUserError);
              const e = err as VhostUserError;
              expect(e.code, e.message).to.equal(codes[ring]);
              expect(e.message).to.match(new RegExp(`^vring ${index}: `));
              // Broken for good: the same error again, not a misread ring.
              expect(() => (index === 1 ? net.txInFlight(0) : net.receiveBurst(0, burst))).to.throw(VhostUserError);
            } finally {
              net.close();
            }
          });
        });
      }
    }

    it('stop-ring@1: nothing completes on the TX ring while RX keeps its buffers', async () => {
      await withFaultyBackend([{ name: 'stop-ring', ring: 1 }], async (path, backend) => {
        const net = await VirtioNet.open(path, { timeoutMs: 2000 });
        try {
          expect(net.sendBurst([buildUdpFrameOfSize(100, 0), buildUdpFrameOfSize(100, 1)])).to.equal(2);
          expect(net.counters(0).kicks, 'the back-end was kicked for the TX ring').to.be.above(0);
          // The quiet period ends with an event, not a timer: SEND_RARP goes after the kick, and
          // the back-end puts its RARP frame on RX ring 0 (which it still serves). The kick was
          // pending before the request was sent, so by the time that frame is here the back-end
          // has had the kick; the TX buffers must still be outstanding.
          await net.client.sendRarp(Uint8Array.of(0x52, 0x54, 0, 0, 0, 1));
          const burst = new RxBurst();
          let rarp = 0;
          for (const deadline = Date.now() + 2000; rarp === 0 && Date.now() < deadline; await settle(1)) {
            for (let i = net.receiveBurst(0, burst) - 1; i >= 0; i--) if (isRarpFrame(burst.frame(i))) rarp++;
          }
          expect(rarp, 'the RARP frame sent after the kick came back on RX').to.equal(1);
          expect(net.txInFlight(0)).to.equal(2);
          expect(backend.net.frames).to.equal(0);
        } finally {
          net.close();
        }
      });
    });
  });
});
