/**
 * Hello, vhost-user: the reference back-end (a vhost-user net device written in
 * TypeScript, looping every frame it is sent back to the driver) listens on a
 * socket in this process; a virtio-net driver connects to it, sends three UDP
 * frames and reads them back from its RX ring.
 *
 *   node dist/examples/hello.js
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildUdpFrame, ReferenceBackend, RxBurst, UDP_FRAME_OVERHEAD, VirtioNet } from 'vhost-user-client';

const dir = mkdtempSync(join(tmpdir(), 'vhost-hello-'));
const socket = join(dir, 'net.sock');
const backend = ReferenceBackend.listen(socket, { device: 'net' });
let net: VirtioNet | undefined;
try {
  net = await VirtioNet.open(socket);
  console.log(`connected: ${net.ring} rings, ${net.queuePairs} queue pair(s) of ${net.queueSize}`);

  const greetings = ['hello', 'vhost-user', 'world'];
  const frames = greetings.map((text) => buildUdpFrame({ payload: new TextEncoder().encode(text) }));
  const sent = net.sendBurst(frames);

  const burst = new RxBurst(16);
  const received: string[] = [];
  const deadline = Date.now() + 5000;
  while (received.length < sent && Date.now() < deadline) {
    // The back-end runs on this thread's event loop: let it see the kick and loop the frames back.
    await new Promise((resolve) => setImmediate(resolve));
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) received.push(new TextDecoder().decode(burst.frame(i).subarray(UDP_FRAME_OVERHEAD)));
  }
  console.log(`sent ${sent} frames, received ${received.length}: ${received.join(' ')}`);
  const c = net.counters(0);
  console.log(`counters: txPackets ${c.txPackets}, rxPackets ${c.rxPackets}, rxBytes ${c.rxBytes}`);
  process.exitCode = received.join(' ') === greetings.join(' ') ? 0 : 1;
} finally {
  net?.close();
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
