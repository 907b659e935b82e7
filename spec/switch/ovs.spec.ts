/**
 * Open vSwitch with DPDK as a switch between VMs that are VirtioNet drivers in this process:
 * L2 learning, VLAN access ports, OpenFlow rules, MTU, link state, and a restart of
 * ovs-vswitchd under running traffic. One OVS (4 dpdkvhostuser ports, one
 * dpdkvhostuserclient port) serves the whole describe; each test restores what it changed.
 * Every frame is compared byte for byte with what was sent (or with what OVS must have made
 * of it: a VLAN tag added or stripped).
 */
import { expect } from 'chai';
import { VirtioNet, RxBurst } from '../../lib/devices/net/virtio-net.js';
import { liveBackends } from '../../lib/launch/backend-process.js';
import { ovsDpdkInstalled, startOvs, type OvsBackend } from '../../lib/launch/ovs.js';
import { buildUdpFrameOfSize, framePayloadIntact, frameSequence, type UdpEndpoints } from '../../lib/net/frame-builder.js';
import { UnixListener } from '../../lib/transport/unix-listener.js';

const MACS = ['02:00:00:00:0a:01', '02:00:00:00:0a:02', '02:00:00:00:0a:03', '02:00:00:00:0a:04', '02:00:00:00:0a:05'];
const BROADCAST = 'ff:ff:ff:ff:ff:ff';
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A VM: a VirtioNet driver on one OVS port, and the frames it received. */
class Vm {
  readonly got: Uint8Array[] = [];
  /** Frames that were not this test's UDP frames (none are expected: the bridge's LOCAL port is down). */
  other = 0;
  private readonly burst = new RxBurst(64);
  constructor(
    readonly net: VirtioNet,
    readonly port: string,
    readonly mac: string,
  ) {}

  /** Receives whatever is waiting. */
  poll(): void {
    const n = this.net.receiveBurst(0, this.burst);
    for (let i = 0; i < n; i++) {
      const f = this.burst.frame(i);
      if (f[12] === 0x08 || f[12] === 0x81) this.got.push(f);
      else this.other++;
    }
  }

  /** Sends every frame, retrying while the TX ring is full. */
  async send(frames: Uint8Array[]): Promise<void> {
    let sent = 0;
    const deadline = Date.now() + 5000;
    while (sent < frames.length) {
      sent += this.net.sendBurst(frames.slice(sent, sent + 32));
      if (Date.now() > deadline) throw new Error(`${this.port}: only ${sent} of ${frames.length} frames taken`);
      await new Promise((r) => setImmediate(r));
    }
  }

  take(): Uint8Array[] {
    return this.got.splice(0);
  }
}

/** Polls every VM until `until()` holds, then `settleMs` more (to catch frames that must not come). */
async function pollAll(vms: readonly Vm[], until: () => boolean, settleMs = 150, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!until() && Date.now() < deadline) {
    for (const v of vms) v.poll();
    await new Promise((r) => setTimeout(r, 1));
  }
  const end = Date.now() + settleMs;
  while (Date.now() < end) {
    for (const v of vms) v.poll();
    await new Promise((r) => setTimeout(r, 1));
  }
}

function frames(count: number, size: number, from: Vm, dst: string, first: number, extra: UdpEndpoints = {}): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => buildUdpFrameOfSize(size, first + i, { srcMac: from.mac, dstMac: dst, ...extra }));
}

/** Byte-for-byte: `got` must be exactly `want`, in order. */
function expectFrames(got: Uint8Array[], want: Uint8Array[], who: string): void {
  expect(got.length, `${who}: frames received`).to.equal(want.length);
  got.forEach((f, i) => expect(hex(f), `${who}: frame ${i}`).to.equal(hex(want[i]!)));
}

/** `frame` with an 802.1Q tag (TPID 0x8100, PCP 0, VID `vid`) after the source MAC, as OVS pushes it. */
function tagged(frame: Uint8Array, vid: number): Uint8Array {
  const out = new Uint8Array(frame.length + 4);
  out.set(frame.subarray(0, 12), 0);
  out.set([0x81, 0x00, vid >> 8, vid & 0xff], 12);
  out.set(frame.subarray(12), 16);
  return out;
}

describe('switch: Open vSwitch with DPDK @integration', function () {
  this.timeout(60_000);
  let ovs: OvsBackend | undefined;
  const vms: Vm[] = [];
  let listener: UnixListener | undefined;

  before(async function () {
    if (!ovsDpdkInstalled()) {
      process.stdout.write('      skipped: OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)\n');
      this.skip();
    }
    ovs = await startOvs({
      ports: [
        { name: 'p0', ofport: 1 },
        { name: 'p1', ofport: 2 },
        { name: 'p2', ofport: 3 },
        { name: 'p3', ofport: 4 },
        { name: 'pc', ofport: 5, kind: 'dpdkvhostuserclient' },
      ],
    });
    for (let i = 0; i < 4; i++) {
      const net = await VirtioNet.open(ovs.socketPath(`p${i}`), { reconnect: { timeoutMs: 20_000 } });
      vms.push(new Vm(net, `p${i}`, MACS[i]!));
    }
    // dpdkvhostuserclient: this side listens and OVS connects (it retries once a second).
    listener = UnixListener.listen(ovs.socketPath('pc'));
    const pc = await VirtioNet.accept(listener, { acceptTimeoutMs: 10_000, reconnect: { timeoutMs: 20_000 } });
    vms.push(new Vm(pc, 'pc', MACS[4]!));
    for (const v of vms) await ovs.waitLink(v.port);
  });

  after(async function () {
    for (const v of vms) v.net.close();
    listener?.close();
    const logs = ovs && this.currentTest?.state === 'failed' ? await ovs.logs() : '';
    await ovs?.stop();
    if (logs) process.stdout.write(`${logs}\n`);
    expect(liveBackends()).to.deep.equal([]);
  });

  afterEach(async function () {
    // Whatever a test left behind is not the next test's.
    await pollAll(vms, () => true, 50);
    for (const v of vms) v.take();
  });

  it('two VMs, one of each port kind: frames both ways arrive byte for byte (NORMAL)', async () => {
    const [a, , , , c] = vms as [Vm, Vm, Vm, Vm, Vm];
    const toC = frames(200, 128, a, c.mac, 0);
    const toA = frames(200, 1514, c, a.mac, 1000);
    await a.send(toC);
    await c.send(toA);
    await pollAll(vms, () => c.got.length >= 200 && a.got.length >= 200);
    expectFrames(c.take(), toC, 'pc');
    expectFrames(a.take(), toA, 'p0');
  });

  it('four VMs: L2 learning — after one flood each, frames reach only their destination', async () => {
    const four = vms.slice(0, 4);
    // Flood: a broadcast from each VM reaches the other three (and pc), and teaches OVS where each MAC is.
    const hello = four.map((v, i) => frames(1, 64, v, BROADCAST, 50_000 + i)[0]!);
    for (let i = 0; i < 4; i++) await four[i]!.send([hello[i]!]);
    await pollAll(vms, () => four.every((v) => v.got.length >= 3));
    // The PMD polls the ports in turn, so the broadcasts may arrive in any order: compare as sets.
    four.forEach((v, i) => expect(v.take().map(hex).sort(), `${v.port} (flood)`).to.deep.equal(hello.filter((_, j) => j !== i).map(hex).sort()));
    expect(vms[4]!.take().length, 'pc got the four broadcasts').to.equal(4);
    // Unicast: VM i sends 100 frames to VM i+1; each VM must get exactly its 100, nobody else any.
    const sent = four.map((v, i) => frames(100, 256, v, four[(i + 1) % 4]!.mac, i * 1000));
    for (let i = 0; i < 4; i++) await four[i]!.send(sent[i]!);
    await pollAll(vms, () => four.every((v) => v.got.length >= 100), 300);
    four.forEach((v, i) => expectFrames(v.take(), sent[(i + 3) % 4]!, `${v.port} (unicast)`));
    expect(vms[4]!.take().length, 'pc got unicast frames for others').to.equal(0);
    expect(vms.map((v) => v.other)).to.deep.equal([0, 0, 0, 0, 0]);
  });

  it('VLAN access ports: the tag is pushed towards a trunk and stripped towards an access port', async () => {
    const [trunk, v10, v20, , trunk2] = vms as [Vm, Vm, Vm, Vm, Vm];
    await ovs!.vsctl('set', 'Port', 'p1', 'tag=10', '--', 'set', 'Port', 'p2', 'tag=20', '--', 'set', 'Port', 'p3', 'tag=30');
    try {
      // Untagged from the VLAN 10 access port: trunks get it with VID 10, the VLAN 20 port nothing.
      const up = frames(50, 200, v10, BROADCAST, 0);
      await v10.send(up);
      await pollAll(vms, () => trunk.got.length >= 50 && trunk2.got.length >= 50);
      expectFrames(trunk.take(), up.map((f) => tagged(f, 10)), 'p0 (trunk)');
      expectFrames(trunk2.take(), up.map((f) => tagged(f, 10)), 'pc (trunk)');
      expect(v20.take().length, 'VLAN 20 port got VLAN 10 frames').to.equal(0);
      // Tagged VID 20 from a trunk: the VLAN 20 access port gets it untagged, the VLAN 10 one nothing.
      const plain = frames(50, 300, trunk, BROADCAST, 100);
      await trunk.send(plain.map((f) => tagged(f, 20)));
      await pollAll(vms, () => v20.got.length >= 50);
      expectFrames(v20.take(), plain, 'p2 (VLAN 20)');
      expect(v10.take().length, 'VLAN 10 port got VLAN 20 frames').to.equal(0);
      expectFrames(trunk2.take(), plain.map((f) => tagged(f, 20)), 'pc (trunk, VLAN 20)');
    } finally {
      await ovs!.vsctl('clear', 'Port', 'p1', 'tag', '--', 'clear', 'Port', 'p2', 'tag', '--', 'clear', 'Port', 'p3', 'tag');
    }
  });

  it('OpenFlow rules: matched frames are dropped or redirected, the rest switched', async () => {
    const [a, b, , d] = vms as [Vm, Vm, Vm, Vm];
    await ovs!.replaceFlows(['priority=100,udp,tp_dst=7777,actions=drop', 'priority=100,udp,tp_dst=8888,actions=output:4', 'priority=0,actions=NORMAL']);
    try {
      // Teach the bridge where b is (a frame from b), then send three kinds of frame from a to b.
      await b.send(frames(1, 64, b, a.mac, 9));
      await pollAll(vms, () => a.got.length >= 1);
      for (const v of vms) v.take();
      const dropped = frames(40, 128, a, b.mac, 0, { dstPort: 7777 });
      const redirected = frames(30, 128, a, b.mac, 100, { dstPort: 8888 });
      const switched = frames(20, 128, a, b.mac, 200);
      await a.send([...dropped, ...redirected, ...switched]);
      await pollAll(vms, () => d.got.length >= 30 && b.got.length >= 20, 300);
      expectFrames(d.take(), redirected, 'p3 (redirect target)');
      expectFrames(b.take(), switched, 'p1 (destination)');
      // OpenFlow counters follow the datapath's by the revalidator, about every 500 ms.
      let flows = '';
      const until = Date.now() + 5000;
      const dropCount = () => Number(/n_packets=(\d+),.*tp_dst=7777 actions=drop/.exec(flows)?.[1]);
      do {
        flows = await ovs!.dumpFlows();
        if (dropCount() === 40) break;
        await new Promise((r) => setTimeout(r, 100));
      } while (Date.now() < until);
      expect(dropCount(), `drop rule counter in:\n${flows}`).to.equal(40);
    } finally {
      await ovs!.normal();
    }
  });

  it('MTU: frames longer than the port MTU (plus the 18-byte Ethernet header and FCS OVS allows) are dropped and counted', async () => {
    const [a, b] = vms as [Vm, Vm];
    await ovs!.vsctl('set', 'Interface', 'p1', 'mtu_request=1000');
    try {
      expect(await ovs!.vsctl('get', 'Interface', 'p1', 'mtu')).to.equal('1000');
      const before = await ovs!.portStats('p1');
      const fit = [frames(1, 1000, a, b.mac, 0)[0]!, frames(1, 1018, a, b.mac, 1)[0]!];
      const tooLong = [frames(1, 1019, a, b.mac, 2)[0]!, frames(1, 1514, a, b.mac, 3)[0]!];
      await a.send([fit[0]!, tooLong[0]!, fit[1]!, tooLong[1]!]);
      await pollAll(vms, () => b.got.length >= 2, 300);
      expectFrames(b.take(), fit, 'p1 (MTU 1000)');
      const after = await ovs!.portStats('p1');
      expect(after.txMtuExceededDrops - before.txMtuExceededDrops, 'ovs_tx_mtu_exceeded_drops').to.equal(2);
    } finally {
      await ovs!.vsctl('set', 'Interface', 'p1', 'mtu_request=1500');
    }
  });

  it('link down and up: a port that is down gets nothing, and gets traffic again once up', async () => {
    const [a, b, c] = vms as [Vm, Vm, Vm];
    await ovs!.setLink('p1', false);
    let restored = false;
    try {
      const whileDown = frames(30, 128, a, BROADCAST, 0);
      await a.send(whileDown);
      await pollAll(vms, () => c.got.length >= 30, 300);
      expectFrames(c.take(), whileDown, 'p2 (up)');
      expect(b.take().length, 'p1 (down) received').to.equal(0);
      await ovs!.setLink('p1', true);
      restored = true;
      const whileUp = frames(30, 128, a, BROADCAST, 100);
      await a.send(whileUp);
      await pollAll(vms, () => b.got.length >= 30 && c.got.length >= 30);
      expectFrames(b.take(), whileUp, 'p1 (up again)');
      expectFrames(c.take(), whileUp, 'p2');
    } finally {
      if (!restored) await ovs!.setLink('p1', true);
    }
  });

  it('ovs-vswitchd restarted under traffic: both kinds of port reconnect and traffic resumes (counted)', async function () {
    const [a, , , , c] = vms as [Vm, Vm, Vm, Vm, Vm];
    const reconnected = new Set<string>();
    for (const v of [a, c]) v.net.once('reconnect', () => reconnected.add(v.port));
    const seen = new Set<number>();
    let corrupt = 0;
    let duplicates = 0;
    let sent = 0;
    let afterRestart = 0;
    let restarted = false;
    const account = () => {
      c.poll();
      for (const f of c.take()) {
        const seq = frameSequence(f);
        if (seq === undefined || !framePayloadIntact(f) || f.length !== 256) corrupt++;
        else if (seen.has(seq)) duplicates++;
        else {
          seen.add(seq);
          if (restarted) afterRestart++;
        }
      }
    };
    const restart = (async () => {
      await new Promise((r) => setTimeout(r, 300));
      await ovs!.restartVswitchd();
      restarted = true;
    })();
    const deadline = Date.now() + 30_000;
    // 10 frames a millisecond at most (paced: this test is about the restart, not the rate).
    while (!(restarted && reconnected.size === 2 && afterRestart >= 2000)) {
      if (Date.now() > deadline) throw new Error(`no recovery: sent ${sent}, received ${seen.size}, after restart ${afterRestart}, reconnected ${[...reconnected].join(',')}`);
      const burst = Array.from({ length: 10 }, (_, i) => buildUdpFrameOfSize(256, sent + i, { srcMac: a.mac, dstMac: c.mac }));
      sent += a.net.sendBurst(burst);
      account();
      await new Promise((r) => setTimeout(r, 1));
    }
    await restart;
    await pollAll(vms, () => false, 200, 0);
    account();
    const lost = sent - seen.size;
    this.test!.title += ` [sent ${sent}, received ${seen.size}, lost ${lost} during the restart, ${duplicates} duplicates, ${afterRestart} after it]`;
    expect(corrupt, 'corrupt frames').to.equal(0);
    expect([...reconnected].sort()).to.deep.equal(['p0', 'pc']);
    expect(afterRestart).to.be.at.least(2000);
    expect(a.net.reconnects).to.equal(1);
    expect(c.net.reconnects).to.equal(1);
  });
});
