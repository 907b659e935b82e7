/**
 * Hostile offload headers on a net back-end's TX path. Each check sends one frame
 * whose virtio_net_hdr a driver may not send (virtio 1.2 §5.1.6.2.1, 'Packet
 * Transmission': driver requirements) or whose checksum fields point outside the
 * packet, then a valid frame. Acting on such a header is how back-ends have been
 * broken: DPDK's CVE-2024-11614 read and wrote beyond the mbuf for a csum_start
 * beyond the frame. The back-end passes when it drops the hostile frame (it may
 * count it) and goes on serving: the valid frame after it comes back. It fails when
 * it crashes (seen with --spawn), stops serving (the valid frame does not come back
 * within the deadline), or delivers the hostile frame, changed or not: a device
 * cannot do what the header asks, so forwarding the frame passes on a packet whose
 * checksum no one computed, and changing it is corruption.
 *
 * The hostile frame carries a marker in its payload so it is recognised on RX
 * whatever the back-end did to its headers. GUEST_CSUM is never negotiated here, so
 * a back-end may not hand a partial checksum on to RX either.
 */
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4 } from '../../devices/net/virtio-net-hdr.js';
import { checksumsValid, FrameLayout } from '../../net/checksum.js';
import { buildL4Frame } from '../../net/l4-frame.js';
import { bit, VirtioNetFeature } from '../../protocol/constants.js';
import { fail, type Check } from '../check.js';
import type { CheckContext } from '../context.js';
import { openDataPlane, WORK_MS } from '../dataplane.js';

/** virtio 1.2 §5.1.6.2's device side, as these checks read it. */
const TX_RULE =
  "virtio 1.2, 'Packet Transmission': with NEEDS_CSUM the device stores the checksum of [csum_start, end) at csum_start + csum_offset, inside the packet; 5.1.6.2.1 says which headers a driver may send (no gso_type without its HOST_ feature, NEEDS_CSUM and a gso_size with one)";
const MARKER = 0x0ff10ad0;
const layout = new FrameLayout();

interface Hostile {
  id: string;
  title: string;
  /** What the header breaks, for the rule line. */
  breaks: string;
  /** Feature bits to negotiate (each must be offered, or the check is skipped). */
  features: bigint;
  /** The frame and its header. */
  build(): { frame: Uint8Array; flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number };
}

const CSUM = bit(VirtioNetFeature.VIRTIO_NET_F_CSUM);
const TSO4 = CSUM | bit(VirtioNetFeature.VIRTIO_NET_F_HOST_TSO4);
const tcp = (payloadLength: number) => buildL4Frame({ protocol: 'tcp', payloadLength, seq: MARKER, checksum: 'partial' });
const udp = (payloadLength: number) => buildL4Frame({ protocol: 'udp', payloadLength, seq: MARKER, checksum: 'partial' });
const NEEDS = VIRTIO_NET_HDR_F_NEEDS_CSUM;
const NONE = VIRTIO_NET_HDR_GSO_NONE;

const CASES: Hostile[] = [
  {
    id: 'csum-start-beyond-frame',
    title: 'NEEDS_CSUM with csum_start beyond the end of a 128-byte UDP frame (CVE-2024-11614)',
    breaks: 'csum_start must lie inside the packet',
    features: CSUM,
    build: () => ({ frame: udp(86), flags: NEEDS, gsoType: NONE, hdrLen: 0, gsoSize: 0, csumStart: 1000, csumOffset: 6 }),
  },
  {
    id: 'csum-field-beyond-frame',
    title: 'NEEDS_CSUM with csum_start inside but csum_start + csum_offset + 2 beyond the frame',
    breaks: 'the checksum field csum_start + csum_offset .. + 2 must lie inside the packet',
    features: CSUM,
    build: () => ({ frame: udp(86), flags: NEEDS, gsoType: NONE, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 100 }),
  },
  {
    id: 'csum-headers-cut',
    title: 'NEEDS_CSUM on an IPv4 TCP frame cut 2 bytes into its TCP header (csum fields in range)',
    breaks: 'a TCP packet whose checksum is offloaded holds a TCP header',
    features: CSUM,
    build() {
      // Ethernet + IPv4 (total length 22: TCP, 2 bytes of it) + the 2-byte source port; the
      // checksum field asked for is the source port itself.
      const full = tcp(8);
      const frame = full.slice(0, 14 + 20 + 2);
      frame[14 + 2] = 0;
      frame[14 + 3] = 22;
      // The marker goes where a device that forwards anyway keeps it: the IPv4 id and checksum fields.
      frame.set([0x0f, 0xf1, 0x0a, 0xd0], 14 + 4);
      return { frame, flags: NEEDS, gsoType: NONE, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 0 };
    },
  },
  {
    id: 'gso-size-zero',
    title: 'a TCPV4 GSO frame with gso_size 0',
    breaks: 'a GSO frame carries the segment size in gso_size',
    features: TSO4,
    build: () => ({ frame: tcp(1200), flags: NEEDS, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 54, gsoSize: 0, csumStart: 34, csumOffset: 16 }),
  },
  {
    id: 'gso-hdr-len-beyond-frame',
    title: 'a TCPV4 GSO frame whose hdr_len is 4000, beyond its 1254 bytes',
    breaks: 'hdr_len is the length of the headers in the packet',
    features: TSO4,
    build: () => ({ frame: tcp(1200), flags: NEEDS, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 4000, gsoSize: 500, csumStart: 34, csumOffset: 16 }),
  },
  {
    id: 'gso-type-unknown',
    title: 'gso_type 6, which no version of the spec defines',
    breaks: 'gso_type is one of NONE, TCPV4, UDP, TCPV6, UDP_L4 (with ECN)',
    features: TSO4,
    build: () => ({ frame: tcp(1200), flags: NEEDS, gsoType: 6, hdrLen: 54, gsoSize: 500, csumStart: 34, csumOffset: 16 }),
  },
  {
    id: 'gso-not-negotiated',
    title: 'a TCPV4 GSO frame with VIRTIO_NET_F_HOST_TSO4 not negotiated (CSUM only)',
    breaks: '"If none of the VIRTIO_NET_F_HOST_TSO4, TSO6, UFO or USO options have been negotiated, the driver MUST set gso_type to VIRTIO_NET_HDR_GSO_NONE"',
    features: CSUM,
    build: () => ({ frame: tcp(1200), flags: NEEDS, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, hdrLen: 54, gsoSize: 500, csumStart: 34, csumOffset: 16 }),
  },
];

/** Index of the 4-byte marker in `f` past the Ethernet header, or -1. */
function markerAt(f: Uint8Array): number {
  for (let i = 14; i + 4 <= f.length; i++) {
    if (f[i] === 0x0f && f[i + 1] === 0xf1 && f[i + 2] === 0x0a && f[i + 3] === 0xd0) return i;
  }
  return -1;
}

function describeDelivery(sent: Uint8Array, got: Uint8Array): string {
  if (got.length !== sent.length) return `a ${got.length}-byte frame carrying it (sent ${sent.length} bytes)`;
  const changed: number[] = [];
  for (let i = 0; i < sent.length; i++) if (sent[i] !== got[i]) changed.push(i);
  if (changed.length === 0) return 'the frame unchanged (its checksum never computed)';
  const at = `${changed.slice(0, 6).join(', ')}${changed.length > 6 ? ', ...' : ''}`;
  const verdict = layout.parse(got) && checksumsValid(got, layout) ? 'its checksums now valid' : 'corrupted (its checksums do not verify)';
  return `the frame with ${changed.length} byte(s) changed at ${at}, ${verdict},`;
}

async function runHostile(ctx: CheckContext, h: Hostile): Promise<string> {
  const plane = await openDataPlane(ctx, { extraFeatures: h.features });
  const net = plane.net!;
  const b = h.build();
  const hdr = new Uint8Array(10);
  const dv = new DataView(hdr.buffer);
  hdr[0] = b.flags;
  hdr[1] = b.gsoType;
  dv.setUint16(2, b.hdrLen, true);
  dv.setUint16(4, b.gsoSize, true);
  dv.setUint16(6, b.csumStart, true);
  dv.setUint16(8, b.csumOffset, true);
  ctx.note(`TX header flags ${b.flags} gso_type ${b.gsoType} hdr_len ${b.hdrLen} gso_size ${b.gsoSize} csum_start ${b.csumStart} csum_offset ${b.csumOffset}, a ${b.frame.length}-byte frame`);
  if (!net.sendRaw(hdr, b.frame, 0xffff)) fail('the TX ring took no frame');
  // Frames come back in order through a loop or io forwarding: once the valid frame is
  // back, anything the back-end made of the hostile one is back too.
  const seq = 7001;
  if (!net.send(seq)) fail('the TX ring is full after the hostile frame');
  if (!(await net.waitFor(seq, WORK_MS))) fail(`after the hostile frame, a valid frame did not come back within ${WORK_MS} ms: the back-end stopped serving`);
  const back = net.frames.filter((f) => markerAt(f) >= 0);
  if (back.length > 0) fail(`the back-end delivered ${back.length === 1 ? describeDelivery(b.frame, back[0]!) : `${back.length} frames made of it`} instead of dropping it`);
  return 'dropped; the valid frame after it came back';
}

export const offloadChecks: Check[] = CASES.map((h) => ({
  id: `offload.${h.id}`,
  rule: `${TX_RULE}; here: ${h.breaks}`,
  title: h.title,
  devices: ['net'],
  timeoutMs: 15_000,
  run: (ctx) => runHostile(ctx, h),
}));
