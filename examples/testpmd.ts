/**
 * Drive dpdk-testpmd: start it with a vhost-user port (DPDK's vhost PMD, no
 * hugepages, no NIC) in io forwarding, where every frame it receives on the port
 * goes back out of it; open a virtio-net driver on its socket, send UDP frames,
 * read them back from the RX ring and compare them byte for byte, then read
 * testpmd's own port counters.
 *
 *   node dist/examples/testpmd.js [FRAMES]        (needs dpdk-testpmd: apt-get install dpdk-dev)
 */
import { buildUdpFrameOfSize, RxBurst, startTestpmd, VirtioNet } from 'vhost-user-client';

const total = Number(process.argv[2] ?? 1000);
// Frames in flight at most: io forwarding drops what meets a full RX ring, so stay below its size.
const WINDOW = 128;

const testpmd = await startTestpmd({ forwardMode: 'io', interactive: true });
let net: VirtioNet | undefined;
try {
  net = await VirtioNet.open(testpmd.socketPath, { queueSize: 256 });
  // Forwarding starts once the driver has set up its rings, so testpmd polls a ready queue.
  await testpmd.startForwarding();
  console.log(`dpdk-testpmd (pid ${testpmd.pid}) on ${testpmd.socketPath}: ${net.ring} rings of ${net.queueSize}`);

  const frames = Array.from({ length: total }, (_, seq) => buildUdpFrameOfSize(64 + (seq % 1437), seq));
  const burst = new RxBurst(64);
  let sent = 0;
  let received = 0;
  let intact = 0;
  const deadline = Date.now() + 20_000;
  while (received < total && Date.now() < deadline) {
    const room = Math.min(WINDOW - (sent - received), total - sent, 32);
    if (room > 0) sent += net.sendBurst(frames.slice(sent, sent + room));
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++, received++) {
      if (Buffer.from(burst.frame(i)).equals(frames[received]!)) intact++;
    }
    // testpmd polls on its own core; yield now and then so timers and the socket are served.
    if (n === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const stats = await testpmd.portStats(0);
  console.log(`sent ${sent} frames, received ${received}, intact and in order ${intact}`);
  console.log(`testpmd port 0: RX-packets ${stats.rxPackets}, TX-packets ${stats.txPackets}, RX-missed ${stats.rxMissed}`);
  process.exitCode = intact === total && stats.rxPackets === total && stats.txPackets === total ? 0 : 1;
} finally {
  net?.close();
  await testpmd.stop();
}
