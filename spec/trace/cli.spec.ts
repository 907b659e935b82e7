/**
 * `vhost-user trace` as a user runs it: a child process between VirtioNet (this
 * process) and the reference back-end (this process too), printing JSON or text
 * lines and writing a pcapng; --once ends with the first connection, SIGTERM
 * ends it otherwise, and both flush what was recorded.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { makeTempDir } from '../../lib/launch/backend-process.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';
import { loopFrames, until } from './helpers.js';
import { parsePcapng } from './pcapng-parse.js';

const MAIN = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));

describe('vhost-user trace (CLI)', function () {
  this.timeout(20_000);
  let dir: string;
  let backend: ReferenceBackend | null = null;

  beforeEach(async () => {
    dir = await makeTempDir('vhost-trace-cli-');
  });
  afterEach(async () => {
    backend?.close();
    backend = null;
    await rm(dir, { recursive: true, force: true });
  });

  it('--help describes the options', async () => {
    const r = await cli(['trace', '--help']);
    expect(r.status).to.equal(0);
    for (const o of ['--listen PATH', '--connect PATH', '--format text|json', '--output FILE', '--pcapng FILE', '--once', 'vhost-user.lua']) expect(r.stdout).to.include(o);
    expect((await cli(['--help'])).stdout).to.match(/\n\s+trace\s/);
  });

  it('refuses the same path for --listen and --connect (status 2, one line)', async () => {
    const r = await cli(['trace', '--listen', path.join(dir, 'a'), '--connect', path.join(dir, 'a')]);
    expect(r.status).to.equal(2);
    expectOneErrorLine(r, 'VHOST_INVALID_ARGUMENT');
  });

  it('--once --format json --pcapng: one JSON line per message as VirtioNet loops frames, then exits with the capture written', async () => {
    const backendPath = path.join(dir, 'backend.sock');
    const listen = path.join(dir, 'trace.sock');
    const capture = path.join(dir, 'trace.pcapng');
    backend = ReferenceBackend.listen(backendPath, { device: 'net' });
    const running = cli(['trace', '--listen', listen, '--connect', backendPath, '--format', 'json', '--pcapng', capture, '--once', '--device', 'net']);
    await until(() => existsSync(listen), 5000);
    const net = await VirtioNet.open(listen, { queueSize: 64, timeoutMs: 2000, connect: { timeoutMs: 5000 } });
    try {
      expect(await loopFrames(net, 10)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    } finally {
      net.close();
    }
    const r = await running;
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/stopped \(the first connection ended\) after 1 connection\(s\), \d+ packets in /);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).to.include({ kind: 'message', from: 'frontend', request: 'GET_FEATURES', fds: 0, connection: 1 });
    const mem = lines.find((l) => l.request === 'SET_MEM_TABLE' && l.from === 'frontend');
    expect(mem).to.include({ fds: 1, needReply: true });
    expect(lines.find((l) => l.request === 'GET_FEATURES' && l.from === 'backend')!.text).to.include('VIRTIO_NET_F_MAC');
    expect(lines.filter((l) => l.request === 'SET_VRING_KICK' && l.from === 'frontend').map((l) => l.fds)).to.deep.equal([1, 1]);
    expect(lines.at(-1)).to.include({ kind: 'close', closedBy: 'frontend', connection: 1 });
    const { epbs } = parsePcapng(readFileSync(capture));
    expect(epbs).to.have.length(lines.length);
    expect(epbs.map((e) => e.comment)).to.deep.equal(lines.map((l) => l.text));
  });

  it('text to --output until SIGTERM: the lines are flushed and the open connection is recorded as closed by the proxy', async () => {
    const backendPath = path.join(dir, 'backend.sock');
    const listen = path.join(dir, 'trace.sock');
    const output = path.join(dir, 'trace.txt');
    backend = ReferenceBackend.listen(backendPath, { device: 'net' });
    const child = spawn(process.execPath, [MAIN, 'trace', '--listen', listen, '--connect', backendPath, '--output', output], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    try {
      await until(() => existsSync(listen), 5000);
      const client = await VhostUserClient.connect(listen, { timeoutMs: 2000, connect: { timeoutMs: 5000 } });
      try {
        await client.getFeatures();
        await client.setVringNum(0, 256);
        child.kill('SIGTERM');
        expect(await exited).to.equal(0);
      } finally {
        client.close();
      }
    } finally {
      clearTimeout(killer);
    }
    expect(stdout).to.equal('');
    const lines = readFileSync(output, 'utf8').trimEnd().split('\n');
    expect(lines.map((l) => l.replace(/^ +\d+\.\d{3} {2}/, ''))).to.deep.equal([
      '#1   F->B              fds=0  GET_FEATURES',
      `#1   F<-B  REPLY       fds=0  ${lines[1]!.slice(lines[1]!.indexOf('GET_FEATURES'))}`,
      '#1   F->B              fds=0  SET_VRING_NUM {index: 0, num: 256}',
      '#1   ----  proxy closed the connection after SET_VRING_NUM from the frontend',
    ]);
    expect(lines[1]).to.match(/GET_FEATURES 0x[0-9a-f]{16} \(.*VHOST_USER_F_PROTOCOL_FEATURES/);
  });
});
