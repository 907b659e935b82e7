/**
 * DPDK's own frontend, the performance anchor: a second, interactive dpdk-testpmd
 * whose port 0 is `net_virtio_user0` on the back-end's socket.
 */
import { randomBytes } from 'node:crypto';
import { VhostUserError } from '../../lib/errors.js';
import { findExecutable, makeTempDir, spawnBackend } from '../../lib/launch/backend-process.js';
import path from 'node:path';
import { dpdkRuntimeDir, TestpmdBackend, TestpmdConsole, type TestpmdForwardMode } from '../../lib/launch/dpdk-testpmd.js';
import { buildL4Frame, l4HeadersLength } from '../../lib/net/l4-frame.js';
import { PcapWriter } from '../../lib/pcap/pcap-writer.js';
import { TSO_MSS, type Offload } from './options.js';

export interface VirtioUserTestpmdOptions {
  /** The vhost-user back-end's socket (it must already listen). */
  socketPath: string;
  forwardMode: TestpmdForwardMode;
  /** CPU of the forwarding lcore. */
  forwardCore: number;
  /** CPU of the main lcore (runs the idle prompt); must differ from `forwardCore`. */
  mainCore: number;
  /** virtio-user `queue_size` and testpmd `--rxd/--txd`. */
  queueSize: number;
  burst: number;
  /** txonly: `--txpkts`, frame size including the Ethernet header. */
  txFrameSize?: number;
  /**
   * Offloaded TX (the csum engine, which sets the mbuf offload flags txonly never sets):
   * a second port, `net_pcap0` replaying one frame of `txFrameSize` bytes from a pcap
   * forever, forwarded to the virtio-user port (port 0) with the L4 checksum left to
   * the device, and for 'tso' cut by it (`tso set`). Needs {@link offloadCommands} once started.
   */
  offload?: Offload;
  /** With `offload`: the pcap file net_pcap0 replays (see {@link writeOffloadPcap}). */
  pcapPath?: string;
  readyTimeoutMs?: number;
}

let counter = 0;

/** The dpdk-testpmd argument vector for a virtio-user frontend (exported for the spec and the report). */
export function virtioUserTestpmdArgs(o: VirtioUserTestpmdOptions, filePrefix: string): string[] {
  if (o.socketPath.includes(',')) {
    throw new VhostUserError('VHOST_INVALID_ARGUMENT', `DPDK cannot take a socket path with a comma: ${o.socketPath}`);
  }
  return [
    '--no-huge', '-m', '1024', '--no-pci',
    `--file-prefix=${filePrefix}`,
    '-l', `${o.mainCore},${o.forwardCore}`,
    '--main-lcore', String(o.mainCore),
    '--vdev', `net_virtio_user0,path=${o.socketPath},queues=1,queue_size=${o.queueSize}`,
    ...(o.offload ? ['--vdev', `net_pcap0,rx_pcap=${o.pcapPath},infinite_rx=1`] : []),
    '--',
    '-i',
    // A TSO frame is one mbuf of up to 65 407 bytes. The virtio-user RX ring alone holds
    // queue-size of them: with 2048 the pool ran dry and TX stopped after 992 frames (measured).
    ...(o.offload === 'tso' ? ['--total-num-mbufs=6144', '--mbuf-size=65535'] : ['--total-num-mbufs=8192']),
    `--rxd=${o.queueSize}`, `--txd=${o.queueSize}`,
    `--burst=${o.burst}`,
    `--forward-mode=${o.offload ? 'csum' : o.forwardMode}`,
    ...(o.txFrameSize !== undefined && !o.offload ? [`--txpkts=${o.txFrameSize}`] : []),
  ];
}

/**
 * The prompt commands that make testpmd's csum engine hand the checksum (and for
 * 'tso' the segmentation) of what it forwards to port 0, the virtio-user port:
 * NEEDS_CSUM (and GSO) in the virtio_net_hdr. IPv4 header checksums stay in software
 * (virtio has no offload for them).
 */
export function offloadCommands(offload: Offload): string[] {
  return [
    'port stop all',
    'csum set ip sw 0',
    offload === 'tso' ? 'csum set tcp hw 0' : 'csum set udp hw 0',
    ...(offload === 'tso' ? [`tso set ${TSO_MSS} 0`] : []),
    'port start all',
  ];
}

/** The frame both frontends send for an offload cell: TCP (tso) or UDP (csum) over IPv4, `frameSize` bytes, full checksum. */
export function offloadFrame(offload: Offload, frameSize: number, checksum: 'full' | 'partial' = 'full'): Uint8Array {
  const protocol = offload === 'tso' ? 'tcp' : 'udp';
  return buildL4Frame({ protocol, payloadLength: frameSize - l4HeadersLength(4, protocol), checksum });
}

/** Writes the one-frame pcap net_pcap0 replays into `dir`; returns its path. */
export async function writeOffloadPcap(dir: string, offload: Offload, frameSize: number): Promise<string> {
  const file = path.join(dir, 'offload.pcap');
  const w = await PcapWriter.open(file);
  w.write(offloadFrame(offload, frameSize));
  await w.close();
  return file;
}

/** Starts the frontend testpmd; resolves once its prompt is up (the port is started and connected by then). */
export async function startVirtioUserTestpmd(o: VirtioUserTestpmdOptions): Promise<TestpmdBackend> {
  if (!findExecutable('stdbuf')) {
    throw new VhostUserError('VHOST_SPAWN_FAILED', 'interactive testpmd needs stdbuf (coreutils)');
  }
  const tempDir = await makeTempDir('vhost-bench-fe-');
  const filePrefix = `vhubfe${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`;
  const pcapPath = o.offload ? await writeOffloadPcap(tempDir, o.offload, o.txFrameSize ?? 1500) : undefined;
  const args = virtioUserTestpmdArgs({ ...o, pcapPath }, filePrefix);
  let prompt: TestpmdConsole | undefined;
  const proc = await spawnBackend({
    command: 'dpdk-testpmd',
    args,
    socketPath: o.socketPath,
    // The socket is the back-end's: never remove it.
    socketIsCallers: true,
    tempDir,
    readyTimeoutMs: o.readyTimeoutMs ?? 20_000,
    stdin: 'pipe',
    lineBuffered: true,
    mergeStderr: true,
    cleanupPaths: [dpdkRuntimeDir(filePrefix)],
    onSpawn: (b) => {
      prompt = new TestpmdConsole(b);
    },
    ready: () => prompt?.prompted ?? false,
    readyLabel: 'virtio-user port and prompt',
  });
  prompt!.consumePrompt();
  const fe = new TestpmdBackend(proc, prompt, filePrefix, args);
  try {
    for (const c of o.offload ? offloadCommands(o.offload) : []) {
      const out = await fe.command(c);
      if (/error|invalid|fail|not supported/i.test(out)) throw new VhostUserError('VHOST_BACKEND_FAILED', `frontend testpmd: '${c}' said:\n${out}`);
    }
  } catch (e) {
    await fe.stop();
    throw e;
  }
  return fe;
}
