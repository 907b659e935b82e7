/**
 * Reconnect: the back-end is killed with SIGKILL in the middle of traffic and
 * started again on the same socket; VirtioNet (reconnect on) gets it back,
 * replays features, memory and rings from where the old back-end stopped, and
 * traffic continues. Against the reference loopback every frame carries a
 * sequence number, so duplicates and losses are counted exactly.
 */
import { expect } from 'chai';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { VirtioNet, type ReconnectReport, type RingKind } from '../../lib/devices/net/virtio-net.js';
import { VhostUserError } from '../../lib/errors.js';
import { liveBackends, makeTempDir } from '../../lib/launch/backend-process.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { startReferenceBackend, type ReferenceBackendProcess } from '../../lib/launch/reference-backend.js';
import { UnixListener } from '../../lib/transport/unix-listener.js';
import { skipWithout } from '../helpers/backends.js';
import { leakedAfter, resourceSnapshot, settle, timerCount } from '../helpers/resources.js';
import { SequencedTraffic } from '../helpers/traffic.js';

function nextEvent<T>(net: VirtioNet, event: 'reconnect' | 'disconnect', ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no '${event}' event within ${ms} ms`)), ms);
    net.once(event, (x: unknown) => {
      clearTimeout(t);
      resolve(x as T);
    });
  });
}

/**
 * Stops the stream and returns how many frames never came back. One last frame is
 * sent behind the others and awaited: the reference loopback and dpdk-testpmd (io,
 * one queue pair) both forward in ring order, so once that frame is back every
 * earlier frame that was still coming has come; what is missing then was lost, not
 * late, and a duplicate would have come by then too.
 */
async function drain(net: VirtioNet, t: SequencedTraffic): Promise<number> {
  const last = t.sent;
  await t.run(last + 1, Number.MAX_SAFE_INTEGER, () => t.seen.has(last), 10_000);
  expect(t.seen.has(last), 'a frame sent after the stream came back').to.equal(true);
  expect(net.txInFlight(0), 'the restarted back-end took every frame from the TX ring').to.equal(0);
  return t.sent - t.received;
}

describe('virtio-net reconnect after the back-end is killed mid-traffic', function () {
  this.timeout(60_000);
  let dir: string;
  let snap: ReturnType<typeof resourceSnapshot>;
  const backends: { stop(): Promise<void> }[] = [];
  let net: VirtioNet | null = null;

  let timers: number;
  beforeEach(async () => {
    await settle(0); // so mocha's timer for this hook is armed, as it is for afterEach's below
    snap = resourceSnapshot();
    timers = timerCount();
    dir = await makeTempDir('vhost-reconnect-');
  });
  afterEach(async () => {
    net?.close();
    net = null;
    for (const b of backends.splice(0)) await b.stop();
    await rm(dir, { recursive: true, force: true });
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
    expect(liveBackends(), 'back-end processes left running').to.have.length(0);
    expect(timerCount(), 'timers left running').to.be.at.most(timers);
  });

  // 'busy': killed while it works through a backlog of 400 frames; 'stopped': SIGSTOPped first,
  // so the frames sent meanwhile sit unprocessed in the TX ring and must be resumed by the next one.
  for (const [ring, when] of [['split', 'busy'], ['split', 'stopped'], ['packed', 'busy'], ['packed', 'stopped']] as [RingKind, string][]) {
    it(`reference loopback, ${ring} rings, killed while ${when}: no frame twice, every loss within what was in flight, traffic resumes`, async () => {
      const socketPath = path.join(dir, 'ref.sock');
      let backend: ReferenceBackendProcess = await startReferenceBackend({ socketPath });
      backends.push(backend);
      net = await VirtioNet.open(socketPath, { ring, timeoutMs: 2000, reconnect: { timeoutMs: 15_000 } });
      const t = new SequencedTraffic(net);
      const TOTAL = 6000;
      await t.run(TOTAL, 200, () => t.received >= 2000, 20_000);
      expect(t.received).to.be.at.least(2000);
      // Frames in flight, then the kill: nothing runs here between the two.
      if (when === 'stopped') process.kill(backend.pid, 'SIGSTOP');
      for (let i = 0; i < 13; i++) t.step(TOTAL, 400);
      const reconnected = nextEvent<ReconnectReport>(net, 'reconnect', 20_000);
      await backend.kill9();
      const inFlightAtKill = t.sent - t.received;
      backend = await startReferenceBackend({ socketPath });
      backends.push(backend);
      const report = await reconnected;
      await t.run(TOTAL, 200, () => t.sent === TOTAL && t.sent - t.received <= inFlightAtKill && net!.txInFlight(0) === 0, 20_000);
      // The last completions, up to a frame sent behind them (the loopback keeps ring order).
      const lost = await drain(net, t);
      process.stdout.write(
        `      ${ring}: ${t.sent} sent, ${t.received} received, ${t.duplicates} duplicates, ${lost} lost; ` +
          `${inFlightAtKill} in flight at the kill; reconnect after ${report.attempts} attempt(s), ${report.downMs} ms, ` +
          `resumed ${report.queues[0]!.txResumed} TX / ${report.queues[0]!.rxResumed} RX buffers\n`,
      );
      expect(t.sent).to.equal(TOTAL + 1); // the last one from drain()
      expect(t.corrupt).to.equal(0);
      expect(t.duplicates).to.equal(0);
      expect(lost).to.be.at.least(0).and.at.most(inFlightAtKill);
      expect(t.received, 'traffic resumed after the reconnect').to.be.above(TOTAL - inFlightAtKill - 1);
      expect(net.reconnects).to.equal(1);
      expect(net.client.isBroken).to.equal(false);
      if (when === 'stopped') expect(report.queues[0]!.txResumed, 'TX buffers handed to the new back-end').to.be.above(0);
    });
  }

  it('gives up with a typed error when no back-end comes back within the reconnect timeout', async () => {
    const socketPath = path.join(dir, 'ref.sock');
    const backend = await startReferenceBackend({ socketPath });
    backends.push(backend);
    net = await VirtioNet.open(socketPath, { timeoutMs: 1000, reconnect: { timeoutMs: 600 } });
    const gaveUp = nextEvent<VhostUserError>(net, 'disconnect', 10_000);
    const t0 = Date.now();
    await backend.kill9();
    const err = await gaveUp;
    expect(err).to.be.instanceOf(VhostUserError);
    expect(['VHOST_CONNECT_TIMEOUT', 'VHOST_DISCONNECTED']).to.include(err.code);
    expect(err.message).to.match(/reconnecting gave up/);
    expect(Date.now() - t0).to.be.below(3000);
  });

  it('close() while reconnecting stops the attempts and leaves no fd, mapping or timer', async () => {
    const socketPath = path.join(dir, 'ref.sock');
    const backend = await startReferenceBackend({ socketPath });
    backends.push(backend);
    net = await VirtioNet.open(socketPath, { timeoutMs: 1000, reconnect: { timeoutMs: 20_000, initialDelayMs: 200 } });
    const reconnecting = new Promise<VhostUserError>((r) => net!.once('reconnecting', r));
    let gaveUp = false;
    net.once('disconnect', () => (gaveUp = true));
    await backend.kill9();
    expect((await reconnecting).code).to.equal('VHOST_DISCONNECTED');
    // Not a quiet-period check: this only places close() among the refused attempts (the stale
    // socket refuses them) rather than before the first; any length would do.
    await settle(300);
    net.close();
    net = null;
    // No timer left (the backoff pause, the connect retry) means the reconnect loop has ended:
    // nothing is pending that could still emit 'disconnect'.
    for (const deadline = Date.now() + 2000; timerCount() > timers && Date.now() < deadline; ) await new Promise((r) => setImmediate(r));
    expect(timerCount(), 'timers of the reconnect loop').to.be.at.most(timers);
    expect(gaveUp, 'no disconnect event after close()').to.equal(false);
  });

  describe('@integration dpdk-testpmd', () => {
    before(function () {
      skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    });

    it('client mode: testpmd (io forwarding) killed and restarted on the same socket; no frame twice, every loss within what was in flight, traffic resumes', async () => {
      const socketPath = path.join(dir, 'pmd.sock');
      let pmd: TestpmdBackend = await startTestpmd({ socketPath, forwardMode: 'io' });
      backends.push(pmd);
      net = await VirtioNet.open(socketPath, { timeoutMs: 5000, reconnect: { timeoutMs: 30_000 } });
      const t = new SequencedTraffic(net);
      await t.run(1_000_000, 64, () => t.received >= 500, 20_000);
      expect(t.received).to.be.at.least(500);
      for (let i = 0; i < 4; i++) t.step(1_000_000, 128);
      const reconnected = nextEvent<ReconnectReport>(net, 'reconnect', 40_000);
      await pmd.kill9();
      const before = t.received;
      const inFlightAtKill = t.sent - before;
      pmd = await startTestpmd({ socketPath, forwardMode: 'io' });
      backends.push(pmd);
      const report = await reconnected;
      await t.run(1_000_000, 64, () => t.received >= before + 500, 20_000);
      const lost = await drain(net, t);
      process.stdout.write(
        `      testpmd: ${t.sent} sent, ${t.received} distinct received, ${t.duplicates} duplicates, ${lost} lost; ` +
          `${inFlightAtKill} in flight at the kill; reconnect after ${report.attempts} attempt(s), ${report.downMs} ms, ` +
          `resumed ${report.queues[0]!.txResumed} TX / ${report.queues[0]!.rxResumed} RX\n`,
      );
      expect(t.received, 'frames came back after the restart').to.be.at.least(before + 500);
      expect(t.corrupt).to.equal(0);
      expect(t.duplicates, 'frames delivered twice').to.equal(0);
      expect(lost, 'frames lost (at most those in flight at the kill)').to.be.at.least(0).and.at.most(inFlightAtKill);
      expect(net.reconnects).to.equal(1);
      expect(net.client.isBroken).to.equal(false);
    });

    it('server mode: testpmd (client=1) killed and restarted connects again; the driver accepts it, no frame twice, every loss within what was in flight', async () => {
      const socketPath = path.join(dir, 'listen.sock');
      const listener = UnixListener.listen(socketPath);
      backends.push({ stop: async () => listener.close() });
      let pmd: TestpmdBackend = await startTestpmd({ socketPath, client: true, forwardMode: 'io' });
      backends.push(pmd);
      net = await VirtioNet.accept(listener, { timeoutMs: 5000, acceptTimeoutMs: 15_000, reconnect: { timeoutMs: 30_000 } });
      const t = new SequencedTraffic(net);
      await t.run(1_000_000, 64, () => t.received >= 500, 20_000);
      expect(t.received).to.be.at.least(500);
      const reconnected = nextEvent<ReconnectReport>(net, 'reconnect', 40_000);
      await pmd.kill9();
      const before = t.received;
      const inFlightAtKill = t.sent - before;
      pmd = await startTestpmd({ socketPath, client: true, forwardMode: 'io' });
      backends.push(pmd);
      const report = await reconnected;
      await t.run(1_000_000, 64, () => t.received >= before + 500, 20_000);
      const lost = await drain(net, t);
      process.stdout.write(
        `      testpmd client=1: ${t.sent} sent, ${t.received} distinct received, ${t.duplicates} duplicates, ${lost} lost; ` +
          `${inFlightAtKill} in flight at the kill; reconnect after ${report.attempts} attempt(s), ${report.downMs} ms\n`,
      );
      expect(t.received, 'frames came back after the restart').to.be.at.least(before + 500);
      expect(t.corrupt).to.equal(0);
      expect(t.duplicates, 'frames delivered twice').to.equal(0);
      expect(lost, 'frames lost (at most those in flight at the kill)').to.be.at.least(0).and.at.most(inFlightAtKill);
      expect(net.reconnects).to.equal(1);
    });
  });
});
