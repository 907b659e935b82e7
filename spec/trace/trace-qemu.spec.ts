/**
 * The target for the trace tool: a capture of QEMU's whole guest start (and stop),
 * taken by `vhost-user trace` between QEMU 7.2 and the reference back-end, that tshark
 * decodes with the shipped dissector. The guest is iPXE (the cheapest guest whose driver
 * starts the net rings, about 2.4 s after launch).
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { makeTempDir, qemuAvailable, startQemu, startReferenceBackend, stopAll, type QemuProcess } from '../../lib/launch/index.js';
import { cli } from '../helpers/cli.js';
import { tshark } from './helpers.js';

describe('vhost-user trace of QEMU 7.2 starting and stopping an iPXE guest @integration', function () {
  this.timeout(90_000);
  let qemu: QemuProcess | null = null;
  let dir = '';

  before(function () {
    if (!qemuAvailable()) {
      process.stdout.write('      skipped: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)\n');
      this.skip();
    }
  });

  afterEach(async () => {
    await qemu?.stop();
    qemu = null;
    await stopAll();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the pcapng capture holds the whole conversation, and tshark names every request and decodes the fields', async () => {
    dir = await makeTempDir('vhost-trace-qemu-');
    const backend = await startReferenceBackend({ device: 'net', queues: 2 });
    const listen = path.join(dir, 'proxy.sock');
    const capture = path.join(dir, 'qemu.pcapng');
    const trace = cli(['trace', '--listen', listen, '--connect', backend.socketPath, '--once', '--device', 'net', '--format', 'json', '--pcapng', capture], 60_000);
    for (let i = 0; i < 250 && !existsSync(listen); i++) await new Promise((r) => setTimeout(r, 20));
    qemu = await startQemu({ guest: 'ipxe', net: [{ socket: listen }] });
    const dev = (await qemu.virtioDevices())[0]!.path;
    await qemu.waitVhostStarted(dev, 30_000);
    // QEMU's exit stops the device (SET_STATUS 0, GET_VRING_BASE) and closes the connection: --once ends the trace.
    await qemu.stop();
    qemu = null;
    const run = await trace;
    expect(run.status, run.stderr).to.equal(0);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as { from?: string; request?: string; fds?: number });
    const sent = lines.filter((l) => l.from === 'frontend').map((l) => l.request);

    // The names tshark gives each packet are the ones the proxy recorded, packet for packet.
    const names = (await tshark(capture, '-T', 'fields', '-e', 'vhostuser.request_name')).trim().split('\n');
    expect(names).to.deep.equal(lines.filter((l) => l.request !== undefined).map((l) => l.request));
    // The guest start and stop are all there (notes §9): features, memory, every ring, status.
    for (const request of ['GET_FEATURES', 'SET_FEATURES', 'SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_BASE', 'SET_VRING_KICK', 'SET_VRING_CALL', 'SET_STATUS', 'GET_VRING_BASE']) {
      expect(sent, request).to.include(request);
    }
    expect(sent.some((r) => r === 'SET_MEM_TABLE' || r === 'ADD_MEM_REG'), 'guest memory shared').to.equal(true);
    expect(lines.some((l) => l.from === 'frontend' && l.request === 'SET_VRING_KICK' && l.fds === 1), 'the kick eventfd travelled').to.equal(true);

    // Decoded fields: DRIVER_OK in the start's SET_STATUS, and a ring's size.
    const verbose = await tshark(capture, '-o', 'vhostuser.device:net', '-V', '-Y', 'vhostuser.request_name == "SET_STATUS"');
    expect(verbose).to.match(/DRIVER_OK/);
    const nums = (await tshark(capture, '-T', 'fields', '-Y', 'vhostuser.request_name == "SET_VRING_NUM"', '-e', 'vhostuser.vring.num')).trim().split('\n');
    expect(nums.length).to.be.at.least(2);
    for (const n of nums) expect(n, 'QEMU\'s default ring size').to.equal('256');
    process.stdout.write(`      ${lines.length} messages captured, ${names.length} packets decoded by tshark\n`);
  });
});
