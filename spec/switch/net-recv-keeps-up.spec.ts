/**
 * `net send` unpaced into one port of a switch, `net recv` on another, as a user runs them
 * (two CLI processes): through OVS-DPDK and through dpdk-testpmd with two ports in io
 * forwarding. Every frame the receiver wrote to its pcap is checked byte for byte and in
 * order, and every frame sent is accounted for: received, or reported dropped by the back-end
 * (OVS: recv's own summary, from ovs_tx_failure_drops; testpmd: its forward statistics). The
 * delivered share is put into the test title: on a 2-core machine the sender, the receiver and
 * the switch's PMD thread share the cores, so it depends on the load (no timing assertion).
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { liveBackends, makeTempDir } from '../../lib/launch/backend-process.js';
import { startTestpmd } from '../../lib/launch/dpdk-testpmd.js';
import { ovsDpdkInstalled, startOvs } from '../../lib/launch/ovs.js';
import { framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import { readPcapFrames } from '../../lib/pcap/pcap-reader.js';
import { skipWithout } from '../helpers/backends.js';
import { cli } from '../helpers/cli.js';

const COUNT = 20_000;
const SIZE = 64;

/** `net send` cycles through 4096 prebuilt frames: sequence numbers repeat modulo this. */
const SEND_POOL = 4096;

/**
 * Every frame in the pcap is a sequenced UDP frame of SIZE bytes, intact, and each comes
 * after the one before it in the order they were sent (sequence numbers are modulo 4096:
 * a frame's position is the first one past the previous frame's with its number).
 */
function checkPcap(file: string): number {
  const got = readPcapFrames(file);
  let pos = -1;
  got.forEach((f, i) => {
    const seq = frameSequence(f);
    expect(f.length, `frame ${i} length`).to.equal(SIZE);
    expect(seq !== undefined && framePayloadIntact(f), `frame ${i} intact`).to.equal(true);
    const step = (seq! - (pos % SEND_POOL) + SEND_POOL) % SEND_POOL || SEND_POOL;
    pos = pos < 0 ? seq! : pos + step;
  });
  expect(pos, 'position of the last frame received').to.be.lessThan(COUNT);
  return got.length;
}

describe('switch: net recv keeps up with an unpaced net send, or says what the back-end dropped @integration', function () {
  this.timeout(60_000);
  let dir = '';

  beforeEach(async () => {
    dir = await makeTempDir('vhost-keepup-');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
    expect(liveBackends()).to.deep.equal([]);
  });

  it('through OVS-DPDK (recv listens: dpdkvhostuserclient; --ovs-port reports the drops)', async function () {
    if (!ovsDpdkInstalled()) {
      process.stdout.write('      skipped: OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)\n');
      this.skip();
    }
    const ovs = await startOvs({ ports: [{ name: 'p0' }, { name: 'pc', kind: 'dpdkvhostuserclient' }] });
    try {
      const pcap = path.join(dir, 'recv.pcap');
      const recv = cli(['net', 'recv', '--listen', ovs.socketPath('pc'), '--count', String(COUNT), '--pcap', pcap, '--json', '--timeout', '5000', '--ovs-port', 'pc', '--ovs-rundir', ovs.tempDir]);
      await ovs.waitLink('pc');
      const send = await cli(['net', 'send', '--socket', ovs.socketPath('p0'), '--count', String(COUNT), '--size', String(SIZE), '--json']);
      expect(send.status, send.stderr).to.equal(0);
      const r = await recv;
      expect(r.status, r.stderr).to.equal(0);
      const summary = JSON.parse(r.stdout) as { frames: number; backendDropped: number };
      expect(checkPcap(pcap)).to.equal(summary.frames);
      expect(summary.frames + summary.backendDropped, 'received + dropped by OVS').to.equal(COUNT);
      this.test!.title += ` [${summary.frames} of ${COUNT} delivered (${((100 * summary.frames) / COUNT).toFixed(2)}%), OVS dropped ${summary.backendDropped}]`;
    } finally {
      await ovs.stop();
    }
  });

  it('through dpdk-testpmd, two ports, io forwarding (drops read from its forward statistics)', async function () {
    skipWithout(this, 'dpdk-testpmd', 'dpdk-dev');
    const pmd = await startTestpmd({ forwardMode: 'io', ports: 2, interactive: true, autoStart: true });
    try {
      const pcap = path.join(dir, 'recv.pcap');
      const recv = cli(['net', 'recv', '--socket', pmd.socketPaths[1]!, '--count', String(COUNT), '--pcap', pcap, '--json', '--timeout', '3000']);
      // Port 1 forwards once the receiver's rings run.
      await pmd.waitDeviceReady(pmd.socketPaths[1]!);
      const send = await cli(['net', 'send', '--socket', pmd.socketPaths[0]!, '--count', String(COUNT), '--size', String(SIZE), '--json']);
      expect(send.status, send.stderr).to.equal(0);
      const r = await recv;
      const stats = await pmd.stopForwarding();
      const port1 = /Forward statistics for port 1[\s\S]*?TX-dropped:\s*(\d+)/.exec(stats);
      expect(port1, stats).to.not.equal(null);
      const dropped = Number(port1![1]);
      // All received: recv prints its summary; some dropped: it times out waiting for them.
      const received = r.status === 0 ? (JSON.parse(r.stdout) as { frames: number }).frames : Number(/\((\d+) of \d+ received\)/.exec(r.stderr)?.[1]);
      expect(r.status === 0 || dropped > 0, r.stderr).to.equal(true);
      expect(checkPcap(pcap)).to.equal(received);
      expect(received + dropped, `received + testpmd TX-dropped on port 1\n${stats}`).to.equal(COUNT);
      this.test!.title += ` [${received} of ${COUNT} delivered (${((100 * received) / COUNT).toFixed(2)}%), testpmd dropped ${dropped}]`;
    } finally {
      await pmd.stop();
    }
  });
});
