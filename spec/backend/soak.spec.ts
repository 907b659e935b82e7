/**
 * Soak: connect, handshake, traffic, teardown, 2,000 times over against the
 * reference back-end, with fds, mappings and RSS read from /proc before, during
 * and after. A leak of one fd or one mapping per cycle shows up as 2,000.
 * SOAK_CYCLES overrides the count.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { RxBurst, VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { buildUdpFrameOfSize, frameSequence } from '../../lib/net/frame-builder.js';
import { fdCount, mapCount, rssBytes, settle, timerCount } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

const CYCLES = Number(process.env.SOAK_CYCLES ?? 2000);
const FRAMES = 16;
const MiB = 1024 * 1024;

async function cycle(path: string, frames: Uint8Array[], burst: RxBurst): Promise<void> {
  const net = await VirtioNet.open(path, { timeoutMs: 2000 });
  try {
    expect(net.sendBurst(frames)).to.equal(FRAMES);
    let got = 0;
    for (let spins = 0; got < FRAMES; spins++) {
      const n = net.receiveBurst(0, burst);
      for (let i = 0; i < n; i++) expect(frameSequence(burst.frame(i))).to.equal(got + i);
      got += n;
      if (spins > 2000) throw new Error(`only ${got} of ${FRAMES} frames came back`);
      if (n === 0) await new Promise((r) => setImmediate(r));
    }
  } finally {
    net.close();
  }
}

describe('soak: connect, handshake, traffic, teardown cycles against the reference back-end', function () {
  this.timeout(600_000);

  it(`${CYCLES} cycles keep the fd count, mappings and RSS stable (figures printed)`, async () => {
    const tmp = tempSocketPath();
    const backend = ReferenceBackend.listen(tmp.path, { device: 'net' });
    const frames = Array.from({ length: FRAMES }, (_, i) => buildUdpFrameOfSize(200, i));
    const burst = new RxBurst(64);
    const figures: string[] = [];
    const sample = (label: string) => {
      const f = { fds: fdCount(), maps: mapCount(), rss: rssBytes() };
      figures.push(`${label.padEnd(14)} fds ${String(f.fds).padStart(4)}  mappings ${String(f.maps).padStart(3)}  RSS ${(f.rss / MiB).toFixed(1).padStart(6)} MiB`);
      return f;
    };
    try {
      // Warm-up: JIT, V8 heap and libuv structures reach their working size.
      for (let i = 0; i < 50; i++) await cycle(tmp.path, frames, burst);
      await settle(0);
      const timers = timerCount();
      const start = sample('after warm-up');
      const t0 = Date.now();
      for (let i = 1; i <= CYCLES; i++) {
        await cycle(tmp.path, frames, burst);
        // Mid-run samples catch the back-end's side of the cycle just ended before it notices
        // the hang-up (a few fds and its mappings); the final sample comes after it has.
        if (i % 500 === 0 || i === CYCLES) sample(`cycle ${i}`);
      }
      const ms = Date.now() - t0;
      await settle();
      const end = sample('end');
      process.stdout.write(`      ${CYCLES} cycles in ${(ms / 1000).toFixed(1)} s (${(ms / CYCLES).toFixed(2)} ms each), ${backend.connections} connections served\n`);
      for (const line of figures) process.stdout.write(`      ${line}\n`);
      expect(backend.connections).to.equal(CYCLES + 50);
      expect(backend.net.frames).to.equal((CYCLES + 50) * FRAMES);
      expect(end.fds - start.fds, 'fds').to.equal(0);
      expect(end.maps - start.maps, 'mappings').to.equal(0);
      expect(timerCount(), 'timers').to.be.at.most(timers);
      // One leaked 2 MiB guest memory per cycle would be ~4 GiB; V8's heap may still settle upwards a little.
      expect(end.rss - start.rss, 'RSS growth').to.be.below(64 * MiB);
    } finally {
      backend.close();
      tmp.cleanup();
    }
  });
});
