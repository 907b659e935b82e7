/**
 * Offloads verified by a real back-end: dpdk-testpmd's vhost port (DPDK 22.11,
 * `tso=1` so that HOST_TSO4/6 are offered). Frames sent with NEEDS_CSUM and as
 * 64 KiB TSO frames come back through io forwarding; every frame that comes back
 * must have valid checksums, by this library's check and by tshark's
 * (`-o ip.check_checksum:TRUE -o udp... -o tcp...`), the capture written the way
 * `net recv --pcap` writes it. What DPDK's vhost library does with them depends
 * on its offload-flags mode (measured, and asserted below):
 *
 * - default (compliant flags): it completes each NEEDS_CSUM checksum in software
 *   and passes a GSO frame on whole, not segmented, with a zero header, to
 *   a driver with or without GUEST_TSO;
 * - `legacy-ol-flags=1`: it passes NEEDS_CSUM and the GSO fields on to the
 *   receiving driver's header (with GUEST_CSUM / GUEST_TSO negotiated).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { TxOffloads } from '../../lib/devices/net/tx-offloads.js';
import { RxBurst, VirtioNet, type VirtioNetOptions } from '../../lib/devices/net/virtio-net.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../../lib/devices/net/virtio-net-hdr.js';
import { findExecutable, liveBackends } from '../../lib/launch/backend-process.js';
import { startTestpmd, type TestpmdBackend } from '../../lib/launch/dpdk-testpmd.js';
import { checksumsValid, FrameLayout, pseudoHeaderSum } from '../../lib/net/checksum.js';
import { buildL4Frame } from '../../lib/net/l4-frame.js';
import { Segmenter } from '../../lib/net/segment.js';
import { PcapWriter } from '../../lib/pcap/pcap-writer.js';
import { readPcapFrames } from '../../lib/pcap/pcap-reader.js';
import { runNode } from '../helpers/cli.js';
import { settle } from '../helpers/resources.js';

const MAIN = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
const MSS = 1448;
/** A 65 535-byte IPv4 TCP frame (`net send --tso` sends these). */
const TSO_PAYLOAD = 65535 - 54;

/** The test frames: NEEDS_CSUM UDP and TCP over IPv4 and IPv6, then a 64 KiB TSO frame for each IP version. */
function offloadedFrames(): { full: Uint8Array[]; sent: Uint8Array[]; offloads: TxOffloads } {
  const full = [
    buildL4Frame({ protocol: 'udp', ipVersion: 4, payloadLength: 300, seq: 1 }),
    buildL4Frame({ protocol: 'udp', ipVersion: 6, payloadLength: 301, seq: 2 }),
    buildL4Frame({ protocol: 'tcp', ipVersion: 4, payloadLength: 302, seq: 3 }),
    buildL4Frame({ protocol: 'tcp', ipVersion: 6, payloadLength: 303, seq: 4 }),
    // 65 535-byte frames at most: tshark leaves the TCP checksum of a larger frame unverified.
    buildL4Frame({ protocol: 'tcp', ipVersion: 4, payloadLength: TSO_PAYLOAD, seq: 5, tcpSeq: 7 }),
    buildL4Frame({ protocol: 'tcp', ipVersion: 6, payloadLength: 65000, seq: 6, tcpSeq: 9 }),
  ];
  const sent = full.map((f) => f.slice());
  const offloads = new TxOffloads(sent.length);
  sent.forEach((f, i) => expect(offloads.prepare(i, f, f.length, i >= 4 ? MSS : 0)).to.equal(true));
  return { full, sent, offloads };
}

interface Received {
  frame: Uint8Array;
  flags: number;
  gsoType: number;
  gsoSize: number;
}

async function receiveAll(net: VirtioNet, want: number, complete: boolean): Promise<Received[]> {
  const burst = new RxBurst(64);
  const got: Received[] = [];
  for (const deadline = Date.now() + 5000; got.length < want && Date.now() < deadline; await settle(2)) {
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) {
      const r = { flags: burst.flags[i]!, gsoType: burst.gsoTypes[i]!, gsoSize: burst.gsoSizes[i]! };
      if (complete) expect(burst.completeChecksum(i), 'completeChecksum').to.equal(true);
      got.push({ ...r, frame: burst.frame(i) });
    }
  }
  return got;
}

/** tshark's verdicts: one row per frame, [ip, udp, tcp] checksum status ('1' good, '' not that protocol). */
function tsharkStatus(file: string): string[][] {
  const out = execFileSync(
    'tshark',
    ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-e', 'ip.checksum.status', '-e', 'udp.checksum.status', '-e', 'tcp.checksum.status'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return out.trimEnd().split('\n').map((l) => l.split('\t'));
}

/** Every frame's checksums good by tshark: IPv4 header, and UDP or TCP. */
function expectTsharkValid(file: string, frames: number): void {
  if (!findExecutable('tshark')) {
    process.stdout.write('      (tshark not installed: apt-get install tshark; checked by the library only)\n');
    return;
  }
  const rows = tsharkStatus(file);
  expect(rows).to.have.length(frames);
  rows.forEach((r, i) => {
    const [ip = '', udp = '', tcp = ''] = r;
    expect(ip === '' || ip === '1', `frame ${i}: IPv4 header checksum status ${ip}`).to.equal(true);
    expect(udp === '1' || tcp === '1', `frame ${i}: L4 checksum status udp '${udp}' tcp '${tcp}'`).to.equal(true);
  });
}

const layout = new FrameLayout();
const valid = (f: Uint8Array) => layout.parse(f) && checksumsValid(f, layout);

describe('VirtioNet offloads through dpdk-testpmd @integration', function () {
  this.timeout(60_000);
  let backend: TestpmdBackend | null = null;
  let net: VirtioNet | null = null;
  let dir: string;
  before(function () {
    if (!findExecutable('dpdk-testpmd')) {
      process.stdout.write('      skipped: dpdk-testpmd is not installed (apt-get install dpdk-dev)\n');
      this.skip();
    }
  });
  beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), 'vhu-offload-'))));
  afterEach(async () => {
    net?.close();
    net = null;
    await backend?.stop();
    backend = null;
    rmSync(dir, { recursive: true, force: true });
    expect(liveBackends(), 'back-end processes left running').to.deep.equal([]);
  });

  async function loop(vdev: string, options: VirtioNetOptions, complete: boolean): Promise<{ got: Received[]; full: Uint8Array[]; file: string }> {
    backend = await startTestpmd({ forwardMode: 'io', extraVdevArgs: vdev });
    net = await VirtioNet.open(backend.socketPath, options);
    expect(net.offloads).to.include({ csum: true, tso4: true, tso6: true });
    const { full, sent, offloads } = offloadedFrames();
    expect(net.sendBurst(sent, sent.length, 0, offloads)).to.equal(sent.length);
    const got = await receiveAll(net, sent.length, complete);
    const file = path.join(dir, 'rx.pcap');
    const w = await PcapWriter.open(file);
    for (const g of got) w.write(g.frame);
    await w.close();
    return { got, full, file };
  }

  it('io forwarding: NEEDS_CSUM frames (UDP, TCP; IPv4, IPv6) and 64 KiB TSO frames come back with every checksum valid (library, tshark); DPDK completes checksums and does not segment', async () => {
    const { got, full, file } = await loop('tso=1', { tso: true }, false);
    expect(got.map((g) => g.frame.length)).to.deep.equal(full.map((f) => f.length));
    got.forEach((g, i) => {
      expect(g.flags, `frame ${i} header flags`).to.equal(0);
      expect(g.gsoType).to.equal(0);
      expect(valid(g.frame), `frame ${i} checksums`).to.equal(true);
      expect(Buffer.compare(g.frame, full[i]!), `frame ${i} bytes`).to.equal(0);
    });
    expect(net!.counters()).to.deep.include({ rxDrops: 0, rxErrors: 0 });
    expectTsharkValid(file, full.length);
  });

  it('io forwarding, legacy-ol-flags=1, GUEST_CSUM + GUEST_TSO: NEEDS_CSUM and GSO fields arrive; NEEDS_CSUM frames complete to valid frames, GSO frames carry DPDK\'s length-less pseudo-header sum and segment to valid frames (library, tshark)', async () => {
    const { got, full } = await loop('tso=1,legacy-ol-flags=1', { csum: true, tso: true, guestTso: true }, false);
    expect(got.map((g) => g.flags)).to.deep.equal(full.map(() => VIRTIO_NET_HDR_F_NEEDS_CSUM));
    expect(got.map((g) => [g.gsoType, g.gsoSize])).to.deep.equal([[0, 0], [0, 0], [0, 0], [0, 0], [VIRTIO_NET_HDR_GSO_TCPV4, MSS], [VIRTIO_NET_HDR_GSO_TCPV6, MSS]]);
    const file = path.join(dir, 'rx.pcap');
    const w = await PcapWriter.open(file);
    const segmenter = new Segmenter();
    let written = 0;
    for (const [i, g] of got.entries()) {
      expect(layout.parse(g.frame), `frame ${i} parses`).to.equal(true);
      const field = (g.frame[layout.csumField]! << 8) | g.frame[layout.csumField + 1]!;
      if (g.gsoType === 0) {
        // virtio 1.2 §5.1.6.4: the field holds the pseudo-header sum; complete it.
        expect(field).to.equal(pseudoHeaderSum(g.frame, layout.l3, layout.ipVersion, layout.protocol, layout.l4Length));
        const f = g.frame.slice();
        const b = new RxBurst(1);
        b.buffer = f;
        b.offsets[0] = 0;
        b.lengths[0] = f.length;
        b.flags[0] = g.flags;
        b.csumStarts[0] = layout.l4;
        b.csumOffsets[0] = layout.csumField - layout.l4;
        expect(b.completeChecksum(0)).to.equal(true);
        expect(Buffer.compare(f, full[i]!), `frame ${i} after completion`).to.equal(0);
        w.write(f);
        written++;
      } else {
        // Measured: DPDK rewrites a GSO frame's field to the pseudo-header sum without the
        // TCP length (its mbuf TSO convention), not the §5.1.6.2 sum the driver sent; a
        // driver that completed it would get a wrong checksum. Segments are summed afresh.
        expect(field, `GSO frame ${i}: DPDK's length-less pseudo-header sum`).to.equal(pseudoHeaderSum(g.frame, layout.l3, layout.ipVersion, 6, 0));
        const n = segmenter.segment(g.frame, g.frame.length, layout, g.gsoSize, (seg) => {
          expect(valid(seg)).to.equal(true);
          w.write(seg);
          written++;
          return true;
        });
        expect(n).to.equal(Math.ceil((g.frame.length - layout.headersLength) / MSS));
      }
    }
    await w.close();
    expectTsharkValid(file, written);
  });

  it("csum forwarding engine (csum set ip/udp/tcp sw): testpmd counts no bad checksum, and what it sends back is valid", async () => {
    backend = await startTestpmd({ forwardMode: 'csum', interactive: true, extraVdevArgs: 'tso=1' });
    // The engine's Bad-ipcsum / Bad-l4csum come from the RX flags the PMD sets; the vhost PMD
    // takes UDP/TCP checksum offload (capabilities 0xd), so the flags are DPDK's own verdict.
    for (const c of ['port stop 0', 'port config 0 rx_offload udp_cksum on', 'port config 0 rx_offload tcp_cksum on', 'csum set ip sw 0', 'csum set udp sw 0', 'csum set tcp sw 0', 'port start 0']) {
      const out = await backend.command(c);
      expect(out, c).not.to.match(/Fail|Invalid|Bad arguments/i);
    }
    net = await VirtioNet.open(backend.socketPath, { tso: true });
    await backend.startForwarding();
    const { full, sent, offloads } = offloadedFrames();
    expect(net.sendBurst(sent, sent.length, 0, offloads)).to.equal(sent.length);
    const got = await receiveAll(net, sent.length, false);
    const stats = await backend.stopForwarding();
    const m = /RX-packets:\s+(\d+)[\s\S]*?Bad-ipcsum:\s+(\d+)\s+Bad-l4csum:\s+(\d+)/.exec(stats);
    expect(m, stats).to.not.equal(null);
    expect({ rx: Number(m![1]), badIp: Number(m![2]), badL4: Number(m![3]) }).to.deep.equal({ rx: full.length, badIp: 0, badL4: 0 });
    expect(got).to.have.length(full.length);
    got.forEach((g, i) => expect(valid(g.frame), `frame ${i}`).to.equal(true));
  });

  for (const mode of ['csum', 'tso'] as const) {
    it(`CLI: net send --${mode} on one vhost port, io forwarding${mode === 'csum' ? ' (legacy-ol-flags=1)' : ''}, net recv --csum --guest-tso on the other: ${mode === 'csum' ? 'partial checksums completed before --pcap' : '65 535-byte frames whole'}, tshark validates all`, async () => {
      const second = path.join(dir, 'port1.sock');
      // --csum: legacy offload flags, so the partial checksums reach net recv (flagged NEEDS_CSUM);
      // --tso: compliant flags, where DPDK completes the checksums and passes each frame whole.
      const ol = mode === 'csum' ? 'tso=1,legacy-ol-flags=1' : 'tso=1';
      backend = await startTestpmd({ forwardMode: 'io', interactive: true, autoStart: true, extraVdevArgs: ol, extraVdevs: [`net_vhost1,iface=${second},queues=1,${ol}`] });
      const count = mode === 'tso' ? 20 : 200;
      const file = path.join(dir, 'out.pcap');
      const recv = runNode(MAIN, ['net', 'recv', '--socket', second, '--count', String(count), '--csum', '--guest-tso', '--queue-size', '1024', '--pcap', file, '--json', '--timeout', '10000'], 30_000);
      // Port 1's link comes up once the receiver's device is ready; frames sent before would be dropped.
      await backend.waitDeviceReady(second);
      const sendArgs = mode === 'tso' ? ['--tso', String(MSS)] : ['--csum', '--size', '512'];
      const send = await runNode(MAIN, ['net', 'send', '--socket', backend.socketPath, '--count', String(count), ...sendArgs, '--json'], 30_000);
      expect(send.status, send.stderr).to.equal(0);
      expect(JSON.parse(send.stdout)).to.include({ frames: count, offload: mode });
      const r = await recv;
      expect(r.status, r.stderr).to.equal(0);
      const summary = JSON.parse(r.stdout) as { frames: number; offloads: { needsCsum: number; dataValid: number; csumErrors: number; gso: number } };
      expect(summary.frames).to.equal(count);
      expect(summary.offloads).to.deep.equal({ needsCsum: mode === 'csum' ? count : 0, dataValid: 0, csumErrors: 0, gso: 0 });
      const frames = readPcapFrames(file);
      expect(frames).to.have.length(count);
      expect(frames.every(valid), 'every captured frame has valid checksums').to.equal(true);
      if (mode === 'tso') expect(frames.every((f) => f.length === 65535)).to.equal(true);
      expectTsharkValid(file, count);
    });
  }
});
