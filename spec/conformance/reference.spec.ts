/**
 * The conformance suite against the reference back-end, in this process: it must
 * pass every check that applies (skipping only for features the reference
 * back-end does not offer), leak nothing, and turn injected faults into failed
 * checks with evidence, within bounded time.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { allChecks, appliesTo, runConformance, type CheckResult, type ConformanceReport } from '../../lib/conformance/index.js';
import type { Fault } from '../../lib/backend/faults.js';
import { leakedAfter, resourceSnapshot, settle, timerCount } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

/** Checks the reference back-end cannot take part in: it does not offer these protocol features. */
const REFERENCE_SKIPS = {
  net: ['reply-ack.SET_BACKEND_REQ_FD', 'inflight.get-inflight-fd', 'negative.inband-without-deps', 'leak.get-inflight-fd'],
  // The blk device offers INFLIGHT_SHMFD (lib/backend/inflight-area.ts): its inflight and leak checks run and pass.
  blk: ['reply-ack.SET_BACKEND_REQ_FD', 'negative.inband-without-deps'],
} as const;

async function withReference<T>(device: 'net' | 'blk', faults: Fault[], run: (path: string) => Promise<T>): Promise<T> {
  const tmp = tempSocketPath();
  const backend = ReferenceBackend.listen(tmp.path, { device, faults, ...(device === 'blk' ? { blkSize: 1 << 20 } : {}) });
  try {
    return await run(tmp.path);
  } finally {
    backend.close();
    tmp.cleanup();
  }
}

function byStatus(report: ConformanceReport, status: CheckResult['status']): string[] {
  return report.checks.filter((c) => c.status === status).map((c) => c.id);
}

describe('conformance suite against the reference back-end', function () {
  this.timeout(60_000);

  for (const device of ['net', 'blk'] as const) {
    it(`${device}: runs every applicable check and passes all of them, leaking nothing`, async () => {
      await settle(1); // mocha's own timeout timer exists from here on
      const before = resourceSnapshot();
      const timers = timerCount();
      const seen: string[] = [];
      const report = await withReference(device, [], (socket) =>
        runConformance({ socket, device, backendPid: process.pid, onResult: (r) => seen.push(r.id) }),
      );
      const leaked = await leakedAfter(before);
      const expected = allChecks.filter((c) => appliesTo(c, device)).map((c) => c.id);
      expect(report.checks.map((c) => c.id)).to.deep.equal(expected);
      expect(seen).to.deep.equal(expected, 'onResult saw each check once, in order');
      const failed = report.checks.filter((c) => c.status === 'fail');
      expect(failed.map((c) => `${c.id}: ${c.detail}\n${c.evidence.join('\n')}`)).to.deep.equal([]);
      expect(byStatus(report, 'skip')).to.deep.equal(REFERENCE_SKIPS[device]);
      for (const s of report.checks.filter((c) => c.status === 'skip')) expect(s.detail).to.match(/not offered/);
      expect(report.summary).to.deep.equal({ pass: expected.length - REFERENCE_SKIPS[device].length, fail: 0, skip: REFERENCE_SKIPS[device].length });
      for (const c of report.checks) expect(c.rule, c.id).to.match(/^(vhost-user\.rst|virtio 1\.2), '[^']+'/);
      expect(leaked).to.deep.equal({ fds: 0, maps: 0 });
      expect(timerCount(), 'timers left running').to.be.at.most(timers);
    });
  }

  it('--only selects by prefix and by wildcard', async () => {
    const report = await withReference('net', [], (socket) => runConformance({ socket, device: 'net', only: 'handshake.version,negative.mem-table-*' }));
    expect(report.checks.map((c) => c.id)).to.deep.equal([
      'handshake.version-1',
      ...allChecks.filter((c) => c.id.startsWith('negative.mem-table-')).map((c) => c.id),
    ]);
    expect(report.summary.fail).to.equal(0);
  });

  it('a back-end that refuses SET_VRING_ENABLE fails the checks that need it, with the messages as evidence', async () => {
    const faults: Fault[] = [{ name: 'nak', request: 'SET_VRING_ENABLE', repeat: true }];
    const report = await withReference('net', faults, (socket) => runConformance({ socket, device: 'net', only: 'reply-ack.SET_VRING,rings.disable' }));
    const enable = report.checks.find((c) => c.id === 'reply-ack.SET_VRING_ENABLE')!;
    expect(enable.status).to.equal('fail');
    expect(enable.detail).to.match(/^VHOST_NACK \[SET_VRING_ENABLE\]/);
    expect(enable.evidence.at(-2)).to.match(/^> SET_VRING_ENABLE flags=0x9 size=8 \{index=0 num=1\}$/);
    expect(enable.evidence.at(-1)).to.match(/^< SET_VRING_ENABLE flags=0x5 size=8 0x1$/);
    expect(report.checks.find((c) => c.id === 'rings.disable-stops-rx')!.status).to.equal('fail');
    // Checks before SET_VRING_ENABLE in the chain are unaffected.
    for (const id of ['reply-ack.SET_VRING_NUM', 'reply-ack.SET_VRING_BASE', 'reply-ack.SET_VRING_ADDR', 'reply-ack.SET_VRING_KICK', 'reply-ack.SET_VRING_CALL', 'reply-ack.SET_VRING_ERR']) {
      expect(report.checks.find((c) => c.id === id)!.status, id).to.equal('pass');
    }
  });

  it('a back-end that never answers is a fail with a reason per check, in bounded time', async () => {
    const faults: Fault[] = [{ name: 'no-reply', repeat: true }];
    await settle(1);
    const before = resourceSnapshot();
    const timers = timerCount();
    const t0 = Date.now();
    const report = await withReference('net', faults, (socket) =>
      runConformance({ socket, device: 'net', only: 'handshake,rings.vring-base-after-traffic', timeoutMs: 200, checkTimeoutMs: 1500 }),
    );
    expect(report.checks).to.have.length(7);
    expect(report.summary.pass).to.equal(0);
    for (const c of report.checks) expect(c.detail, c.id).to.match(/within 200 ms|VHOST_TIMEOUT|no outcome within/);
    expect(Date.now() - t0).to.be.below(7 * 1500);
    // A check cut off by its own deadline (replies may take 5 s, the check only 300 ms) unwinds too.
    const t1 = Date.now();
    const cut = await withReference('net', faults, (socket) => runConformance({ socket, device: 'net', only: 'handshake.get-features,handshake.queue-num', timeoutMs: 5000, checkTimeoutMs: 300 }));
    expect(cut.checks.map((c) => c.detail)).to.deep.equal(Array(2).fill('no outcome within 300 ms: the back-end stopped answering or doing the work'));
    expect(Date.now() - t1).to.be.below(2000);
    // Nothing is left behind either way.
    expect(await leakedAfter(before)).to.deep.equal({ fds: 0, maps: 0 });
    expect(timerCount(), 'timers left running').to.be.at.most(timers);
  });
});
