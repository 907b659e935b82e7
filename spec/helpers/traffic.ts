/**
 * Sequence-numbered traffic through a VirtioNet, for tests where a back-end goes
 * away or is replaced mid-stream: every frame carries its number, so what comes
 * back is counted exactly (distinct, duplicated, corrupt), and RARP
 * announcements are set aside.
 */
import type { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { RxBurst } from '../../lib/devices/net/virtio-net.js';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence, isRarpFrame } from '../../lib/net/frame-builder.js';

export class SequencedTraffic {
  sent = 0;
  /** Sequence numbers that came back. */
  readonly seen = new Set<number>();
  duplicates = 0;
  corrupt = 0;
  /** RARP frames that came back (a back-end announcing the guest). */
  readonly rarp: Uint8Array[] = [];
  private readonly burst = new RxBurst(64);

  constructor(
    private readonly net: VirtioNet,
    private readonly frameSize = 128,
  ) {}

  /** Distinct frames received. */
  get received(): number {
    return this.seen.size;
  }

  /** Up to 32 new frames while fewer than `window` are unanswered (and `limit` not reached), then one receive. */
  step(limit: number, window: number): void {
    const room = Math.min(32, window - (this.sent - this.received), limit - this.sent);
    if (room > 0) this.sent += this.net.sendBurst(Array.from({ length: room }, (_, i) => buildUdpFrameOfSize(this.frameSize, this.sent + i)));
    this.receive();
  }

  receive(): void {
    const n = this.net.receiveBurst(0, this.burst);
    for (let i = 0; i < n; i++) {
      const f = this.burst.frame(i);
      if (isRarpFrame(f)) {
        this.rarp.push(f);
        continue;
      }
      const seq = frameSequence(f);
      if (seq === undefined || !framePayloadIntact(f)) this.corrupt++;
      else if (this.seen.has(seq)) this.duplicates++;
      else this.seen.add(seq);
    }
  }

  /** Steps until `until()` or `ms` pass, yielding to the event loop now and then. */
  async run(limit: number, window: number, until: () => boolean, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    for (let spins = 0; !until() && Date.now() < deadline; spins++) {
      this.step(limit, window);
      if (spins % 16 === 0) await new Promise((r) => setImmediate(r));
    }
  }
}
