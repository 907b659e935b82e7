/**
 * Command line of `npm run bench:blk`: the option table (shared with the help
 * text) and the checks that turn it into {@link BlkBenchOptions}.
 */
import { formatHelp, parseArgs, UsageError, type OptionSpecs } from '../../lib/cli/args.js';

export type BlkRw = 'randread' | 'randwrite';
/** qemu-storage-daemon on null-co (no storage cost) or on a raw file image (O_DIRECT, io_uring). */
export type BlkBackendKind = 'qsd-null' | 'qsd-file';

/** How "ours" notices completions: BlkBatch.wait (sleep on the call eventfd), or spinning on poll(). */
export type BlkCompletion = 'wait' | 'busy-poll';

export const BLK_RWS: readonly BlkRw[] = ['randread', 'randwrite'];
export const BLK_BACKENDS: readonly BlkBackendKind[] = ['qsd-null', 'qsd-file'];
/** Every cell moves 4 KiB per request (issue #9, item 6). */
export const BLK_BS = 4096;

export const BLK_BENCH_SPECS = {
  duration: { type: 'number', integer: true, min: 100, default: 3000, valueName: 'MS', description: 'measured window per cell (each side)' },
  warmup: { type: 'number', integer: true, min: 0, default: 500, valueName: 'MS', description: 'I/O before the measured window starts' },
  rw: { type: 'string', default: 'randread,randwrite', valueName: 'LIST', description: 'randread and/or randwrite' },
  qd: { type: 'string', default: '1,32', valueName: 'LIST', description: 'queue depths (requests in flight per queue)' },
  queues: { type: 'string', default: '1,2', valueName: 'LIST', description: 'virtqueues (qemu-storage-daemon num-queues)' },
  backends: { type: 'string', default: 'qsd-null,qsd-file', valueName: 'LIST', description: 'qsd-null (driver=null-co) and/or qsd-file (raw image, O_DIRECT, io_uring)' },
  imageSize: { type: 'number', integer: true, min: 1 << 20, default: 256 << 20, valueName: 'BYTES', description: 'size of the image (and of the null-co device)' },
  dir: { type: 'string', valueName: 'DIR', description: 'where the image file goes (default /var/tmp: O_DIRECT needs a disk file system, not tmpfs)' },
  driver: { type: 'enum', choices: ['virtio-blk', 'raw'], default: 'virtio-blk', description: "ours: VirtioBlk's batch API, or 'raw' rings on VhostUserClient (no device layer)" },
  completion: { type: 'enum', choices: ['wait', 'busy-poll'], default: 'wait', description: "ours: sleep on the call eventfd when nothing completed (BlkBatch.wait, coalesced with EVENT_IDX), or spin on the used ring" },
  coalesce: { type: 'number', integer: true, min: 0, default: 0, valueName: 'N', description: 'with --completion wait: completions per call (0: the queue depth, one call per round)' },
  noAnchors: { type: 'boolean', description: 'skip qemu-img bench and fio' },
  json: { type: 'boolean', description: 'print one JSON document on stdout (progress stays on stderr)' },
} as const satisfies OptionSpecs;

export interface BlkBenchOptions {
  durationMs: number;
  warmupMs: number;
  rws: BlkRw[];
  qds: number[];
  queues: number[];
  backends: BlkBackendKind[];
  imageSize: number;
  dir: string;
  anchors: boolean;
  /** What "ours" is: VirtioBlk, or raw split rings on VhostUserClient. */
  driver: 'virtio-blk' | 'raw';
  /** How ours waits for completions (virtio-blk driver only). */
  completion: BlkCompletion;
  /** Completions per call with 'wait'; 0: the queue depth. */
  coalesce: number;
  json: boolean;
}

const USAGE = 'npm run bench:blk -- [options]';
const DESCRIPTION = [
  '4 KiB random reads and writes at each queue depth and queue count, against qemu-storage-daemon',
  'on null-co and on a raw image file. Each cell reports this driver (IOPS, mean and p99 latency, CPU',
  'time per I/O of this process) and the back-end (CPU time per I/O of qemu-storage-daemon, from',
  "/proc/PID/stat), and the anchors on the same image: 'qemu-img bench' (QEMU's block layer with no",
  "vhost-user; sequential 4 KiB steps, it has no random mode) and fio (io_uring, O_DIRECT; its 'null'",
  "engine for the null-co cells). 'Ours' is VirtioBlk's batch API on queues in 'poll' mode: it reaps",
  'the used rings and, when nothing completed, sleeps in BlkBatch.wait on the call eventfds until the',
  'device has completed --coalesce requests (EVENT_IDX used_event; default all in flight on the',
  'queue), and kicks only when the device asks (--completion busy-poll: spin on the used ring',
  'instead; --driver raw: split rings on VhostUserClient with no device layer, spinning). The',
  'table and the JSON meta say which ran. A failed run of either side fails the benchmark.',
  'Progress goes to stderr. For clean JSON on stdout through npm, add -s:',
  '  npm run -s bench:blk -- --json > result.json',
].join('\n');

export function blkBenchHelp(): string {
  return formatHelp(USAGE, DESCRIPTION, BLK_BENCH_SPECS);
}

function fail(msg: string): never {
  throw new UsageError(`bench:blk: ${msg} (see '${USAGE.replace('[options]', '--help')}')`);
}

function list(flag: string, raw: string): string[] {
  const items = raw.split(',').map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === '')) fail(`${flag} needs a comma-separated list, got '${raw}'`);
  return [...new Set(items)];
}

function ints(flag: string, raw: string, min: number, max: number): number[] {
  return list(flag, raw).map((s) => {
    if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) fail(`${flag}: '${s}' is not an integer in ${min}..${max}`);
    return Number(s);
  });
}

/** `undefined` when `--help` was given. Throws {@link UsageError} on bad input. */
export function parseBlkBenchArgs(argv: readonly string[]): BlkBenchOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs(BLK_BENCH_SPECS, argv);
  } catch (e) {
    if (e instanceof UsageError) fail(e.message.replace(/ \(see '[^']*'\)$/, ''));
    throw e;
  }
  if (parsed.help) return undefined;
  const o = parsed.options;
  const rws = list('--rw', o.rw).map((r) => {
    if (!(BLK_RWS as readonly string[]).includes(r)) fail(`--rw takes randread and/or randwrite, got '${r}'`);
    return r as BlkRw;
  });
  const backends = list('--backends', o.backends).map((b) => {
    if (!(BLK_BACKENDS as readonly string[]).includes(b)) fail(`--backends takes qsd-null and/or qsd-file, got '${b}'`);
    return b as BlkBackendKind;
  });
  if (o.imageSize % BLK_BS !== 0) fail(`--image-size must be a multiple of ${BLK_BS}, got ${o.imageSize}`);
  return {
    durationMs: o.duration,
    warmupMs: o.warmup,
    rws,
    qds: ints('--qd', o.qd, 1, 256),
    queues: ints('--queues', o.queues, 1, 16),
    backends,
    imageSize: o.imageSize,
    dir: o.dir ?? '/var/tmp',
    anchors: !o.noAnchors,
    driver: o.driver,
    completion: o.completion,
    coalesce: o.coalesce,
    json: o.json ?? false,
  };
}
