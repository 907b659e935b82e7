/**
 * DPDK's own frontend, the performance anchor: a second, interactive dpdk-testpmd
 * whose port 0 is `net_virtio_user0` on the back-end's socket.
 */
import { randomBytes } from 'node:crypto';
import { VhostUserError } from '../../lib/errors.js';
import { findExecutable, makeTempDir, spawnBackend } from '../../lib/launch/backend-process.js';
import { dpdkRuntimeDir, TestpmdBackend, TestpmdConsole, type TestpmdForwardMode } from '../../lib/launch/dpdk-testpmd.js';

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
    '--',
    '-i',
    '--total-num-mbufs=8192',
    `--rxd=${o.queueSize}`, `--txd=${o.queueSize}`,
    `--burst=${o.burst}`,
    `--forward-mode=${o.forwardMode}`,
    ...(o.txFrameSize !== undefined ? [`--txpkts=${o.txFrameSize}`] : []),
  ];
}

/** Starts the frontend testpmd; resolves once its prompt is up (the port is started and connected by then). */
export async function startVirtioUserTestpmd(o: VirtioUserTestpmdOptions): Promise<TestpmdBackend> {
  if (!findExecutable('stdbuf')) {
    throw new VhostUserError('VHOST_SPAWN_FAILED', 'interactive testpmd needs stdbuf (coreutils)');
  }
  const tempDir = await makeTempDir('vhost-bench-fe-');
  const filePrefix = `vhubfe${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`;
  const args = virtioUserTestpmdArgs(o, filePrefix);
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
  return new TestpmdBackend(proc, prompt, filePrefix, args);
}
