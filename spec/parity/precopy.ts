/**
 * QEMU's live migration beside this library's, on the same back-ends: two
 * dpdk-testpmd (io forwarding), once migrated by QEMU 7.2 (an iPXE guest, whose
 * net rings run, from a QEMU on testpmd A to an incoming QEMU on testpmd B) and
 * once by migrate() (net, precopy with verification, from testpmd A' to B'). Each
 * front-end's conversation goes through a TraceProxy. Used by
 * spec/parity/precopy-parity.spec.ts and `npm run bench:migrate`.
 *
 * The migration phase compared: on the source, from logging on (SET_LOG_BASE) to
 * the end of the conversation ('precopy-source'); on the destination, its whole
 * conversation up to the guest running there, cut at the first SET_FEATURES into
 * the handshake ('precopy-destination-init') and the start ('precopy-destination').
 * Both use the key reduction and the diff of sequence.ts.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, startQemu, startTestpmd, type MigrationResult, type TestpmdBackend } from '../../lib/launch/index.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { migrate } from '../../lib/migration/migrate.js';
import type { MigrationReport } from '../../lib/migration/report.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import type { TraceMessage } from '../../lib/trace/trace-record.js';
import { align, diff, frontendRequests, items, splitAtFeatures, type Difference, type Item, type Phase } from './sequence.js';

/** The phases of the precopy comparison, in order. */
export const PRECOPY_PHASES: readonly Phase[] = ['precopy-source', 'precopy-destination-init', 'precopy-destination'];

/** What is torn down afterwards, in reverse order. */
export type Cleanup = () => unknown;

/** One front-end's migration, recorded. */
export interface MigrationRecording {
  /** The reduced items of each phase. */
  phases: Partial<Record<Phase, Item[]>>;
  /** The raw requests of each phase. */
  raw: Partial<Record<Phase, TraceMessage[]>>;
  /** GET_VRING_BASE answers of the source back-end, by ring. */
  sourceBases: Record<number, number>;
  /** SET_VRING_BASE sent to the destination back-end, by ring. */
  destinationBases: Record<number, number>;
  /**
   * Measured the same way for both front-ends, from the two proxies' clocks: from
   * the source's first stopping request (SET_STATUS 0 or GET_VRING_BASE) to the
   * destination's DRIVER_OK (or, without SET_STATUS, its last SET_VRING_KICK), ms.
   */
  vhostDowntimeMs: number | null;
}

/** QEMU's side: the recording and what query-migrate said. */
export interface QemuMigration extends MigrationRecording {
  /** What QemuProcess.migrate() measured. */
  result: MigrationResult;
  /** From the source's final `query-migrate` `ram`: dirty-sync-count (log syncs, i.e. precopy rounds), normal and duplicate (zero) pages sent. */
  ram: { dirtySyncCount: number; normalPages: number; duplicatePages: number; transferredBytes: number };
  /** Guest RAM, MiB. */
  memoryMiB: number;
}

/** The library's side: the recording and migrate()'s report. */
export interface LibraryMigration extends MigrationRecording {
  report: MigrationReport;
}

/** The QEMU guest's RAM (QEMU's launcher default; issue #11 measured QEMU with it). */
export const QEMU_MEMORY_MIB = 256;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** testpmd with io forwarding and retry (a burst waits rather than drops while a request holds a ring), its own --file-prefix. */
async function startForwarder(cleanups: Cleanup[]): Promise<TestpmdBackend> {
  const t = await startTestpmd({ forwardMode: 'io', interactive: true });
  cleanups.push(() => t.stop());
  await t.command('set fwd io retry');
  await t.startForwarding();
  return t;
}

/** Two testpmd, each behind a tracing proxy. */
async function rig(cleanups: Cleanup[]): Promise<{ a: TraceProxy; b: TraceProxy; backends: TestpmdBackend[] }> {
  const dir = await makeTempDir('vhost-precopy-');
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const out: TraceProxy[] = [];
  const backends: TestpmdBackend[] = [];
  for (const name of ['a', 'b']) {
    const backend = await startForwarder(cleanups);
    backends.push(backend);
    const proxy = await TraceProxy.start({ listen: path.join(dir, `${name}.sock`), connect: backend.socketPath, device: 'net' });
    cleanups.push(() => proxy.close());
    out.push(proxy);
  }
  return { a: out[0]!, b: out[1]!, backends };
}

/** `{index: num}` of the VringState messages named `request` sent by `from`. */
function bases(messages: readonly TraceMessage[], from: 'frontend' | 'backend', request: string): Record<number, number> {
  const out: Record<number, number> = {};
  for (const m of messages) {
    if (m.from !== from || m.request !== request) continue;
    const d = m.decoded as { index?: number; num?: number } | undefined;
    if (typeof d?.index === 'number' && typeof d.num === 'number') out[d.index] = d.num;
  }
  return out;
}

/** Every message (both directions) of connection 1 on the front-end channel. */
function conversation(p: TraceProxy): TraceMessage[] {
  return p.messages.filter((m) => m.connection === 1 && m.channel === 'frontend');
}

function isDriverOk(m: TraceMessage): boolean {
  return m.request === 'SET_STATUS' && typeof m.decoded === 'bigint' && (m.decoded & 4n) !== 0n;
}

/**
 * Builds a recording: the source's conversation from `srcFrom` (an index into its
 * requests) on, the destination's requests before `dstUntil` (default all).
 */
function record(a: TraceProxy, srcFrom: number, b: TraceProxy, dstUntil?: number): MigrationRecording {
  const srcReq = frontendRequests(a.records, 1);
  const dstReq = frontendRequests(b.records, 1).slice(0, dstUntil);
  const source = srcReq.slice(srcFrom);
  const srcAll = conversation(a);
  const first = source[0];
  const srcAfter = first ? srcAll.slice(srcAll.indexOf(first)) : [];
  const [dInit, dStart] = splitAtFeatures(dstReq);
  const phases: [Phase, TraceMessage[]][] = [
    ['precopy-source', source],
    ['precopy-destination-init', dInit],
    ['precopy-destination', dStart],
  ];
  const stop = source.find((m) => m.request === 'GET_VRING_BASE' || (m.request === 'SET_STATUS' && m.decoded === 0n));
  const running = dStart.find(isDriverOk) ?? dStart.filter((m) => m.request === 'SET_VRING_KICK').at(-1);
  const r: MigrationRecording = {
    phases: {},
    raw: {},
    sourceBases: bases(srcAfter, 'backend', 'GET_VRING_BASE'),
    destinationBases: bases(dStart, 'frontend', 'SET_VRING_BASE'),
    vhostDowntimeMs: stop && running ? Math.round((b.startEpochMs + running.time - (a.startEpochMs + stop.time)) * 10) / 10 : null,
  };
  for (const [p, m] of phases) {
    r.phases[p] = items(m);
    r.raw[p] = m;
  }
  return r;
}

/** How a comparison runs. */
export interface PrecopyRunOptions {
  /** Wait after the guest's rings started before migrating (ms, default 1000: iPXE retries DHCP after 1 s). */
  qemuSettleMs?: number;
  /**
   * Open and close a device on the library's destination testpmd once before
   * migrating, directly (not through the proxy). Default true: dpdk-testpmd answers
   * the first connection it ever gets 0.4-0.9 s late (measured here: 896 ms for the
   * first VirtioNet.open, 22 ms for the next); QEMU's destination makes that
   * connection at its start-up, before the migration, while migrate() connects at
   * the switchover, inside the downtime. false measures that first connection too.
   */
  warmDestination?: boolean;
  /** migrate()'s timing (defaults: its own). */
  library?: Partial<Parameters<typeof migrate>[0]>;
  /** Progress lines. */
  log?: (line: string) => void;
}

/**
 * QEMU 7.2 migrates an iPXE guest from a QEMU on testpmd A to one on testpmd B.
 * Everything started is pushed on `cleanups` (the caller runs them, reversed).
 */
export async function recordQemuMigration(cleanups: Cleanup[], opts: PrecopyRunOptions = {}): Promise<QemuMigration> {
  const log = opts.log ?? (() => {});
  const { a, b } = await rig(cleanups);
  const src = await startQemu({ guest: 'ipxe', memoryMiB: QEMU_MEMORY_MIB, net: [{ socket: a.listenPath }] });
  cleanups.push(() => src.stop());
  const dst = await startQemu({ guest: 'ipxe', memoryMiB: QEMU_MEMORY_MIB, incoming: true, net: [{ socket: b.listenPath }] });
  cleanups.push(() => dst.stop());
  const dev = (await src.virtioDevices())[0]!.path;
  await src.waitVhostStarted(dev, 30_000);
  log('QEMU: the iPXE guest runs its net rings; migrating');
  await sleep(opts.qemuSettleMs ?? 1000);
  const srcMark = frontendRequests(a.records, 1).length;
  const result = await src.migrate(dst, 60_000);
  const info = await src.qmp.execute<{ ram?: Record<string, number> }>('query-migrate');
  const r = info.ram ?? {};
  const ram = { dirtySyncCount: r['dirty-sync-count'] ?? 0, normalPages: r['normal'] ?? 0, duplicatePages: r['duplicate'] ?? 0, transferredBytes: r['transferred'] ?? 0 };
  // QEMU's announce timer sends SEND_RARP five times over about a second after the destination runs.
  await sleep(1200);
  const dstUntil = frontendRequests(b.records, 1).length;
  // Only the messages since `migrate`: logging on is the first thing QEMU's migration sends.
  const rec = record(a, srcMark, b, dstUntil);
  log(`QEMU: total ${result.totalTimeMs} ms, downtime ${result.downtimeMs} ms`);
  return { ...rec, result, ram, memoryMiB: QEMU_MEMORY_MIB };
}

/**
 * This library's migrate() moves a net device from testpmd A' to testpmd B' (both
 * fresh). Everything started is pushed on `cleanups`.
 */
export async function recordLibraryMigration(cleanups: Cleanup[], opts: PrecopyRunOptions = {}): Promise<LibraryMigration> {
  const log = opts.log ?? (() => {});
  const { a, b, backends } = await rig(cleanups);
  if (opts.warmDestination ?? true) {
    const warm = await VirtioNet.open(backends[1]!.socketPath, { queueSize: 256 });
    warm.close();
    await sleep(100);
  }
  const report = await migrate({ from: a.listenPath, to: b.listenPath, device: 'net', ring: 'split', queueSize: 256, ...opts.library, onProgress: (l) => log(`library: ${l}`) });
  await a.idle();
  await b.idle();
  const srcReq = frontendRequests(a.records, 1);
  const logOn = srcReq.findIndex((m) => m.request === 'SET_LOG_BASE');
  // migrate() closes the device on the destination when it is done: no stop is sent, so all of it is the migration.
  const rec = record(a, logOn < 0 ? srcReq.length : logOn, b);
  log(`library: total ${report.totalMs} ms, downtime ${report.downtimeMs} ms, verified ${String(report.verified)}`);
  return { ...rec, report };
}

/** The differences of every precopy phase. */
export function precopyDiff(qemu: MigrationRecording, library: MigrationRecording): Difference[] {
  return PRECOPY_PHASES.flatMap((p) => diff(p, qemu.phases[p] ?? [], library.phases[p] ?? []));
}

/**
 * One phase's sequences as an aligned two-column text table (QEMU | library): a
 * message both sent shares a row; `+NR` marks NEED_REPLY.
 */
export function sideBySide(phase: Phase, qemu: MigrationRecording, library: MigrationRecording): string {
  const text = (i: Item | null) => (i ? (i.needReply ? `${i.key} +NR` : i.key) : '');
  const rows = align(qemu.phases[phase] ?? [], library.phases[phase] ?? []).map(([q, l]) => [text(q), text(l)] as const);
  const w = Math.max('QEMU 7.2'.length, ...rows.map(([q]) => q.length));
  const line = (q: string, l: string) => `  ${q.padEnd(w)} | ${l}`.trimEnd();
  return [`${phase}:`, line('QEMU 7.2', 'this library'), `  ${'-'.repeat(w)}-+-${'-'.repeat(12)}`, ...rows.map(([q, l]) => line(q, l))].join('\n');
}
