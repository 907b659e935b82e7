/**
 * One-shot back-ends (serve one front-end, exit with code 0 when it leaves) are
 * judged by what they do, not by their design: detected, started again for every
 * check and wherever a check needs a new front-end, with a non-zero exit still a
 * crash. The back-end is the reference back-end made one-shot (one-shot-backend.ts),
 * started by the suite as a child process and always stopped.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { runConformance } from '../../lib/conformance/index.js';
import { liveBackends } from '../../lib/launch/index.js';

const ONE_SHOT = fileURLToPath(new URL('./one-shot-backend.js', import.meta.url));

describe('conformance with a one-shot back-end', function () {
  this.timeout(60_000);
  let dir: string;
  let socket: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vhost-one-shot-test-'));
    socket = path.join(dir, 'net.sock');
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    expect(liveBackends(), 'back-end processes left running').to.deep.equal([]);
  });

  it('is detected; checks that need a new front-end pass; clean exits are not crashes', async () => {
    const only = 'handshake.version,reconnect,negative.request-code,negative.vring-num-zero,data.net-frames-intact';
    const report = await runConformance({ socket, device: 'net', spawn: `${process.execPath} ${ONE_SHOT} ${socket}`, only, timeoutMs: 1000 });
    expect(report.backend.oneShot).to.equal(true);
    expect(report.checks.map((c) => `${c.id} ${c.status}${c.crash ? ` ${c.crash}` : ''}`)).to.deep.equal([
      'handshake.version-1 pass',
      'data.net-frames-intact pass',
      'reconnect.mid-handshake pass',
      'reconnect.with-rings-running pass',
      'negative.request-code-0 pass',
      'negative.request-code-unknown pass',
      'negative.vring-num-zero pass',
    ]);
    // The reference back-end refuses by closing; the one-shot wrapper then exits 0 and is started again.
    for (const c of report.checks.filter((x) => x.id.startsWith('negative.'))) {
      expect(c.detail, c.id).to.equal('refused: the back-end closed the connection; a fresh connection was served');
    }
    expect(report.checks.find((c) => c.id === 'reconnect.with-rings-running')!.detail).to.equal('work completed on both connections');
    expect(report.backend.crashes).to.equal(0);
  });

  it('an exit with a non-zero code is a crash of the check that caused it, with the verdict and the output', async () => {
    const spawn = `${process.execPath} ${ONE_SHOT} ${socket} --panic`;
    const report = await runConformance({ socket, device: 'net', spawn, only: 'negative.request-code-unknown,handshake.get-features', timeoutMs: 1000 });
    expect(report.backend.oneShot).to.equal(true);
    const [features, unknown] = report.checks;
    expect(features).to.include({ id: 'handshake.get-features', status: 'pass' });
    expect(unknown).to.include({ id: 'negative.request-code-unknown', status: 'fail', crash: 'exit 1' });
    expect(unknown!.detail).to.match(
      /^the back-end \(pid \d+\) exited with code 1 during the check \(refused: the back-end closed the connection; then it exited with code 1 once its front-end had left\); its output meanwhile: .*panic: /,
    );
    expect(report.backend.crashes).to.equal(1);
  });

  it('a back-end that keeps serving is not taken for one-shot', async () => {
    const serve = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
    const report = await runConformance({ socket, device: 'net', spawn: `${process.execPath} ${serve} serve --socket ${socket} --device net`, only: 'reconnect.mid-handshake,handshake.version' });
    expect(report.backend).to.include({ oneShot: false, crashes: 0, restarts: 0 });
    expect(report.summary).to.deep.equal({ pass: 2, fail: 0, skip: 0 });
  });
});
