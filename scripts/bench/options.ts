/**
 * Command line of `npm run bench:net`: the option table (shared with the help
 * text) and the checks that turn it into a {@link BenchOptions}.
 */
import { formatHelp, parseArgs, UsageError, type OptionSpecs } from '../../lib/cli/args.js';

export type Direction = 'tx' | 'rx';
export type FrontendKind = 'dpdk' | 'ours';
/** How our TX cells fill frames: copied from prepared frames (sendBurst), or written in the slots (sendInPlace). */
export type TxMode = 'copy' | 'in-place';
/** --offload: UDP frames with NEEDS_CSUM (csum), or TCP GSO frames of {@link TSO_FRAME_SIZE} bytes cut into 1448-byte segments (tso). */
export type Offload = 'csum' | 'tso';
/**
 * The frame size of --offload tso cells: the largest one mbuf of DPDK's frontend holds
 * (testpmd's --mbuf-size is below 65536, less 128 bytes of headroom); a 64 KiB TSO segment.
 */
export const TSO_FRAME_SIZE = 65400;
/** gso_size of --offload tso cells: a 1500-byte MTU's TCP payload with timestamps. */
export const TSO_MSS = 1448;

export const DIRECTIONS: readonly Direction[] = ['tx', 'rx'];
export const FRONTENDS: readonly FrontendKind[] = ['dpdk', 'ours'];

/** The minimum Ethernet frame without FCS; both sides send Ethernet/IPv4/UDP frames of at least this. */
export const MIN_FRAME_SIZE = 60;
/** 1500-byte MTU plus the 14-byte Ethernet header (no FCS): one mbuf, no jumbo setup. */
export const MAX_FRAME_SIZE = 1514;

export const BENCH_SPECS = {
  duration: {
    type: 'number', integer: true, min: 100, default: 5000, valueName: 'MS',
    description: 'measured window per cell',
  },
  warmup: {
    type: 'number', integer: true, min: 0, default: 1000, valueName: 'MS',
    description: 'traffic before the measured window starts',
  },
  sizes: {
    type: 'string', default: '64,1500', valueName: 'LIST',
    description: `frame sizes in bytes: Ethernet header + payload, no FCS (${MIN_FRAME_SIZE}..${MAX_FRAME_SIZE})`,
  },
  directions: {
    type: 'string', default: 'tx,rx', valueName: 'LIST',
    description: 'tx: frontend transmits into a back-end in rxonly; rx: back-end in txonly, frontend receives',
  },
  only: { type: 'enum', choices: ['dpdk', 'ours'], description: 'measure one frontend only' },
  repeat: {
    type: 'number', integer: true, min: 1, max: 50, default: 1, valueName: 'N',
    description: 'runs per cell (fresh back-end each); the median is reported',
  },
  queueSize: {
    type: 'number', integer: true, min: 64, max: 4096, default: 1024, valueName: 'N',
    description: 'virtqueue size of both frontends (power of two)',
  },
  burst: {
    type: 'number', integer: true, min: 1, max: 512, default: 32, valueName: 'N',
    description: 'frames per burst, both frontends and the back-end (testpmd --burst)',
  },
  cores: {
    type: 'string', default: '0,1', valueName: 'FRONT,BACK',
    description: 'CPU of the frontend poller, CPU of the back-end forwarding lcore (must differ)',
  },
  maxForeign: {
    type: 'number', min: 0, max: 400, default: 10, valueName: 'PCT',
    description: 'a run during which other programs used more than PCT% of a CPU is disturbed: wait for quiet before each run, retry disturbed runs',
  },
  retries: {
    type: 'number', integer: true, min: 0, max: 10, default: 2, valueName: 'N',
    description: 'extra attempts for a disturbed run (then the least disturbed attempt is kept, and flagged)',
  },
  txMode: {
    type: 'enum', choices: ['copy', 'in-place'], default: 'copy',
    description: "our tx cells: 'copy' sends prepared frames with sendBurst (every byte copied into the ring); " +
      "'in-place' rewrites only the headers in the TX slots with sendInPlace, the work DPDK's txonly does with its mbufs",
  },
  ringStats: {
    type: 'boolean',
    description: 'our tx cells count used.idx reads that found nothing, reap and publish sizes and kicks of the TX ring (printed per run; costs some speed)',
  },
  offload: {
    type: 'enum', choices: ['csum', 'tso'],
    description: `tx cells with offloads, back-end offering TSO (tso=1): 'csum' sends UDP frames with NEEDS_CSUM (the device computes the checksum); ` +
      `'tso' sends ${TSO_FRAME_SIZE}-byte TCP GSO frames cut into ${TSO_MSS}-byte segments (--sizes is then ${TSO_FRAME_SIZE}). ` +
      `DPDK's frontend gets them from a pcap vdev through testpmd's csum engine with 'csum set ... hw' / 'tso set'`,
  },
  json: { type: 'boolean', description: 'print one JSON document on stdout (progress stays on stderr)' },
} as const satisfies OptionSpecs;

export interface BenchOptions {
  durationMs: number;
  warmupMs: number;
  sizes: number[];
  directions: Direction[];
  frontends: FrontendKind[];
  repeat: number;
  queueSize: number;
  burst: number;
  /** CPU the frontend polls on. */
  frontendCore: number;
  /** CPU of the back-end's forwarding lcore. */
  backendCore: number;
  /** % of one CPU other programs may use during a run before it counts as disturbed. */
  maxForeignPct: number;
  retries: number;
  txMode: TxMode;
  ringStats: boolean;
  /** Offloaded tx cells, or null. */
  offload: Offload | null;
  json: boolean;
}

export const USAGE = 'npm run bench:net -- [options]';
export const DESCRIPTION = [
  'Starts a dpdk-testpmd vhost-user back-end per cell and measures DPDK\'s own',
  'virtio-user frontend and this library\'s virtio-net driver against it. Rates',
  'come from the back-end\'s counters: rx-packets for tx cells, tx-packets for rx',
  'cells. Gbit/s is the L2 frame rate (frame bytes x 8, without preamble, IFG or FCS).',
  'Progress goes to stderr. For clean JSON on stdout through npm, add -s:',
  '  npm run -s bench:net -- --json > result.json',
  'Exit status 1 when any run of either frontend failed; the report lists each one.',
].join('\n');

export function benchHelp(): string {
  return formatHelp(USAGE, DESCRIPTION, BENCH_SPECS);
}

function fail(msg: string): never {
  throw new UsageError(`bench:net: ${msg} (see '${USAGE.replace('[options]', '--help')}')`);
}

function list(flag: string, raw: string): string[] {
  const items = raw.split(',').map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === '')) fail(`${flag} needs a comma-separated list, got '${raw}'`);
  return items;
}

function unique<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

function nonNegativeInt(flag: string, s: string): number {
  if (!/^\d+$/.test(s)) fail(`${flag} needs non-negative integers, got '${s}'`);
  return Number(s);
}

/** `undefined` when `--help` was given. Throws {@link UsageError} on bad input. */
export function parseBenchArgs(argv: readonly string[]): BenchOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs(BENCH_SPECS, argv);
  } catch (e) {
    // parseArgs points at `vhost-user --help`; this is not that command.
    if (e instanceof UsageError) fail(e.message.replace(/ \(see '[^']*'\)$/, ''));
    throw e;
  }
  if (parsed.help) return undefined;
  const o = parsed.options;

  const sizes = unique(
    list('--sizes', o.sizes).map((s) => {
      const n = nonNegativeInt('--sizes', s);
      if (n < MIN_FRAME_SIZE || n > MAX_FRAME_SIZE) {
        fail(`--sizes: ${n} is outside ${MIN_FRAME_SIZE}..${MAX_FRAME_SIZE}`);
      }
      return n;
    }),
  );
  const directions = unique(
    list('--directions', o.directions).map((d) => {
      if (!(DIRECTIONS as readonly string[]).includes(d)) fail(`--directions takes tx and/or rx, got '${d}'`);
      return d as Direction;
    }),
  );
  const cores = list('--cores', o.cores).map((c) => nonNegativeInt('--cores', c));
  if (cores.length !== 2) fail(`--cores needs two CPUs FRONT,BACK, got '${o.cores}'`);
  const [frontendCore, backendCore] = cores as [number, number];
  if (frontendCore === backendCore) {
    fail(`--cores: the two pollers must be on different CPUs (on one CPU throughput collapses), got ${o.cores}`);
  }
  if ((o.queueSize & (o.queueSize - 1)) !== 0) fail(`--queue-size must be a power of two, got ${o.queueSize}`);
  const offload = (o.offload) ?? null;
  if (offload && directions.includes('rx')) {
    if (argv.some((a) => a.startsWith('--directions'))) fail('--offload measures tx cells only: give --directions tx');
    directions.splice(directions.indexOf('rx'), 1);
  }
  if (offload === 'tso') sizes.splice(0, sizes.length, TSO_FRAME_SIZE);

  return {
    durationMs: o.duration,
    warmupMs: o.warmup,
    sizes,
    directions,
    frontends: o.only ? [o.only] : [...FRONTENDS],
    repeat: o.repeat,
    queueSize: o.queueSize,
    burst: o.burst,
    frontendCore,
    backendCore,
    maxForeignPct: o.maxForeign,
    retries: o.retries,
    txMode: o.txMode,
    ringStats: o.ringStats,
    offload,
    json: o.json,
  };
}
