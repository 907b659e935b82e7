/**
 * QEMU (Debian's qemu-system-x86, 7.2, TCG: no KVM here) as the front-end of
 * vhost-user back-ends, for tests that check a back-end against the front-end
 * everyone uses, and this library's messages against QEMU's.
 *
 * Three guests: 'none' (`-S`: QEMU does the vhost-user init conversation and
 * nothing else), 'ipxe' (the virtio-net option ROM, `-boot n`: the net rings start
 * about 2.4 s after launch) and 'linux' (Debian's kernel with the initramfs of
 * scripts/build-initramfs.sh, whose /init takes its job from `vhu.*` on the kernel
 * command line and prints `VHU-RESULT {json}` lines on the serial console; the
 * rings start about 14 s after launch on two cores).
 *
 * Facts this launcher depends on (see /work/shared/docs/vhost-user-notes.md §7):
 * guest RAM must be a shared memfd for the back-end to map it
 * (`memory-backend-memfd,share=on` as the NUMA node's memory); QEMU 7.2 under TCG
 * crashes in `vhost_net_start` when a vhost-user virtio-net driver starts with
 * MSI-X, so net devices get `vectors=0`. QEMU is the vhost-user client: it
 * connects to the back-end's socket at start-up, so the back-end must already listen.
 *
 * Everything lives in a private temp dir (QMP socket, serial console log, the
 * migration socket), removed by stop(); QEMU runs in a process group of its own
 * (spawnBackend), stopped by QMP `quit` first and by signals to the group after.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VhostUserError } from '../errors.js';
import { BackendHandle, findExecutable, makeTempDir, spawnBackend, type BackendProcess } from './backend-process.js';
import { QmpClient } from './qmp.js';

const run = promisify(execFile);

/** The QEMU binary the launcher starts. */
export const QEMU_BINARY = 'qemu-system-x86_64';

/** A vhost-user virtio-net device (`-netdev vhost-user` + `virtio-net-pci`). */
export interface QemuNetDevice {
  /** The back-end's listening socket. */
  socket: string;
  /** Guest MAC; default 52:54:00:12:34:NN (NN: the device's index + 0x56). */
  mac?: string;
  /** Queue pairs (`queues=` on the netdev; `mq=on` on the device when > 1). Default 1. */
  queues?: number;
  /** `packed=on`: offer VIRTIO_F_RING_PACKED. Default off. */
  packed?: boolean;
}

/** A vhost-user-blk device (`vhost-user-blk-pci`). */
export interface QemuBlkDevice {
  /** The back-end's listening socket. */
  socket: string;
  /** `num-queues=`; default 1. */
  numQueues?: number;
  /** `packed=on`. Default off. */
  packed?: boolean;
}

/** How {@link startQemu} starts QEMU. */
export interface QemuOptions {
  /** vhost-user net devices, in PCI order. */
  net?: readonly QemuNetDevice[];
  /** vhost-user blk devices, in PCI order. */
  blk?: readonly QemuBlkDevice[];
  /** 'none' (`-S`, default; not with `incoming`), 'ipxe' (`-boot n` with the net option ROM) or 'linux'. */
  guest?: 'none' | 'ipxe' | 'linux';
  /** Guest RAM in MiB, a shared memfd; default 256. */
  memoryMiB?: number;
  /** Start as a migration destination (`-incoming unix:<tempDir>/migrate.sock`); see {@link QemuProcess.migrate}. */
  incoming?: boolean;
  /** linux: the kernel; default the newest /boot/vmlinuz-*. */
  kernel?: string;
  /** linux: the initramfs; default {@link buildInitramfs}'s. */
  initramfs?: string;
  /** linux: `vhu.KEY=VALUE` settings for the guest's /init (job, count, bytes, pattern, end; see scripts/build-initramfs.sh). */
  guestArgs?: Readonly<Record<string, string | number>>;
  /** linux: further kernel command line text. */
  append?: string;
  /** `-trace enable=PATTERN` for each (e.g. 'vhost_user_*'); the lines go to QEMU's captured stderr. */
  trace?: readonly string[];
  /** Further QEMU arguments, appended. */
  extraArgs?: readonly string[];
  /** Deadline for QEMU to answer on QMP; default 20 000 ms. */
  readyTimeoutMs?: number;
}

/** What {@link QemuProcess.migrate} measured (from `query-migrate` on the source). */
export interface MigrationResult {
  /** Final status: 'completed'. */
  status: string;
  /** `total-time`: from `migrate` until the source completed, ms. */
  totalTimeMs: number;
  /** `downtime`: the guest was stopped this long, ms. */
  downtimeMs: number;
  /** `setup-time`, ms. */
  setupTimeMs: number;
  /** RAM bytes transferred. */
  ramTransferred: number;
  /** Wall time measured here, from `migrate` until the destination ran, ms. */
  wallMs: number;
}

/** A virtio device as `x-query-virtio` lists it. */
export interface VirtioDeviceInfo {
  /** Device name, e.g. `virtio-net`, `virtio-blk`. */
  name: string;
  /** Its QOM path, which the other `x-query-virtio-*` commands take. */
  path: string;
}

/** QEMU's view of one virtqueue (`x-query-virtio-queue-status`). */
export interface VirtqueueStatus {
  /** `last-avail-idx`: for a stopped vhost device, what the back-end answered to GET_VRING_BASE (split rings). */
  lastAvailIdx: number;
  /** `used-idx`: the used ring's index, read from guest memory. */
  usedIdx: number;
  /** `vring-num`: the queue size. */
  num: number;
}

/** QEMU option values escape a comma by doubling it. */
function qemuValue(v: string): string {
  return v.replaceAll(',', ',,');
}

const POLL_MS = 50;
const MODULE_DIR = path.dirname(fileURLToPath(import.meta.url));
/** The script, found from dist/lib/launch (built) or lib/launch (sources). */
const INITRAMFS_SCRIPT_CANDIDATES = [
  path.resolve(MODULE_DIR, '../../../scripts/build-initramfs.sh'),
  path.resolve(MODULE_DIR, '../../scripts/build-initramfs.sh'),
];

/** Whether {@link QEMU_BINARY} is installed (tests skip without it: apt-get install qemu-system-x86). */
export function qemuAvailable(): boolean {
  return findExecutable(QEMU_BINARY) !== null;
}

/** The newest `/boot/vmlinuz-*`, or null when none is installed (apt-get install linux-image-amd64). */
export function findKernel(): string | null {
  let names: string[];
  try {
    names = readdirSync('/boot').filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    return null;
  }
  names.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const last = names.at(-1);
  return last ? path.join('/boot', last) : null;
}

/**
 * Builds (or finds in its cache) the guest initramfs with scripts/build-initramfs.sh for
 * `kernel`'s version and returns its path. Throws VHOST_SPAWN_FAILED with the script's
 * message when busybox-static or the kernel's modules are missing.
 */
export async function buildInitramfs(kernel = findKernel()): Promise<string> {
  if (!kernel) throw new VhostUserError('VHOST_SPAWN_FAILED', 'no /boot/vmlinuz-* (apt-get install linux-image-amd64)');
  const script = INITRAMFS_SCRIPT_CANDIDATES.find((p) => existsSync(p));
  if (!script) throw new VhostUserError('VHOST_SPAWN_FAILED', `scripts/build-initramfs.sh not found (looked in ${INITRAMFS_SCRIPT_CANDIDATES.join(', ')})`);
  const version = path.basename(kernel).replace(/^vmlinuz-/, '');
  try {
    const { stdout } = await run('/bin/sh', [script, version], { timeout: 120_000 });
    return stdout.trim().split('\n').at(-1)!;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new VhostUserError('VHOST_SPAWN_FAILED', `building the initramfs failed: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

/** Parses the `VHU-RESULT {json}` lines the guest's /init printed. */
export function parseGuestResults(console: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of console.split('\n')) {
    const i = line.indexOf('VHU-RESULT ');
    if (i < 0) continue;
    try {
      out.push(JSON.parse(line.slice(i + 'VHU-RESULT '.length)) as Record<string, unknown>);
    } catch {
      // a line cut by the console: not a result
    }
  }
  return out;
}

/**
 * A running QEMU: its QMP connection, its serial console, and stop() that always
 * stops it (QMP `quit`, then the process group).
 */
export class QemuProcess extends BackendHandle {
  #stopping: Promise<void> | undefined;
  #consoleCache: string | undefined;

  /** @internal Use {@link startQemu}. */
  constructor(
    proc: BackendProcess,
    /** The QMP connection (capabilities negotiated). */
    readonly qmp: QmpClient,
    /** The serial console's log file (in the temp dir). */
    readonly consolePath: string,
    /** `unix:<tempDir>/migrate.sock` when started with `incoming`, else undefined. */
    readonly incomingUri: string | undefined,
    /** QEMU's arguments (after the executable). */
    readonly args: readonly string[],
  ) {
    super(proc);
  }

  /** Everything the guest wrote on its serial console so far (kept after stop()). */
  console(): string {
    if (this.#consoleCache !== undefined) return this.#consoleCache;
    try {
      return readFileSync(this.consolePath, 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * Resolves with the first complete console line matching `pattern` (a substring or a
   * RegExp), polling the log. Rejects with VHOST_TIMEOUT after `timeoutMs` and with
   * VHOST_DISCONNECTED when QEMU exits first; both carry the console's tail.
   */
  async waitConsole(pattern: string | RegExp, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const matches = (l: string) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l));
    for (;;) {
      // Complete lines only: the guest may be in the middle of writing the last one.
      const text = this.console();
      const line = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').find(matches);
      if (line !== undefined) return line.replace(/\r$/, '');
      const tail = () => `console:\n${this.console().split('\n').slice(-15).join('\n')}\nQEMU:\n${this.process.outputTail(10)}`;
      if (!this.running) throw new VhostUserError('VHOST_DISCONNECTED', `QEMU exited before the console showed ${String(pattern)}; ${tail()}`);
      if (Date.now() >= deadline) throw new VhostUserError('VHOST_TIMEOUT', `console did not show ${String(pattern)} in ${timeoutMs} ms; ${tail()}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** Waits for the guest's `VHU-RESULT` line of `job` (see scripts/build-initramfs.sh) and returns its JSON. */
  async guestResult(job: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const line = await this.waitConsole(`VHU-RESULT {"job":"${job}"`, timeoutMs);
    const result = parseGuestResults(line)[0];
    // Kernel messages can break into a console line; printk is quiet in the guest, so this is rare.
    if (!result) throw new VhostUserError('VHOST_INVALID_PAYLOAD', `the guest's ${job} result line is not JSON: ${line}`);
    return result;
  }

  /** `query-status`: 'running', 'prelaunch', 'inmigrate', 'postmigrate', 'paused', ... */
  async status(): Promise<string> {
    return (await this.qmp.execute<{ status: string }>('query-status')).status;
  }

  /** Polls `query-status` until it is `status`; VHOST_TIMEOUT after `timeoutMs`, VHOST_DISCONNECTED if QEMU exits. */
  async waitStatus(status: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (!this.running) throw new VhostUserError('VHOST_DISCONNECTED', `QEMU exited while waiting for status ${status}; last output:\n${this.process.outputTail(10)}`);
      try {
        last = await this.status();
      } catch (e) {
        if (!this.running) continue;
        throw e;
      }
      if (last === status) return;
      if (Date.now() >= deadline) throw new VhostUserError('VHOST_TIMEOUT', `QEMU status is ${last}, not ${status}, after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** `x-query-virtio` (QEMU >= 7.2, unstable): the virtio devices, with the QOM path the other queries take. */
  async virtioDevices(): Promise<VirtioDeviceInfo[]> {
    return this.qmp.execute<VirtioDeviceInfo[]>('x-query-virtio');
  }

  /**
   * Polls `x-query-virtio-status` until the vhost device at `path` has started (the guest
   * driver set DRIVER_OK and QEMU sent the rings to the back-end). VHOST_TIMEOUT after `timeoutMs`.
   */
  async waitVhostStarted(path: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.qmp.execute<Record<string, unknown>>('x-query-virtio-status', { path });
      if (s['vhost-started'] === true) return;
      if (Date.now() >= deadline) throw new VhostUserError('VHOST_TIMEOUT', `vhost device ${path} not started after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /**
   * QEMU's view of queue `queue` of the device at `path` (`x-query-virtio-queue-status`).
   * While a vhost device runs QEMU does not track the ring; once it stopped,
   * `lastAvailIdx` is what the back-end answered to GET_VRING_BASE (split rings) and
   * `usedIdx` is the used index read from guest memory.
   */
  async queueStatus(path: string, queue: number): Promise<VirtqueueStatus> {
    const q = await this.qmp.execute<Record<string, number>>('x-query-virtio-queue-status', { path, queue });
    return { lastAvailIdx: q['last-avail-idx'] ?? 0, usedIdx: q['used-idx'] ?? 0, num: q['vring-num'] ?? 0 };
  }

  /**
   * Live-migrates this QEMU's guest to `to` (started with `incoming`): QMP `migrate`,
   * then `query-migrate` until the source completes, then waits until the destination
   * runs. Rejects with VHOST_MIGRATION_FAILED when the migration fails or the
   * destination stops or exits instead of running (with its last output).
   */
  async migrate(to: QemuProcess, timeoutMs = 60_000): Promise<MigrationResult> {
    if (!to.incomingUri) throw new VhostUserError('VHOST_INVALID_ARGUMENT', 'the destination QEMU was not started with incoming: true');
    const t0 = Date.now();
    const deadline = t0 + timeoutMs;
    await this.qmp.execute('migrate', { uri: to.incomingUri });
    let info: Record<string, unknown>;
    for (;;) {
      info = await this.qmp.execute<Record<string, unknown>>('query-migrate');
      const status = info['status'];
      if (status === 'completed') break;
      if (status === 'failed' || status === 'cancelled') {
        throw new VhostUserError('VHOST_MIGRATION_FAILED', `migration ${String(status)}: ${typeof info['error-desc'] === 'string' ? info['error-desc'] : ''}; destination:\n${to.process.outputTail(10)}`);
      }
      if (!to.running) throw new VhostUserError('VHOST_MIGRATION_FAILED', `destination QEMU exited during migration:\n${to.process.outputTail(10)}`);
      if (Date.now() >= deadline) throw new VhostUserError('VHOST_MIGRATION_FAILED', `migration still ${String(status)} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    try {
      await to.waitStatus('running', Math.max(1000, deadline - Date.now()));
    } catch (e) {
      throw new VhostUserError('VHOST_MIGRATION_FAILED', `the source completed but the destination does not run: ${(e as Error).message}\n${to.process.outputTail(10)}`, { cause: e });
    }
    const ram = (info['ram'] as Record<string, number> | undefined) ?? {};
    return {
      status: 'completed',
      totalTimeMs: Number(info['total-time'] ?? 0),
      downtimeMs: Number(info['downtime'] ?? 0),
      setupTimeMs: Number(info['setup-time'] ?? 0),
      ramTransferred: Number(ram['transferred'] ?? 0),
      wallMs: Date.now() - t0,
    };
  }

  /**
   * Stops QEMU: QMP `quit` (QEMU stops its vhost-user devices in order: SET_STATUS 0,
   * GET_VRING_BASE), up to `graceMs` (default 3000) for it to exit, then SIGTERM and
   * SIGKILL to its process group; removes the temp dir. The console text stays readable. Idempotent.
   */
  override stop(graceMs = 3000): Promise<void> {
    return (this.#stopping ??= this.#stop(graceMs));
  }

  async #stop(graceMs: number): Promise<void> {
    if (this.running && this.qmp.connected) {
      // quit's answer may or may not arrive before QEMU closes the socket.
      await this.qmp.execute('quit', undefined, graceMs).catch(() => {});
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    this.qmp.close();
    this.#consoleCache = this.console();
    await this.process.stop(1000);
  }
}

/**
 * Starts QEMU with the given vhost-user devices and guest, in a fresh temp dir, and
 * resolves once QMP answers. The back-ends must already listen on their sockets.
 * Rejects with VHOST_SPAWN_FAILED (QEMU exited: a back-end refused, a bad option; its
 * output is in the message) or VHOST_SPAWN_TIMEOUT; QEMU is then stopped.
 */
export async function startQemu(opts: QemuOptions = {}): Promise<QemuProcess> {
  const guest = opts.guest ?? 'none';
  const mem = opts.memoryMiB ?? 256;
  if (!Number.isInteger(mem) || mem < 16) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `memoryMiB must be an integer >= 16, got ${mem}`);
  if (!qemuAvailable()) throw new VhostUserError('VHOST_SPAWN_FAILED', `${QEMU_BINARY} not found (apt-get install qemu-system-x86)`);
  let kernel: string | null = null;
  let initramfs: string | undefined;
  if (guest === 'linux') {
    kernel = opts.kernel ?? findKernel();
    if (!kernel) throw new VhostUserError('VHOST_SPAWN_FAILED', 'no /boot/vmlinuz-* (apt-get install linux-image-amd64)');
    initramfs = opts.initramfs ?? (await buildInitramfs(kernel));
  }
  const tempDir = await makeTempDir('vhost-qemu-');
  const qmpPath = path.join(tempDir, 'qmp.sock');
  const consolePath = path.join(tempDir, 'console.log');
  const incomingUri = opts.incoming ? `unix:${path.join(tempDir, 'migrate.sock')}` : undefined;

  const args = [
    '-machine', 'q35,accel=tcg',
    '-m', `${mem}M`,
    // The back-end maps guest RAM from the fds of SET_MEM_TABLE: it must be a shared memfd.
    '-object', `memory-backend-memfd,id=mem0,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem0',
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-chardev', `file,id=con0,path=${qemuValue(consolePath)}`,
    '-serial', 'chardev:con0',
    '-qmp', `unix:${qemuValue(qmpPath)},server=on,wait=off`,
  ];
  (opts.net ?? []).forEach((n, i) => {
    const q = n.queues ?? 1;
    const mac = n.mac ?? `52:54:00:12:34:${(0x56 + i).toString(16).padStart(2, '0')}`;
    args.push('-chardev', `socket,id=vhunet${i},path=${qemuValue(n.socket)}`);
    args.push('-netdev', `vhost-user,id=net${i},chardev=vhunet${i},queues=${q}`);
    const dev = [
      `virtio-net-pci,netdev=net${i},mac=${mac}`,
      // QEMU 7.2 + TCG crashes in vhost_net_start (msix_set_vector_notifiers) with MSI-X.
      'vectors=0',
      ...(q > 1 ? ['mq=on'] : []),
      ...(n.packed ? ['packed=on'] : []),
      // Only the iPXE guest boots from the option ROM; the others skip its probing.
      ...(guest === 'ipxe' && i === 0 ? [] : ['romfile=']),
    ];
    args.push('-device', dev.join(','));
  });
  (opts.blk ?? []).forEach((b, i) => {
    args.push('-chardev', `socket,id=vhublk${i},path=${qemuValue(b.socket)}`);
    args.push('-device', [`vhost-user-blk-pci,chardev=vhublk${i},num-queues=${b.numQueues ?? 1}`, ...(b.packed ? ['packed=on'] : [])].join(','));
  });
  // A migration destination waits for the stream anyway, and runs the guest it receives.
  if (guest === 'none' && !incomingUri) args.push('-S');
  if (guest === 'ipxe') args.push('-boot', 'n');
  if (guest === 'linux') {
    const vhu = Object.entries(opts.guestArgs ?? {}).map(([k, v]) => `vhu.${k}=${v}`);
    const append = ['console=ttyS0', 'quiet', 'panic=-1', 'ipv6.disable=1', ...vhu, ...(opts.append ? [opts.append] : [])].join(' ');
    args.push('-kernel', kernel!, '-initrd', initramfs!, '-append', append, '-no-reboot');
  }
  if (incomingUri) args.push('-incoming', incomingUri);
  for (const t of opts.trace ?? []) args.push('-trace', `enable=${t}`);
  args.push(...(opts.extraArgs ?? []));

  const proc = await spawnBackend({
    command: QEMU_BINARY,
    args,
    socketPath: qmpPath,
    tempDir,
    readyTimeoutMs: opts.readyTimeoutMs ?? 20_000,
    readyLabel: `QMP socket ${qmpPath}`,
  });
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(qmpPath, { timeoutMs: opts.readyTimeoutMs ?? 20_000 });
  } catch (e) {
    const out = proc.outputTail();
    await proc.stop(0);
    throw new VhostUserError('VHOST_SPAWN_FAILED', `QEMU did not answer on QMP: ${(e as Error).message}\n${out}`, { cause: e });
  }
  return new QemuProcess(proc, qmp, consolePath, incomingUri, args);
}
