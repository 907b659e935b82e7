/**
 * The anchors of `npm run bench:blk`, run on the same image as the cell:
 * `qemu-img bench` (QEMU's block layer, no vhost-user in between) and fio (the
 * storage limit: io_uring with O_DIRECT on the file; the 'null' engine where the
 * back-end is null-co). Parsing is pure and exported for the spec.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BLK_BS, type BlkBackendKind, type BlkRw } from './blk-options.js';

const run = promisify(execFile);

export interface AnchorCell {
  rw: BlkRw;
  qd: number;
  queues: number;
  backend: BlkBackendKind;
  /** The image file (qsd-file), or the null-co size (qsd-null). */
  image: string | null;
  imageSize: number;
  durationMs: number;
  warmupMs: number;
}

export interface AnchorResult {
  iops: number;
  latUs?: number;
  p99Us?: number;
  /** The command line, for the report. */
  command: string;
}

/** Seconds from qemu-img bench's "Run completed in X seconds." line. */
export function parseQemuImgBench(stdout: string): number {
  const m = /Run completed in ([\d.]+) seconds/.exec(stdout);
  if (!m) throw new Error(`qemu-img bench printed no 'Run completed in' line: ${stdout.trim().split('\n').slice(-2).join(' | ')}`);
  return Number(m[1]);
}

/** IOPS, mean and p99 completion latency of the first job of fio's JSON output (group_reporting). */
export function parseFioJson(stdout: string, rw: BlkRw): { iops: number; latUs: number; p99Us: number } {
  // fio may print notices before the JSON document.
  const doc = JSON.parse(stdout.slice(stdout.indexOf('{'))) as {
    jobs: { read: FioSide; write: FioSide }[];
  };
  const job = doc.jobs[0];
  if (!job) throw new Error('fio reported no job');
  const side = rw === 'randread' ? job.read : job.write;
  const p99 = side.clat_ns?.percentile?.['99.000000'];
  return { iops: side.iops, latUs: side.lat_ns.mean / 1000, p99Us: p99 === undefined ? NaN : p99 / 1000 };
}

interface FioSide {
  iops: number;
  lat_ns: { mean: number };
  clat_ns?: { percentile?: Record<string, number> };
}

function qemuImgArgs(cell: AnchorCell, count: number): string[] {
  const common = ['bench', '-c', String(count), '-d', String(cell.qd), '-s', String(BLK_BS), '-S', String(BLK_BS), ...(cell.rw === 'randwrite' ? ['-w'] : [])];
  if (cell.backend === 'qsd-null') return [...common, '--image-opts', `driver=null-co,size=${cell.imageSize}`];
  return [...common, '-f', 'raw', '-t', 'none', '-i', 'io_uring', cell.image!];
}

/**
 * qemu-img bench has a request count, not a duration: a short run calibrates the
 * count so the measured run lasts about `durationMs`. One queue only (it has no
 * multi-queue mode); its offsets advance sequentially (it has no random mode).
 */
export async function runQemuImgBench(cell: AnchorCell): Promise<AnchorResult> {
  const probe = 2000;
  const t0 = parseQemuImgBench((await run('qemu-img', qemuImgArgs(cell, probe), { timeout: 120_000 })).stdout);
  const count = Math.max(probe, Math.round((probe / Math.max(t0, 1e-3)) * (cell.durationMs / 1000)));
  const args = qemuImgArgs(cell, count);
  const seconds = parseQemuImgBench((await run('qemu-img', args, { timeout: 120_000 + cell.durationMs * 4 })).stdout);
  return { iops: count / seconds, command: `qemu-img ${args.join(' ')}` };
}

/** fio with `queues` jobs of depth `qd` each, grouped: io_uring + O_DIRECT on the file, or the null engine. */
export async function runFio(cell: AnchorCell): Promise<AnchorResult> {
  const args = [
    '--name=anchor', `--rw=${cell.rw}`, `--bs=${BLK_BS}`, `--iodepth=${cell.qd}`, `--numjobs=${cell.queues}`, '--group_reporting',
    '--time_based', `--runtime=${Math.max(1, Math.round(cell.durationMs / 1000))}s`, `--ramp_time=${Math.max(0, Math.round(cell.warmupMs / 1000))}s`,
    `--size=${cell.imageSize}`, '--randrepeat=0', '--norandommap', '--output-format=json',
    ...(cell.backend === 'qsd-null' ? ['--ioengine=null'] : ['--ioengine=io_uring', '--direct=1', `--filename=${cell.image!}`]),
  ];
  const { stdout } = await run('fio', args, { timeout: 60_000 + cell.durationMs * 4, maxBuffer: 16 << 20 });
  return { ...parseFioJson(stdout, cell.rw), command: `fio ${args.join(' ')}` };
}
