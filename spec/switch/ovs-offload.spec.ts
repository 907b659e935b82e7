/**
 * Offloads through Open vSwitch (OVS 3.1 / DPDK 22.11, Debian `openvswitch-switch-dpdk`):
 * VM A (a VirtioNet driver with CSUM and HOST_TSO4/6) sends UDP and TCP frames with
 * NEEDS_CSUM (pseudo-header sum only, virtio 1.2 §5.1.6.2) and 64 KiB TCP GSO frames
 * through one OVS bridge to three VMs that negotiated different receive offloads:
 * `plain` (none), `gcsum` (GUEST_CSUM) and `gtso` (GUEST_CSUM + GUEST_TSO4/6 + MRG_RXBUF).
 * All are dpdkvhostuserclient ports (OVS offers HOST_TSO4/6 on no other kind). One flow
 * copies every frame from A to all three. Each receiver's frames are checked by this
 * library and by tshark's checksum validation on a pcap, after completing a NEEDS_CSUM
 * checksum the way `net recv --csum` does (virtio 1.2 §5.1.6.4); GSO frames that arrive
 * whole are cut into segments here, and every payload byte of each TSO frame is compared.
 *
 * Run twice: with `other_config:userspace-tso-enable=true` and without it. What OVS 3.1
 * offers and does either way is asserted as measured (see the README, "Offloads"):
 * with TSO it completes no checksum and segments nothing, so only a receiver with
 * GUEST_CSUM gets frames it can make valid.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { TxOffloads } from '../../lib/devices/net/tx-offloads.js';
import { RxBurst, VirtioNet, type VirtioNetOptions } from '../../lib/devices/net/virtio-net.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../../lib/devices/net/virtio-net-hdr.js';
import { findExecutable, liveBackends } from '../../lib/launch/backend-process.js';
import { ovsDpdkInstalled, startOvs, type OvsBackend } from '../../lib/launch/ovs.js';
import { checksumsValid, FrameLayout, pseudoHeaderSum } from '../../lib/net/checksum.js';
import { buildL4Frame } from '../../lib/net/l4-frame.js';
import { Segmenter } from '../../lib/net/segment.js';
import { PcapWriter } from '../../lib/pcap/pcap-writer.js';
import { featureNames } from '../../lib/protocol/constants.js';
import { UnixListener } from '../../lib/transport/unix-listener.js';

const MSS = 1448;
const A_MAC = '02:00:00:00:0b:01';
/** A MAC nobody has: OVS floods, the flow below sends to all three receivers anyway. */
const DST_MAC = '02:00:00:00:0b:ff';

/** NEEDS_CSUM UDP and TCP over IPv4 and IPv6, then (with TSO) a 64 KiB GSO frame for each IP version. */
function offloadedFrames(tso: boolean): { full: Uint8Array[]; sent: Uint8Array[]; offloads: TxOffloads } {
  const o = { srcMac: A_MAC, dstMac: DST_MAC };
  const full = [
    buildL4Frame({ ...o, protocol: 'udp', ipVersion: 4, payloadLength: 300, seq: 1 }),
    buildL4Frame({ ...o, protocol: 'udp', ipVersion: 6, payloadLength: 301, seq: 2 }),
    buildL4Frame({ ...o, protocol: 'tcp', ipVersion: 4, payloadLength: 302, seq: 3, tcpSeq: 1000 }),
    buildL4Frame({ ...o, protocol: 'tcp', ipVersion: 6, payloadLength: 303, seq: 4, tcpSeq: 2000 }),
  ];
  if (tso) {
    // 65 535-byte frames at most: tshark leaves the TCP checksum of a larger frame unverified.
    full.push(buildL4Frame({ ...o, protocol: 'tcp', ipVersion: 4, payloadLength: 65535 - 54, seq: 5, tcpSeq: 100_000 }));
    full.push(buildL4Frame({ ...o, protocol: 'tcp', ipVersion: 6, payloadLength: 65000, seq: 6, tcpSeq: 200_000 }));
    // The same size over IPv4 (65 054 bytes): OVS 3.1 drops the 65 535-byte one on reception.
    full.push(buildL4Frame({ ...o, protocol: 'tcp', ipVersion: 4, payloadLength: 65000, seq: 7, tcpSeq: 300_000 }));
  }
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
  /** Whether the frame validated as it arrived, before any completion. */
  validAsIs: boolean;
  /** Whether its L4 checksum field held the §5.1.6.2 pseudo-header sum (with the L4 length). */
  pseudoSum: boolean;
  /** Whether it held the pseudo-header sum without the L4 length (DPDK's mbuf TSO convention). */
  lenlessSum: boolean;
}

const layout = new FrameLayout();
const valid = (f: Uint8Array) => layout.parse(f) && checksumsValid(f, layout);

/** Receives until `quietMs` pass without a frame (after the first) or `timeoutMs` in all. */
async function receive(net: VirtioNet, quietMs = 400, timeoutMs = 4000): Promise<Received[]> {
  const burst = new RxBurst(64);
  const got: Received[] = [];
  const end = Date.now() + timeoutMs;
  let last = Date.now();
  while (Date.now() < end && (got.length === 0 || Date.now() - last < quietMs)) {
    const n = net.receiveBurst(0, burst);
    for (let i = 0; i < n; i++) {
      const raw = burst.frame(i);
      const validAsIs = valid(raw);
      const pseudoSum = layout.parse(raw) && ((raw[layout.csumField]! << 8) | raw[layout.csumField + 1]!) === pseudoHeaderSum(raw, layout.l3, layout.ipVersion, layout.protocol, layout.l4Length);
      const lenlessSum = layout.ok && ((raw[layout.csumField]! << 8) | raw[layout.csumField + 1]!) === pseudoHeaderSum(raw, layout.l3, layout.ipVersion, layout.protocol, 0);
      const r = { flags: burst.flags[i]!, gsoType: burst.gsoTypes[i]!, gsoSize: burst.gsoSizes[i]!, validAsIs, pseudoSum, lenlessSum };
      // What `net recv --csum` does: complete a NEEDS_CSUM checksum in place (§5.1.6.4).
      expect(burst.completeChecksum(i), 'completeChecksum').to.equal(true);
      got.push({ ...r, frame: burst.frame(i) });
    }
    if (n > 0) last = Date.now();
    await new Promise((r) => setTimeout(r, n > 0 ? 0 : 2));
  }
  return got;
}

/** tshark's checksum verdicts, one per frame: the IPv4 header's ('' for IPv6) and the UDP or TCP one ('1' good, '0' bad); null without tshark. */
function tsharkStatus(file: string): { ip: string; l4: string }[] | null {
  if (!findExecutable('tshark')) {
    process.stdout.write('      (tshark not installed: apt-get install tshark; checked by the library only)\n');
    return null;
  }
  const out = execFileSync(
    'tshark',
    ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-e', 'ip.checksum.status', '-e', 'udp.checksum.status', '-e', 'tcp.checksum.status'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return out.trimEnd().split('\n').map((l) => {
    const [ip = '', udp = '', tcp = ''] = l.split('\t');
    return { ip, l4: udp || tcp };
  });
}

/** Which of the four NEEDS_CSUM frames `frame` (parsed into `layout`) is, by protocol, IP version and TCP sequence number; -1 for none. */
function smallIndex(frame: Uint8Array): number {
  const v6 = layout.ipVersion === 6 ? 1 : 0;
  if (layout.protocol === 17) return v6;
  const seq = new DataView(frame.buffer, frame.byteOffset).getUint32(layout.l4 + 4);
  return seq === 1000 + 1000 * v6 ? 2 + v6 : -1;
}

/** What one receiver saw, summed up for the assertions and the log. */
interface Verdict {
  /** The four NEEDS_CSUM frames: header flags as they arrived (NEEDS_CSUM 1, DATA_VALID 2). */
  csumFlags: number[];
  /** The four NEEDS_CSUM frames: valid as they arrived, before completion. */
  csumValidAsIs: boolean[];
  /** The four NEEDS_CSUM frames: -1 when identical to what A meant to send (after completion), else the first differing byte. */
  csumDiff: number[];
  /** The TSO frames that arrived whole, as they came (validity after completing NEEDS_CSUM). */
  whole: { len: number; flags: number; gsoType: number; gsoSize: number; pseudoSum: boolean; lenlessSum: boolean; validAfterCompletion: boolean }[];
  /** TCP segments of the TSO frames whose checksums did not validate (none expected). */
  badSegments: { len: number; flags: number; fromWhole: boolean }[];
  /** The four NEEDS_CSUM frames: whether the checksum field held the pseudo-header sum as they arrived. */
  csumPseudo: boolean[];
  /** Per TSO frame: how it arrived, 'whole' (one frame with gso fields), 'segments N' or 'missing'. */
  tso: string[];
  /** Frames written to the pcap: NEEDS_CSUM frames after completion, segments as they came or as cut here. */
  written: number;
  /** tshark's verdicts on that pcap (null without tshark). */
  tshark: { ip: string; l4: string }[] | null;
  /** Frames that were neither (none expected). */
  other: number;
}

/**
 * Checks every frame a receiver got against what A sent: NEEDS_CSUM frames byte for byte
 * after completion; TSO frames, whole (segmented here) or in segments, every payload byte
 * at its sequence number. Writes all (segments of whole GSO frames cut here) to a pcap
 * for tshark. Returns what it saw.
 */
async function check(got: Received[], full: Uint8Array[], file: string, who: string): Promise<Verdict> {
  const w = await PcapWriter.open(file);
  let written = 0;
  const verdict: Verdict = { csumFlags: [], csumValidAsIs: [], csumDiff: [], csumPseudo: [], tso: [], whole: [], badSegments: [], written: 0, tshark: null, other: 0 };
  const small = full.slice(0, 4);
  const big = full.slice(4).map((f) => {
    expect(layout.parse(f)).to.equal(true);
    return { ipVersion: layout.ipVersion, tcpSeq: new DataView(f.buffer).getUint32(layout.l4 + 4), payload: f.subarray(layout.headersLength), seen: new Uint8Array(f.length - layout.headersLength), frames: 0, segments: 0 };
  });
  const bigOf = (seq: number) => big.find((x) => x.ipVersion === layout.ipVersion && layout.protocol === 6 && seq >= x.tcpSeq && seq < x.tcpSeq + x.payload.length);
  const segmenter = new Segmenter();
  const takeSegment = (seg: Uint8Array, fromWhole: boolean, flags = 0): boolean => {
    if (!valid(seg)) verdict.badSegments.push({ len: seg.length, flags, fromWhole });
    expect(layout.parse(seg)).to.equal(true);
    const seq = new DataView(seg.buffer, seg.byteOffset).getUint32(layout.l4 + 4);
    const b = bigOf(seq);
    if (!b) return false;
    const off = seq - b.tcpSeq;
    const data = seg.subarray(layout.headersLength, layout.l4 + layout.l4Length);
    expect(off >= 0 && off + data.length <= b.payload.length, `${who}: segment at payload offset ${off}`).to.equal(true);
    expect(Buffer.compare(data, b.payload.subarray(off, off + data.length)), `${who}: payload bytes at ${off}`).to.equal(0);
    b.seen.fill(1, off, off + data.length);
    if (!fromWhole) b.segments++;
    w.write(seg);
    written++;
    return true;
  };
  for (const g of got) {
    expect(layout.parse(g.frame), `${who}: frame parses`).to.equal(true);
    const i = smallIndex(g.frame);
    if (i >= 0 && g.gsoType === 0) {
      const want = small[i]!;
      let d = 0;
      while (d < want.length && want[d] === g.frame[d]) d++;
      verdict.csumDiff[i] = d === want.length && g.frame.length === want.length ? -1 : d;
      verdict.csumFlags[i] = g.flags;
      verdict.csumValidAsIs[i] = g.validAsIs;
      verdict.csumPseudo[i] = g.pseudoSum;
      w.write(g.frame);
      written++;
    } else if (g.gsoType !== 0) {
      const b = bigOf(new DataView(g.frame.buffer, g.frame.byteOffset).getUint32(layout.l4 + 4));
      expect(b, `${who}: GSO frame of IPv${layout.ipVersion}`).to.not.equal(undefined);
      b!.frames++;
      verdict.whole.push({ len: g.frame.length, flags: g.flags, gsoType: g.gsoType, gsoSize: g.gsoSize, pseudoSum: g.pseudoSum, lenlessSum: g.lenlessSum, validAfterCompletion: valid(g.frame) });
      const frame = g.frame.slice();
      const n = segmenter.segment(frame, frame.length, layout, g.gsoSize, (seg) => takeSegment(seg, true));
      expect(n, `${who}: segments of a whole GSO frame`).to.equal(Math.ceil(b!.payload.length / g.gsoSize));
    } else if (bigOf(new DataView(g.frame.buffer, g.frame.byteOffset).getUint32(layout.l4 + 4))) {
      takeSegment(g.frame, false, g.flags);
    } else verdict.other++;
  }
  await w.close();
  for (const b of big) {
    const complete = b.seen.every((x) => x === 1);
    verdict.tso.push(!complete && b.frames === 0 && b.segments === 0 ? 'missing' : `${complete ? '' : 'INCOMPLETE '}${b.frames > 0 ? 'whole' : `segments ${b.segments}`}`);
  }
  verdict.written = written;
  verdict.tshark = tsharkStatus(file);
  return verdict;
}

/** The features a vhost-user socket offers (GET_FEATURES), from a client that then goes. */
async function offered(socketPath: string): Promise<bigint> {
  const c = await VhostUserClient.connect(socketPath);
  try {
    return await c.getFeatures();
  } finally {
    c.close();
  }
}

const OFFLOAD_BITS = ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_GUEST_TSO4', 'VIRTIO_NET_F_GUEST_TSO6', 'VIRTIO_NET_F_GUEST_ECN', 'VIRTIO_NET_F_GUEST_UFO', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_HOST_TSO6', 'VIRTIO_NET_F_HOST_ECN', 'VIRTIO_NET_F_HOST_UFO', 'VIRTIO_NET_F_HOST_USO'];

const RECEIVERS: { name: string; options: VirtioNetOptions }[] = [
  { name: 'plain', options: {} },
  { name: 'gcsum', options: { csum: true } },
  { name: 'gtso', options: { csum: true, guestTso: true } },
];

for (const userspaceTso of [true, false]) {
  describe(`switch: offloads through Open vSwitch, userspace-tso-enable=${userspaceTso} @integration`, function () {
    this.timeout(30_000);
    let ovs: OvsBackend | undefined;
    const nets: VirtioNet[] = [];
    let dir: string;

    const listeners = new Map<string, UnixListener>();

    before(async function () {
      if (!ovsDpdkInstalled()) {
        process.stdout.write('      skipped: OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)\n');
        this.skip();
      }
      dir = mkdtempSync(path.join(os.tmpdir(), 'vhu-ovs-offload-'));
      // dpdkvhostuserclient ports (this side listens): OVS 3.1 offers HOST_TSO4/6 only on
      // these. On a dpdkvhostuser port it asks DPDK for linear buffers without external ones,
      // and DPDK then withdraws host segmentation (measured; its log says so). 'srv' is one
      // such port, only probed; 'probe' is a client port only probed.
      const clients = ['a', ...RECEIVERS.map((r) => r.name), 'probe'];
      for (const name of clients) listeners.set(name, UnixListener.listen(path.join(dir, `${name}.sock`)));
      ovs = await startOvs({
        userspaceTso,
        ports: [
          ...clients.map((name, i) => ({ name, ofport: i + 1, kind: 'dpdkvhostuserclient' as const, socketPath: path.join(dir, `${name}.sock`) })),
          { name: 'srv', ofport: 10 },
        ],
      });
      // One copy of each of A's frames to every receiver, none back to A.
      await ovs.replaceFlows(['priority=10,in_port=1,actions=output:2,output:3,output:4', 'priority=0,actions=drop']);
    });
    after(async () => {
      for (const n of nets.splice(0)) n.close();
      await ovs?.stop();
      ovs = undefined;
      for (const l of listeners.values()) l.close();
      listeners.clear();
      if (dir) rmSync(dir, { recursive: true, force: true });
      expect(liveBackends(), 'back-end processes left running').to.deep.equal([]);
    });

    it(`offers ${userspaceTso ? 'CSUM and HOST_TSO4/6 on dpdkvhostuserclient ports (CSUM only on dpdkvhostuser ports)' : 'neither CSUM nor HOST_TSO4/6'}, and GUEST_CSUM / GUEST_TSO4/6 either way`, async () => {
      const client = await VhostUserClient.accept(listeners.get('probe')!, { acceptTimeoutMs: 10_000 });
      let fc: bigint;
      try {
        fc = await client.getFeatures();
      } finally {
        client.close();
      }
      const fs = await offered(ovs!.socketPath('srv'));
      const pick = (f: bigint) => featureNames(f, 'net').filter((n) => OFFLOAD_BITS.includes(n));
      process.stdout.write(`      OVS userspace-tso-enable=${userspaceTso} offers on dpdkvhostuserclient: ${featureNames(fc, 'net').join(' ')}\n`);
      process.stdout.write(`      OVS userspace-tso-enable=${userspaceTso} offers on dpdkvhostuser: ${featureNames(fs, 'net').join(' ')}\n`);
      const guest = ['VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_GUEST_TSO4', 'VIRTIO_NET_F_GUEST_TSO6', 'VIRTIO_NET_F_GUEST_ECN', 'VIRTIO_NET_F_GUEST_UFO'];
      // With TSO, OVS withdraws HOST_ECN (and HOST_UFO, never offered by DPDK 22.11) and
      // offers CSUM + HOST_TSO4/6; without, it withdraws CSUM + HOST_TSO4/6.
      const host = userspaceTso ? ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_HOST_TSO6'] : ['VIRTIO_NET_F_HOST_ECN'];
      expect(pick(fc), 'dpdkvhostuserclient').to.have.members([...guest, ...host]);
      // DPDK then takes HOST_TSO4/6 away from a dpdkvhostuser port (linear buffers without
      // external ones), not HOST_ECN.
      expect(pick(fs), 'dpdkvhostuser').to.have.members([...guest, 'VIRTIO_NET_F_HOST_ECN', ...(userspaceTso ? ['VIRTIO_NET_F_CSUM'] : [])]);
    });

    it(userspaceTso
      ? 'NEEDS_CSUM frames and 64 KiB TSO frames from A: GUEST_CSUM receivers get them flagged, never segmented, valid once completed (NEEDS_CSUM) or cut here (TSO) by the library and tshark; a receiver without GUEST_CSUM gets them unflagged with bad checksums'
      : 'without CSUM or HOST_TSO, A sends full checksums and every receiver gets them valid (library, tshark)', async () => {
      const a = await VirtioNet.accept(listeners.get('a')!, { csum: true, tso: true, acceptTimeoutMs: 10_000 });
      nets.push(a);
      const rx: VirtioNet[] = [];
      for (const r of RECEIVERS) {
        const n = await VirtioNet.accept(listeners.get(r.name)!, { ...r.options, acceptTimeoutMs: 10_000 });
        nets.push(n);
        rx.push(n);
      }
      for (const p of ['a', ...RECEIVERS.map((r) => r.name)]) await ovs!.waitLink(p);
      process.stdout.write(`      negotiated: A ${JSON.stringify(a.offloads)}; ${RECEIVERS.map((r, i) => `${r.name} ${JSON.stringify(rx[i]!.offloads)}`).join('; ')}\n`);
      const tso = a.offloads.tso4 && a.offloads.tso6;
      expect(tso, 'A negotiated HOST_TSO4/6').to.equal(userspaceTso);
      const { full, sent, offloads } = offloadedFrames(tso);
      // Without CSUM negotiated, A sends the frames with full checksums.
      const out = a.offloads.csum ? sent : full.map((f) => f.slice());
      expect(a.sendBurst(out, out.length, 0, a.offloads.csum ? offloads : undefined)).to.equal(out.length);
      const got = await Promise.all(rx.map((n) => receive(n)));
      const verdicts: Verdict[] = [];
      for (const [i, r] of RECEIVERS.entries()) {
        const v = await check(got[i]!, full, path.join(dir, `${r.name}.pcap`), r.name);
        verdicts.push(v);
        const { tshark, ...rest } = v;
      process.stdout.write(`      ${r.name}: ${JSON.stringify(rest)}; tshark L4 verdicts: ${tshark?.map((t) => t.l4).join('') ?? 'n/a'}\n`);
      }
      const stats = await Promise.all(['a', ...RECEIVERS.map((r) => r.name)].map(async (p) => [p, (await ovs!.portStats(p)).raw] as const));
      const log = (await ovs!.logs(400)).split('\n').filter((l) => /\|(ERR|WARN|EMER)\||VHOST_DATA/.test(l) && !/deprecated|failed to connect/.test(l));
      process.stdout.write(`      OVS log: ${log.join('\n        ')}\n`);
      const brief = (raw: Record<string, number>) => Object.fromEntries(Object.entries(raw).filter(([k, x]) => x !== 0 && !k.includes('_q0_')));
      process.stdout.write(`      OVS port counters: ${JSON.stringify(Object.fromEntries(stats.map(([p, raw]) => [p, brief(raw)])))}\n`);
      const byName = Object.fromEntries(RECEIVERS.map((r, i) => [r.name, verdicts[i]!]));
      const good = (v: Verdict) => v.tshark === null || v.tshark.every((t) => (t.ip === '' || t.ip === '1') && t.l4 === '1');
      for (const v of verdicts) {
        expect(v.other).to.equal(0);
        expect(v.csumFlags, 'all four NEEDS_CSUM frames arrive').to.have.length(4);
        if (v.tshark) expect(v.tshark).to.have.length(v.written);
      }
      if (!userspaceTso) {
        // No CSUM, no HOST_TSO: A sent full checksums, and every receiver gets them as sent.
        for (const v of verdicts) {
          expect(v).to.deep.include({ csumFlags: [0, 0, 0, 0], csumValidAsIs: [true, true, true, true], csumDiff: [-1, -1, -1, -1], tso: [], whole: [], badSegments: [] });
          expect(good(v), 'tshark: every checksum good').to.equal(true);
        }
        return;
      }
      // The 65 535-byte IPv4 TSO frame never enters OVS: DPDK's dequeue cannot allocate an
      // mbuf that large ("failed mbuf alloc of size 65535"), and A's rx counter leaves it out.
      expect(log.some((l) => l.includes('failed mbuf alloc of size 65535'))).to.equal(true);
      expect(stats.find(([p]) => p === 'a')![1]['rx_packets']).to.equal(sent.length - 1);
      // GUEST_CSUM receivers, with or without GUEST_TSO: NEEDS_CSUM frames arrive still
      // flagged NEEDS_CSUM and complete to exactly what A meant; each 65 KiB TSO frame arrives
      // whole, never segmented, flagged NEEDS_CSUM with gso_type set even without GUEST_TSO
      // (virtio 1.2 §5.1.6.4.1 forbids that), gso_size recomputed by OVS from the MTU
      // (1460 IPv4, 1440 IPv6, not A's 1448) and the field holding the pseudo-header sum
      // without the length, so completing it does not validate; cut into segments here
      // (fresh checksums) every payload byte is there.
      for (const name of ['gcsum', 'gtso']) {
        const v = byName[name]!;
        expect(v, name).to.deep.include({ csumFlags: [1, 1, 1, 1], csumDiff: [-1, -1, -1, -1], csumPseudo: [true, true, true, true], tso: ['missing', 'whole', 'whole'], badSegments: [] });
        expect(v.whole, name).to.deep.equal([
          { len: 65074, flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1440, pseudoSum: false, lenlessSum: true, validAfterCompletion: false },
          { len: 65054, flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1460, pseudoSum: false, lenlessSum: true, validAfterCompletion: false },
        ]);
        expect(good(v), `${name}: tshark finds every checksum good`).to.equal(true);
      }
      // A receiver without GUEST_CSUM gets the same frames without any flag: the NEEDS_CSUM
      // frames with the pseudo-header sum still in the checksum field, the TSO frames as
      // 65 KiB frames, unsegmented, with a wrong checksum. OVS 3.1 completes nothing in
      // software; the driver cannot tell these frames are broken, tshark says they are.
      const plain = byName['plain']!;
      expect(plain).to.deep.include({ csumFlags: [0, 0, 0, 0], csumValidAsIs: [false, false, false, false], csumPseudo: [true, true, true, true], csumDiff: [40, 60, 50, 70], tso: ['missing', 'segments 1', 'segments 1'], whole: [] });
      expect(plain.badSegments.map((b) => b.len)).to.deep.equal([65074, 65054]);
      if (plain.tshark) expect(plain.tshark.map((t) => t.l4)).to.deep.equal(['0', '0', '0', '0', '0', '0']);
    });
  });
}
