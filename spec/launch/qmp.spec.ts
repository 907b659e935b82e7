/**
 * The QMP client against a scripted QMP server on a real Unix socket: greeting and
 * capabilities, answers matched by id, events, QEMU's errors, a server that never
 * answers or hangs up. No QEMU needed.
 */
import net from 'node:net';
import path from 'node:path';
import { rm } from 'node:fs/promises';
import { expect } from 'chai';
import { makeTempDir, QmpClient, QmpError } from '../../lib/launch/index.js';
import { isVhostUserError } from '../../lib/errors.js';
import { rejectionOf } from './helpers.js';

type Reply = (cmd: { execute: string; id: number; arguments?: unknown }, sock: net.Socket) => void;

/** A QMP server answering each command with `reply` (default: `{return: {}}`). */
async function fakeQmp(reply: Reply = (c, s) => s.write(`${JSON.stringify({ return: {}, id: c.id })}\n`), greet = true) {
  const dir = await makeTempDir('vhost-qmp-');
  const socketPath = path.join(dir, 'qmp.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    if (greet) s.write(`${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } })}\n`);
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        reply(JSON.parse(line) as { execute: string; id: number }, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    socketPath,
    sockets,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

describe('launch/qmp', () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  it('negotiates capabilities, matches answers by id, keeps and awaits events', async () => {
    const srv = await fakeQmp((c, s) => {
      if (c.execute === 'query-status') {
        // An event between command and answer, as QEMU may send one.
        s.write(`${JSON.stringify({ event: 'RESUME', data: {}, timestamp: { seconds: 1, microseconds: 2 } })}\n`);
        s.write(`${JSON.stringify({ return: { status: 'running', running: true }, id: c.id })}\n`);
      } else s.write(`${JSON.stringify({ return: {}, id: c.id })}\n`);
    });
    cleanup.push(() => srv.close());
    const qmp = await QmpClient.connect(srv.socketPath);
    cleanup.push(() => qmp.close());
    expect(qmp.greeting).to.have.nested.property('version.qemu.major', 7);
    expect(await qmp.execute('query-status')).to.deep.equal({ status: 'running', running: true });
    const e = await qmp.waitEvent('RESUME', 1000);
    expect(e.timestamp).to.deep.equal({ seconds: 1, microseconds: 2 });
    expect(qmp.events().map((x) => x.event)).to.deep.equal(['RESUME']);
  });

  it("QEMU's error is a QmpError with its class; no answer is VHOST_TIMEOUT; a hang-up is VHOST_DISCONNECTED", async () => {
    const srv = await fakeQmp((c, s) => {
      if (c.execute === 'qmp_capabilities') s.write(`${JSON.stringify({ return: {}, id: c.id })}\n`);
      else if (c.execute === 'bad') s.write(`${JSON.stringify({ error: { class: 'GenericError', desc: 'no' }, id: c.id })}\n`);
      else if (c.execute === 'bye') s.destroy();
      // 'silent': never answered
    });
    cleanup.push(() => srv.close());
    const qmp = await QmpClient.connect(srv.socketPath);
    cleanup.push(() => qmp.close());
    const bad = await rejectionOf(qmp.execute('bad'));
    expect(bad).to.be.instanceOf(QmpError);
    expect(bad).to.include({ code: 'VHOST_QMP_ERROR', errorClass: 'GenericError', desc: 'no', command: 'bad' });
    const silent = await rejectionOf(qmp.execute('silent', undefined, 100));
    expect(isVhostUserError(silent, 'VHOST_TIMEOUT'), String(silent)).to.equal(true);
    const pending = qmp.waitEvent('NEVER', 5000);
    const bye = await rejectionOf(qmp.execute('bye'));
    expect(isVhostUserError(bye, 'VHOST_DISCONNECTED'), String(bye)).to.equal(true);
    expect(isVhostUserError(await rejectionOf(pending), 'VHOST_DISCONNECTED')).to.equal(true);
    expect(qmp.connected).to.equal(false);
    expect(isVhostUserError(await rejectionOf(qmp.execute('after')), 'VHOST_DISCONNECTED')).to.equal(true);
  });

  it('a server that never greets fails connect() with VHOST_CONNECT_TIMEOUT; no server with VHOST_CONNECT_FAILED', async () => {
    const srv = await fakeQmp(undefined, false);
    cleanup.push(() => srv.close());
    const silent = await rejectionOf(QmpClient.connect(srv.socketPath, { timeoutMs: 150 }));
    expect(isVhostUserError(silent, 'VHOST_CONNECT_TIMEOUT'), String(silent)).to.equal(true);
    const none = await rejectionOf(QmpClient.connect(path.join(path.dirname(srv.socketPath), 'absent.sock')));
    expect(isVhostUserError(none, 'VHOST_CONNECT_FAILED'), String(none)).to.equal(true);
  });
});
