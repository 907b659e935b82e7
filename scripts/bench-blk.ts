/**
 * `npm run bench:blk`: 4 KiB random I/O through this library against
 * qemu-storage-daemon (null-co and a raw file image), with the anchors on the
 * same image: qemu-img bench and fio. See scripts/bench/blk-options.ts for the
 * options, blk-ours.ts for how "ours" is measured, blk-anchors.ts for the anchors.
 */
import { open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isUsageError } from '../lib/cli/args.js';
import { findExecutable, stopAll } from '../lib/launch/backend-process.js';
import { startQemuStorageDaemon, type QemuStorageDaemonBackend } from '../lib/launch/qemu-storage-daemon.js';
import { runFio, runQemuImgBench, type AnchorCell, type AnchorResult } from './bench/blk-anchors.js';
import { blkBenchHelp, parseBlkBenchArgs, BLK_BS, type BlkBackendKind, type BlkBenchOptions, type BlkRw } from './bench/blk-options.js';
import { runOurs, runRawRings, type OursResult } from './bench/blk-ours.js';

function progress(msg: string): void {
  process.stderr.write(`[bench:blk] ${msg}\n`);
}

/** One row of the result (the JSON shape issue #9 asks for). */
export interface BlkCase {
  rw: BlkRw;
  bs: number;
  qd: number;
  queues: number;
  backend: BlkBackendKind;
  ours: { iops: number; latUs: number; p99Us: number; cpuUsPerIo: number } | null;
  backendCpuUsPerIo: number | null;
  anchors: { qemuImgBench: { iops: number } | null; fio: { iops: number; latUs?: number; p99Us?: number } | null };
  /** Why a side has no numbers (only when the benchmark failed). */
  errors?: string[];
}

/** A raw image of `size` bytes filled with non-zero data, so reads are not of holes. */
async function makeImage(file: string, size: number): Promise<void> {
  const fh = await open(file, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
    for (let off = 0; off < size; off += chunk.length) await fh.write(chunk, 0, Math.min(chunk.length, size - off), off);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function formatTable(cases: BlkCase[]): string {
  const head = ['backend', 'rw', 'qd', 'q', 'ours IOPS', 'lat µs', 'p99 µs', 'ours CPU µs/IO', 'back-end CPU µs/IO', 'ours ≤ back-end', 'qemu-img IOPS', 'fio IOPS'];
  const rows = cases.map((c) => [
    c.backend, c.rw, String(c.qd), String(c.queues),
    c.ours ? c.ours.iops.toFixed(0) : '-', c.ours ? c.ours.latUs.toFixed(1) : '-', c.ours ? c.ours.p99Us.toFixed(1) : '-',
    c.ours ? c.ours.cpuUsPerIo.toFixed(2) : '-', c.backendCpuUsPerIo !== null ? c.backendCpuUsPerIo.toFixed(2) : '-',
    c.ours && c.backendCpuUsPerIo !== null ? (c.ours.cpuUsPerIo <= c.backendCpuUsPerIo ? 'yes' : 'no') : '-',
    c.anchors.qemuImgBench ? c.anchors.qemuImgBench.iops.toFixed(0) : '-', c.anchors.fio ? c.anchors.fio.iops.toFixed(0) : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((x, i) => x.padStart(widths[i]!)).join('  ')).join('\n');
}

/** Which "ours" ran: printed with the table and kept in the JSON's meta. */
function oursMode(opts: BlkBenchOptions): string {
  if (opts.driver === 'raw') return "ours: raw split rings on VhostUserClient (no device layer), busy-polling the used ring";
  if (opts.completion === 'busy-poll') return "ours: VirtioBlk batch API, queues in 'poll' mode, busy-polling the used ring (--completion busy-poll)";
  const n = opts.coalesce > 0 ? String(opts.coalesce) : 'qd (all in flight on the queue)';
  return `ours: VirtioBlk batch API, queues in 'poll' mode; when nothing completed, BlkBatch.wait sleeps on the call eventfds until ${n} completions (EVENT_IDX used_event); kicks only when the device asks (--completion wait)`;
}

async function run(opts: BlkBenchOptions): Promise<number> {
  const needs: [string, string][] = [['qemu-storage-daemon', 'qemu-system-common']];
  if (opts.anchors) needs.push(['qemu-img', 'qemu-utils'], ['fio', 'fio']);
  for (const [exe, pkg] of needs) {
    if (!findExecutable(exe)) {
      progress(`${exe} not found (apt-get install ${pkg})`);
      return 1;
    }
  }
  const image = path.join(opts.dir, `vhost-user-bench-blk-${process.pid}.raw`);
  const cases: BlkCase[] = [];
  const commands: Record<string, string> = {};
  let failed = false;
  try {
    if (opts.backends.includes('qsd-file')) {
      progress(`writing a ${opts.imageSize >> 20} MiB image at ${image}`);
      await makeImage(image, opts.imageSize);
    }
    for (const backend of opts.backends) {
      for (const queues of opts.queues) {
        let qsd: QemuStorageDaemonBackend | null = null;
        try {
          qsd =
            backend === 'qsd-null'
              ? await startQemuStorageDaemon({ driver: 'null-co', imageSize: opts.imageSize, numQueues: queues })
              : await startQemuStorageDaemon({ imagePath: image, numQueues: queues, aio: 'io_uring', cacheDirect: true });
          commands[`${backend}-q${queues}`] = `qemu-storage-daemon ${qsd.args.join(' ')}`;
          for (const rw of opts.rws) {
            for (const qd of opts.qds) {
              const label = `${backend} ${rw} qd ${qd} queues ${queues}`;
              const c: BlkCase = { rw, bs: BLK_BS, qd, queues, backend, ours: null, backendCpuUsPerIo: null, anchors: { qemuImgBench: null, fio: null } };
              cases.push(c);
              const errors: string[] = [];
              try {
                const o: OursResult = await (opts.driver === 'raw' ? runRawRings : runOurs)({ rw, qd, queues, socket: qsd.socketPath, backendPid: qsd.pid, durationMs: opts.durationMs, warmupMs: opts.warmupMs, completion: opts.completion, coalesce: opts.coalesce });
                c.ours = { iops: round(o.iops, 0), latUs: round(o.latUs), p99Us: round(o.p99Us), cpuUsPerIo: round(o.cpuUsPerIo, 3) };
                c.backendCpuUsPerIo = round(o.backendCpuUsPerIo, 3);
                progress(`${label}: ours ${o.iops.toFixed(0)} IOPS, ${o.latUs.toFixed(1)} µs (p99 ${o.p99Us.toFixed(1)}), CPU ${o.cpuUsPerIo.toFixed(2)} µs/IO${o.sysUsPerIo !== undefined ? ` (system ${o.sysUsPerIo.toFixed(2)})` : ''}, back-end ${o.backendCpuUsPerIo.toFixed(2)} µs/IO${o.kicksPerIo !== undefined ? `, kicks/IO ${o.kicksPerIo.toFixed(3)}, calls/IO ${o.callsPerIo!.toFixed(3)}, passes/IO ${o.passesPerIo!.toFixed(3)}` : ''}`);
              } catch (e) {
                errors.push(`ours: ${(e as Error).message}`);
              }
              if (opts.anchors) {
                const cell: AnchorCell = { rw, qd, queues, backend, image: backend === 'qsd-file' ? image : null, imageSize: opts.imageSize, durationMs: opts.durationMs, warmupMs: opts.warmupMs };
                const anchor = async (name: 'qemuImgBench' | 'fio', f: (c: AnchorCell) => Promise<AnchorResult>) => {
                  try {
                    const r = await f(cell);
                    commands[`${name}-${backend}-${rw}-qd${qd}-q${queues}`] = r.command;
                    return r;
                  } catch (e) {
                    errors.push(`${name}: ${(e as Error).message.split('\n')[0]}`);
                    return null;
                  }
                };
                // qemu-img bench has one queue: the same number stands for every queue count.
                const qib = await anchor('qemuImgBench', runQemuImgBench);
                if (qib) c.anchors.qemuImgBench = { iops: round(qib.iops, 0) };
                const fio = await anchor('fio', runFio);
                if (fio) c.anchors.fio = { iops: round(fio.iops, 0), ...(fio.latUs !== undefined ? { latUs: round(fio.latUs) } : {}), ...(fio.p99Us !== undefined ? { p99Us: round(fio.p99Us) } : {}) };
                progress(`${label}: qemu-img bench ${qib ? qib.iops.toFixed(0) : '-'} IOPS, fio ${fio ? fio.iops.toFixed(0) : '-'} IOPS`);
              }
              if (errors.length) {
                c.errors = errors;
                failed = true;
                for (const e of errors) progress(`${label}: FAILED: ${e}`);
              }
            }
          }
        } finally {
          await qsd?.stop();
        }
      }
    }
  } finally {
    await rm(image, { force: true });
  }
  const meta = { machine: { cpu: os.cpus()[0]?.model ?? null, cpus: os.cpus().length, kernel: os.release(), node: process.version }, durationMs: opts.durationMs, warmupMs: opts.warmupMs, driver: opts.driver, completion: opts.driver === 'raw' ? 'busy-poll' : opts.completion, coalesce: opts.coalesce, ours: oursMode(opts), commands };
  if (opts.json) process.stdout.write(`${JSON.stringify({ cases, meta }, null, 2)}\n`);
  else process.stdout.write(`${oursMode(opts)}\n${formatTable(cases)}\n`);
  return failed ? 1 : 0;
}

async function main(): Promise<number> {
  let opts: BlkBenchOptions | undefined;
  try {
    opts = parseBlkBenchArgs(process.argv.slice(2));
  } catch (e) {
    if (isUsageError(e)) {
      process.stderr.write(`${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (!opts) {
    process.stdout.write(blkBenchHelp());
    return 0;
  }
  const onSignal = () => {
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await run(opts);
  } finally {
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    progress(`failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exit(1);
  },
);
