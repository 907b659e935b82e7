/**
 * "ours" in `npm run bench:blk`: this library driving a vhost-user-blk back-end
 * with 4 KiB random requests, `qd` in flight on each of `queues` rings, polled,
 * for a fixed window; and the CPU both processes spent in that window.
 *
 * runOurs() drives VirtioBlk's batch API (createBatch / submit / kick / poll:
 * nothing allocated per request) on queues in 'poll' mode: reap, resubmit,
 * publish once per queue and pass, kick only when the device asks; when nothing
 * completed, BlkBatch.wait sleeps on the call eventfds until `coalesce`
 * requests completed (EVENT_IDX used_event; default qd), so CPU follows the I/O done, not
 * the time spent waiting. `completion: 'busy-poll'` spins instead. runRawRings() is the same
 * measurement on VhostUserClient and SplitVirtqueue directly, with no device
 * layer, kept for comparison (`--driver raw`): what the device layer costs.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { VhostUserClient, SUPPORTED_PROTOCOL_FEATURES } from '../../lib/client/vhost-user-client.js';
import { decodeBlkConfig, BLK_CONFIG_SIZE } from '../../lib/devices/blk/blk-config.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { bit, DeviceStatus, hasBit, ProtocolFeature, VirtioFeature } from '../../lib/protocol/constants.js';
import { EventFd } from '../../lib/transport/eventfd.js';
import { SplitVirtqueue } from '../../lib/virtqueue/split-queue.js';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import { BlkBatch, BlkBatchResults } from '../../lib/devices/blk/blk-batch.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../lib/devices/blk/blk-request.js';
import { parsePidStat } from './cpu.js';
import { BLK_BS, type BlkCompletion, type BlkRw } from './blk-options.js';

export interface OursCell {
  rw: BlkRw;
  qd: number;
  queues: number;
  socket: string;
  backendPid: number;
  durationMs: number;
  warmupMs: number;
  /** runOurs: 'wait' (default) sleeps in BlkBatch.wait when nothing completed; 'busy-poll' spins. */
  completion?: BlkCompletion;
  /** With 'wait': completions per call; 0 or absent: qd (everything in flight on the queue). */
  coalesce?: number;
}

export interface OursResult {
  iops: number;
  latUs: number;
  p99Us: number;
  /** utime + stime of this process per completed I/O, in µs. */
  cpuUsPerIo: number;
  /** utime + stime of the back-end process per completed I/O, in µs. */
  backendCpuUsPerIo: number;
  ios: number;
  /** The system (kernel) part of cpuUsPerIo (runOurs only). */
  sysUsPerIo?: number;
  /** Kicks this side sent per completed I/O (runOurs only). */
  kicksPerIo?: number;
  /** Sleeps in BlkBatch.wait that ended with a call, per completed I/O (runOurs with 'wait' only). */
  callsPerIo?: number;
  passesPerIo?: number;
}

/** /proc/PID/stat ticks are USER_HZ: 100 on every Linux this runs on. */
const TICK_US = 10_000;
/** Latency histogram: 0.1 µs buckets up to 100 ms; the last bucket takes the rest. */
const HIST_STEP_US = 0.1;
const HIST_BUCKETS = 1_000_000;
const QUEUE_SIZE = 128;
const REQ_STRIDE = BLK_BS + 4096; // data page, then header (16 B) and status (1 B) on a page of their own

function backendTicks(pid: number): number {
  return parsePidStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** Percentile `p` (0..1) of a histogram in HIST_STEP_US buckets. */
export function histogramPercentile(hist: Uint32Array, count: number, p: number): number {
  const want = Math.ceil(count * p);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]!;
    if (seen >= want) return (i + 1) * HIST_STEP_US;
  }
  return hist.length * HIST_STEP_US;
}

/** Runs one cell with VirtioBlk against the back-end at `cell.socket`; throws on any failure (the benchmark then fails). */
export async function runOurs(cell: OursCell): Promise<OursResult> {
  const { qd, queues } = cell;
  const blk = await VirtioBlk.open(cell.socket, { queues, queueSize: 256, mode: 'poll', timeoutMs: 30_000 });
  const batches: BlkBatch[] = [];
  try {
    const blocks = Math.floor(blk.capacityBytes / BLK_BS);
    if (blocks < 1) throw new Error('the device has no 4 KiB block');
    for (let q = 0; q < queues; q++) batches.push(blk.createBatch(q, qd, BLK_BS));
    const type = cell.rw === 'randread' ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    const started = new Float64Array(queues * qd);
    const results = new BlkBatchResults(qd);
    const hist = new Uint32Array(HIST_BUCKETS);
    let rng = 0x9e3779b9 | 0;
    // `at`: the time the request goes out; a resubmission takes the time its predecessor's completion was seen,
    // the same pass, so the latency clock is read once per pass, not per request.
    const submit = (q: number, i: number, at: number): void => {
      rng ^= rng << 13;
      rng ^= rng >>> 17;
      rng ^= rng << 5;
      started[q * qd + i] = at;
      if (!batches[q]!.submit(i, type, ((rng >>> 0) % blocks) * BLK_BS)) throw new Error(`ring ${q} full`);
    };
    for (let q = 0; q < queues; q++) {
      for (let i = 0; i < qd; i++) submit(q, i, performance.now());
      batches[q]!.kick();
    }
    let ios = 0;
    let latSum = 0;
    let measuring = false;
    let cpu0 = process.cpuUsage();
    let be0 = backendTicks(cell.backendPid);
    let t0 = performance.now();
    const warmEnd = t0 + cell.warmupMs;
    const end = warmEnd + cell.durationMs;
    const wait = (cell.completion ?? 'wait') === 'wait';
    let kicks0 = 0;
    let calls = 0;
    let passes = 0;
    // Default: one call per round of qd completions. Measured on qsd null-co at qd 32 (2 cores shared): qd/2
    // brought ~1.7x the calls per I/O and a CPU per I/O no lower, as the daemon completes a kick's worth at once.
    const coalesce = cell.coalesce ? cell.coalesce : qd;
    for (let now = performance.now(); now < end; now = performance.now()) {
      if (!measuring && now >= warmEnd) {
        measuring = true;
        kicks0 = blk.totals().kicks;
        cpu0 = process.cpuUsage();
        be0 = backendTicks(cell.backendPid);
        t0 = now;
      }
      let reaped = 0;
      if (measuring) passes++;
      for (let q = 0; q < queues; q++) {
        const b = batches[q]!;
        const got = b.poll(results);
        if (got === 0) continue;
        reaped += got;
        const done = performance.now();
        for (let k = 0; k < got; k++) {
          const i = results.index[k]!;
          if (results.status[k] !== 0) throw new Error(`request on queue ${q} completed with status ${results.status[k]}`);
          if (measuring) {
            const us = (done - started[q * qd + i]!) * 1000;
            latSum += us;
            hist[Math.min(HIST_BUCKETS - 1, Math.floor(us / HIST_STEP_US))]!++;
            ios++;
          }
          submit(q, i, done);
        }
        b.kick();
      }
      // Nothing completed: sleep until the device has done `coalesce` (the window's end bounds the sleep).
      if (reaped === 0 && wait && BlkBatch.wait(batches, coalesce, Math.min(100, end - now + 1)) && measuring) calls++;
    }
    const kicks = blk.totals().kicks - kicks0;
    const elapsedUs = (performance.now() - t0) * 1000;
    const cpu = process.cpuUsage(cpu0);
    const beUs = (backendTicks(cell.backendPid) - be0) * TICK_US;
    if (ios === 0) throw new Error('no request completed in the measured window');
    const drainEnd = performance.now() + 5000;
    for (let q = 0; q < queues; q++) {
      for (let i = 0; i < qd && performance.now() < drainEnd; ) {
        if (!batches[q]!.isBusy(i)) i++;
        else batches[q]!.poll(results);
      }
    }
    return {
      iops: ios / (elapsedUs / 1e6),
      latUs: latSum / ios,
      p99Us: histogramPercentile(hist, ios, 0.99),
      cpuUsPerIo: (cpu.user + cpu.system) / ios,
      backendCpuUsPerIo: beUs / ios,
      ios,
      sysUsPerIo: cpu.system / ios,
      kicksPerIo: kicks / ios,
      callsPerIo: calls / ios,
      passesPerIo: passes / ios,
    };
  } finally {
    for (const b of batches) {
      try {
        b.close();
      } catch {
        // still in flight after the drain deadline: closing the device releases them
      }
    }
    blk.close();
  }
}

/** The same cell on VhostUserClient and SplitVirtqueue directly (no device layer). */
export async function runRawRings(cell: OursCell): Promise<OursResult> {
  const { qd, queues } = cell;
  if (qd * 3 > QUEUE_SIZE) throw new Error(`qd ${qd} needs more than ${QUEUE_SIZE} descriptors per ring`);
  const client = await VhostUserClient.connect(cell.socket, { timeoutMs: 5000 });
  const ringBytes = SplitVirtqueue.footprint(QUEUE_SIZE);
  const ringStride = Math.ceil(ringBytes / 4096) * 4096;
  const reqBase = queues * ringStride;
  const memory = GuestMemory.create({ size: reqBase + queues * qd * REQ_STRIDE });
  const kicks: EventFd[] = [];
  const calls: EventFd[] = [];
  try {
    const n = await client.negotiate({ protocolFeatures: SUPPORTED_PROTOCOL_FEATURES });
    if ((n.queueNum ?? 1) < queues) throw new Error(`the back-end has ${n.queueNum ?? 1} queues, the cell needs ${queues}`);
    const config = decodeBlkConfig(await client.getConfig(0, BLK_CONFIG_SIZE), n.features);
    const blocks = Math.floor((Number(config.capacity) * 512) / BLK_BS);
    if (blocks < 1) throw new Error('the device has no 4 KiB block');
    await client.setFeatures(bit(VirtioFeature.VIRTIO_F_VERSION_1) | bit(VirtioFeature.VHOST_USER_F_PROTOCOL_FEATURES));
    const status = hasBit(n.protocolFeatures, ProtocolFeature.STATUS);
    const ready = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK;
    if (status) await client.setStatus(ready);
    await client.setMemTable(memory);
    const vqs: SplitVirtqueue[] = [];
    for (let q = 0; q < queues; q++) {
      const vq = new SplitVirtqueue({ memory, index: q, size: QUEUE_SIZE, ringGpa: q * ringStride, eventIdx: false });
      vqs.push(vq);
      kicks.push(new EventFd());
      calls.push(new EventFd());
      await client.setVringNum(q, QUEUE_SIZE);
      await client.setVringBase(q, 0);
      const a = vq.addresses;
      await client.setVringAddr({ index: q, descUserAddr: memory.userAddr(a.desc), availUserAddr: memory.userAddr(a.driver), usedUserAddr: memory.userAddr(a.device) });
      await client.setVringCall(q, calls[q]!.fd);
      await client.setVringKick(q, kicks[q]!.fd);
      await client.setVringEnable(q, true);
    }
    if (status) await client.setStatus(ready | DeviceStatus.DRIVER_OK);

    // Per request slot (token = q * qd + i): header, data and status GPAs, start time.
    const slots = queues * qd;
    const started = new Float64Array(slots);
    const gpas = new Float64Array(3);
    const lens = new Uint32Array(3);
    const tokens = new Uint32Array(QUEUE_SIZE);
    const usedLens = new Uint32Array(QUEUE_SIZE);
    const hist = new Uint32Array(HIST_BUCKETS);
    const type = cell.rw === 'randread' ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    // Views made once: the I/O loop allocates nothing per request.
    const hdrs = Array.from({ length: slots }, (_, t) => memory.dataView(reqBase + t * REQ_STRIDE + BLK_BS, 16));
    const statuses = Array.from({ length: slots }, (_, t) => memory.bytes(reqBase + t * REQ_STRIDE + BLK_BS + 16, 1));
    for (const h of hdrs) {
      h.setUint32(0, type, true);
      h.setUint32(4, 0, true);
    }
    let rng = 0x9e3779b9 | 0;
    const submit = (vq: SplitVirtqueue, token: number): void => {
      rng ^= rng << 13;
      rng ^= rng >>> 17;
      rng ^= rng << 5;
      const block = (rng >>> 0) % blocks;
      const base = reqBase + token * REQ_STRIDE;
      const hdr = hdrs[token]!;
      const sector = block * (BLK_BS / 512);
      hdr.setUint32(8, sector >>> 0, true);
      hdr.setUint32(12, Math.floor(sector / 2 ** 32), true);
      gpas[0] = base + BLK_BS;
      lens[0] = 16;
      gpas[1] = base;
      lens[1] = BLK_BS;
      gpas[2] = base + BLK_BS + 16;
      lens[2] = 1;
      started[token] = performance.now();
      if (!vq.addChain(gpas, lens, 3, type === VIRTIO_BLK_T_OUT ? 2 : 1, token)) throw new Error(`ring ${vq.index} full`);
    };
    for (let q = 0; q < queues; q++) {
      for (let i = 0; i < qd; i++) submit(vqs[q]!, q * qd + i);
      if (vqs[q]!.publish()) kicks[q]!.signal();
    }
    let ios = 0;
    let latSum = 0;
    let measuring = false;
    let cpu0 = process.cpuUsage();
    let be0 = backendTicks(cell.backendPid);
    let t0 = performance.now();
    const warmEnd = t0 + cell.warmupMs;
    const end = warmEnd + cell.durationMs;
    // A synchronous polling loop: nothing else runs in this process during the window.
    for (let now = performance.now(); now < end; now = performance.now()) {
      if (!measuring && now >= warmEnd) {
        measuring = true;
        cpu0 = process.cpuUsage();
        be0 = backendTicks(cell.backendPid);
        t0 = now;
      }
      for (let q = 0; q < queues; q++) {
        const vq = vqs[q]!;
        const got = vq.reap(tokens, usedLens, QUEUE_SIZE);
        if (got === 0) continue;
        const done = performance.now();
        for (let i = 0; i < got; i++) {
          const token = tokens[i]!;
          const st = statuses[token]![0];
          if (st !== 0) throw new Error(`request on queue ${q} completed with status ${st}`);
          if (measuring) {
            const us = (done - started[token]!) * 1000;
            latSum += us;
            hist[Math.min(HIST_BUCKETS - 1, Math.floor(us / HIST_STEP_US))]!++;
            ios++;
          }
          submit(vq, token);
        }
        if (vq.publish()) kicks[q]!.signal();
      }
    }
    const elapsedUs = (performance.now() - t0) * 1000;
    const cpu = process.cpuUsage(cpu0);
    const beUs = (backendTicks(cell.backendPid) - be0) * TICK_US;
    if (ios === 0) throw new Error('no request completed in the measured window');
    // Let what is still in flight finish before the connection goes (a clean stop for the back-end).
    const drainEnd = performance.now() + 2000;
    for (let q = 0; q < queues; q++) {
      while (vqs[q]!.outstanding > 0 && performance.now() < drainEnd) vqs[q]!.reap(tokens, usedLens, QUEUE_SIZE);
    }
    return {
      iops: ios / (elapsedUs / 1e6),
      latUs: latSum / ios,
      p99Us: histogramPercentile(hist, ios, 0.99),
      cpuUsPerIo: (cpu.user + cpu.system) / ios,
      backendCpuUsPerIo: beUs / ios,
      ios,
    };
  } finally {
    client.close();
    for (const e of [...kicks, ...calls]) e.close();
    memory.close();
  }
}
