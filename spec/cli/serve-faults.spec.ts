/**
 * `vhost-user serve --fault` from the command line, against the CLI's own
 * front-end commands: each failure is one stderr line with the stable code,
 * within the --timeout given.
 */
import { expect } from 'chai';
import { startReferenceBackend, type ReferenceBackendProcess } from '../../lib/launch/reference-backend.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';

describe('cli serve --fault', function () {
  this.timeout(30_000);
  let backend: ReferenceBackendProcess | null = null;
  afterEach(async () => {
    await backend?.stop();
    backend = null;
  });

  it('no-reply@GET_QUEUE_NUM: probe fails with VHOST_TIMEOUT [GET_QUEUE_NUM] within its --timeout; serve reports the fault', async () => {
    backend = await startReferenceBackend({ faults: [{ name: 'no-reply', request: 'GET_QUEUE_NUM' }] });
    const r = await cli(['probe', '--socket', backend.socketPath, '--timeout', '400']);
    expect(r.status).to.equal(1);
    expectOneErrorLine(r, 'VHOST_TIMEOUT');
    expect(r.stderr).to.include('[GET_QUEUE_NUM]');
    expect(r.ms).to.be.below(3000);
    expect(backend.events().find((e) => e.event === 'fault')).to.deep.include({ connection: 1, fault: 'no-reply@GET_QUEUE_NUM' });
    // The fault fired once: the next probe is served.
    const again = await cli(['probe', '--socket', backend.socketPath, '--json']);
    expect(again.status, again.stderr).to.equal(0);
    expect(JSON.parse(again.stdout)).to.have.property('queueNum', 8);
  });

  it('stop-ring@1: net send fails with VHOST_TIMEOUT once the back-end consumes nothing for --timeout', async () => {
    backend = await startReferenceBackend({ faults: [{ name: 'stop-ring', ring: 1 }] });
    const r = await cli(['net', 'send', '--socket', backend.socketPath, '--count', '100', '--timeout', '500']);
    expect(r.status).to.equal(1);
    expectOneErrorLine(r, 'VHOST_TIMEOUT');
    expect(r.stderr).to.match(/left 100 frames unconsumed|consumed nothing/);
    expect(r.ms).to.be.below(5000);
  });

  it('used-idx-jump@1: net send fails with VHOST_RING_IDX_JUMP naming the ring', async () => {
    backend = await startReferenceBackend({ faults: [{ name: 'used-idx-jump', ring: 1 }] });
    const r = await cli(['net', 'send', '--socket', backend.socketPath, '--count', '10', '--timeout', '2000']);
    expect(r.status).to.equal(1);
    expectOneErrorLine(r, 'VHOST_RING_IDX_JUMP');
    expect(r.stderr).to.include('vring 1:');
  });

  it('rejects an unknown fault with a usage error (exit 2)', async () => {
    const r = await cli(['serve', '--socket', '/tmp/never.sock', '--fault', 'explode']);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/unknown fault 'explode'/);
  });
});
