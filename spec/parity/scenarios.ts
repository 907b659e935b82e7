/**
 * The recordings the parity test compares: the same device life (init, guest
 * start, live migration source and destination, stop) once driven by QEMU 7.2 and
 * once by this library, each through a tracing proxy in front of a real back-end.
 *
 * QEMU: net with the iPXE guest (its rings start ~2.4 s after launch), blk with the
 * Linux guest of scripts/build-initramfs.sh (a write and read of /dev/vda); then
 * `migrate` to a second QEMU whose devices go to a second back-end; then QMP `stop`
 * on the destination (vhost_dev_stop). The library: VirtioNet / VirtioBlk open (the
 * handshake and the start), startDirtyLog and handOver to the second back-end (this
 * library's migration of the vhost-user part), then stop().
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, startQemu, startQemuStorageDaemon, startReferenceBackend, startTestpmd, type BackendHandle } from '../../lib/launch/index.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { VirtioBlk } from '../../lib/devices/blk/virtio-blk.js';
import type { VhostDevice } from '../../lib/devices/vhost-device.js';
import { TraceProxy } from '../../lib/trace/trace-proxy.js';
import type { TraceMessage, TraceRecord } from '../../lib/trace/trace-record.js';
import { frontendRequests, items, splitAtFeatures, type Item, type Phase } from './sequence.js';

/** The back-ends compared against. */
export type BackendId = 'dpdk-testpmd' | 'qemu-storage-daemon' | 'reference-net' | 'reference-blk';

/** The keys of each phase, and the raw requests (for failure messages). */
export interface Recording {
  phases: Partial<Record<Phase, Item[]>>;
  raw: Partial<Record<Phase, TraceMessage[]>>;
  /** Ring positions the source back-end answered to GET_VRING_BASE at the switch-over, by ring. */
  sourceBases: Record<number, number>;
  /** Ring positions the destination back-end was given with SET_VRING_BASE, by ring. */
  destinationBases: Record<number, number>;
}

/** `{index: num}` of the messages named `request` sent by `from` (VringState payloads). */
function bases(records: readonly TraceRecord[], from: 'frontend' | 'backend', request: string): Record<number, number> {
  const out: Record<number, number> = {};
  for (const r of records) {
    if (r.kind !== 'message' || r.from !== from || r.request !== request) continue;
    const d = r.decoded as { index?: number; num?: number } | undefined;
    if (typeof d?.index === 'number' && typeof d.num === 'number') out[d.index] = d.num;
  }
  return out;
}

/** What a scenario needs torn down, in reverse order. */
type Cleanup = () => unknown;

/** The MAC QEMU gives the first net device (launch/qemu.ts): the library announces the same one. */
const QEMU_MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts the back-end of `id` (one per side of a migration). */
async function startBackend(id: BackendId): Promise<BackendHandle> {
  switch (id) {
    case 'dpdk-testpmd':
      return startTestpmd();
    case 'qemu-storage-daemon':
      return startQemuStorageDaemon({ imageSize: 64 << 20 });
    case 'reference-net':
      return startReferenceBackend({ device: 'net', queues: 2 });
    case 'reference-blk':
      return startReferenceBackend({ device: 'blk', size: 64 << 20 });
  }
}

/** Whether `id` serves net. */
export function isNet(id: BackendId): boolean {
  return id === 'dpdk-testpmd' || id === 'reference-net';
}

/** Two back-ends of `id`, each behind a tracing proxy. */
async function rig(id: BackendId, cleanups: Cleanup[]) {
  const dir = await makeTempDir('vhost-parity-');
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const sides = [];
  for (const name of ['a', 'b']) {
    const backend = await startBackend(id);
    cleanups.push(() => backend.stop());
    const proxy = await TraceProxy.start({ listen: path.join(dir, `${name}.sock`), connect: backend.socketPath });
    cleanups.push(() => proxy.close());
    sides.push({ backend, proxy });
  }
  return { a: sides[0]!, b: sides[1]! };
}

function record(phases: [Phase, TraceMessage[]][], a: TraceProxy, srcMark: number, b: TraceProxy, dstMark: number): Recording {
  // Replies are not among the front-end's requests: take every record from the source's mark on.
  const srcAfter = a.records.filter((r) => r.kind === 'message' && r.connection === 1);
  const firstSwitch = srcAfter.indexOf(frontendRequests(a.records, 1)[srcMark]!);
  const dstBefore = frontendRequests(b.records, 1).slice(0, dstMark);
  const r: Recording = {
    phases: {},
    raw: {},
    sourceBases: bases(firstSwitch < 0 ? [] : srcAfter.slice(firstSwitch), 'backend', 'GET_VRING_BASE'),
    destinationBases: bases(dstBefore, 'frontend', 'SET_VRING_BASE'),
  };
  for (const [p, m] of phases) {
    r.phases[p] = items(m);
    r.raw[p] = m;
  }
  return r;
}

/** QEMU 7.2 drives the device through its life against two back-ends of `id`. */
export async function recordQemu(id: BackendId, cleanups: Cleanup[]): Promise<Recording> {
  const { a, b } = await rig(id, cleanups);
  const net = isNet(id);
  const guest = net
    ? ({ guest: 'ipxe', net: [{ socket: a.proxy.listenPath }] } as const)
    : ({ guest: 'linux', blk: [{ socket: a.proxy.listenPath }], guestArgs: { job: 'blk', bytes: 65536 } } as const);
  const src = await startQemu(guest);
  cleanups.push(() => src.stop());
  const dst = await startQemu(net ? { ...guest, incoming: true, net: [{ socket: b.proxy.listenPath }] } : { ...guest, incoming: true, blk: [{ socket: b.proxy.listenPath }] });
  cleanups.push(() => dst.stop());
  if (net) {
    const dev = (await src.virtioDevices())[0]!.path;
    await src.waitVhostStarted(dev, 20_000);
    await sleep(1000);
  } else {
    const r = await src.guestResult('blk', 45_000);
    if (r['read'] !== r['written']) throw new Error(`the guest read back other data: ${JSON.stringify(r)}`);
  }
  const srcMark = frontendRequests(a.proxy.records, 1).length;
  await src.migrate(dst, 30_000);
  await sleep(300);
  const dstMark = frontendRequests(b.proxy.records, 1).length;
  await dst.qmp.execute('stop');
  await sleep(300);
  const srcReq = frontendRequests(a.proxy.records, 1);
  const dstReq = frontendRequests(b.proxy.records, 1);
  const [init, firstStart] = splitAtFeatures(srcReq.slice(0, srcMark));
  // With a Linux guest SeaBIOS starts and stops the blk device (it looks for a boot disk)
  // before the kernel runs: the guest's start is what follows the firmware's last stop.
  let lastStop = -1;
  firstStart.forEach((m, i) => {
    if (m.request === 'GET_VRING_BASE') lastStop = i;
  });
  const start = firstStart.slice(lastStop + 1);
  const [dInit, dStart] = splitAtFeatures(dstReq.slice(0, dstMark));
  return record([
    ['init', init],
    ['start', start],
    ['migration-source', srcReq.slice(srcMark)],
    ['migration-destination-init', dInit],
    ['migration-destination', dStart],
    ['stop', dstReq.slice(dstMark)],
  ], a.proxy, srcMark, b.proxy, dstMark);
}

/** This library drives the device through the same life against two back-ends of `id`. */
export async function recordLibrary(id: BackendId, cleanups: Cleanup[]): Promise<Recording> {
  const { a, b } = await rig(id, cleanups);
  let device: VhostDevice;
  let handOver: () => Promise<unknown>;
  if (isNet(id)) {
    const n = await VirtioNet.open(a.proxy.listenPath, { queueSize: 256 });
    cleanups.push(() => n.close());
    n.sendBurst([new Uint8Array(60)], 1);
    device = n.device;
    // VirtioNet.handOver adds SEND_RARP on the new back-end, as a migrated guest is announced.
    handOver = () => n.handOver(b.proxy.listenPath, { mac: QEMU_MAC });
  } else {
    const blk = await VirtioBlk.open(a.proxy.listenPath, { queueSize: 256 });
    cleanups.push(() => blk.close());
    await blk.write(0, new Uint8Array(4096).fill(7));
    await blk.read(0, 4096);
    device = blk.device;
    handOver = () => blk.device.handOver(b.proxy.listenPath);
  }
  await sleep(100);
  const srcMark = frontendRequests(a.proxy.records, 1).length;
  if (device.canLogDirty) await device.startDirtyLog();
  await handOver();
  await sleep(100);
  const dstMark = frontendRequests(b.proxy.records, 1).length;
  await device.stop();
  await sleep(100);
  const srcReq = frontendRequests(a.proxy.records, 1);
  const dstReq = frontendRequests(b.proxy.records, 1);
  const [init, start] = splitAtFeatures(srcReq.slice(0, srcMark));
  const [dInit, dStart] = splitAtFeatures(dstReq.slice(0, dstMark));
  return record([
    ['init', init],
    ['start', start],
    ['migration-source', srcReq.slice(srcMark)],
    ['migration-destination-init', dInit],
    ['migration-destination', dStart],
    ['stop', dstReq.slice(dstMark)],
  ], a.proxy, srcMark, b.proxy, dstMark);
}
