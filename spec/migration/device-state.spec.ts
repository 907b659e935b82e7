/**
 * DEVICE_STATE (vhost-user.rst, "Migrating back-end state") between two reference
 * back-ends: the state goes through a real pipe (SET_DEVICE_STATE_FD, save on one,
 * load on the other, CHECK_DEVICE_STATE on both), and a stream that was cut short
 * or changed in transit is refused by CHECK_DEVICE_STATE.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../lib/backend/reference-backend.js';
import { VhostUserClient } from '../../lib/client/vhost-user-client.js';
import { loadDeviceState, saveDeviceState } from '../../lib/migration/device-state.js';
import { ProtocolFeature } from '../../lib/protocol/constants.js';
import { leakedAfter, resourceSnapshot } from '../helpers/resources.js';
import { tempSocketPath } from '../helpers/socket-pair.js';

describe('DEVICE_STATE: SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE with the reference back-end', function () {
  this.timeout(10_000);
  let snap: ReturnType<typeof resourceSnapshot>;
  const cleanups: (() => unknown)[] = [];
  beforeEach(() => {
    snap = resourceSnapshot();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await leakedAfter(snap)).to.deep.equal({ fds: 0, maps: 0 });
  });

  async function open(device: 'net' | 'blk'): Promise<{ backend: ReferenceBackend; client: VhostUserClient }> {
    const t = tempSocketPath();
    const backend = ReferenceBackend.listen(t.path, { device });
    cleanups.push(() => t.cleanup(), () => backend.close());
    const client = await VhostUserClient.connect(t.path);
    cleanups.push(() => client.close());
    await client.negotiate();
    expect(client.hasProtocolFeature(ProtocolFeature.DEVICE_STATE)).to.equal(true);
    return { backend, client };
  }

  it('net: the loopback counters saved on A are loaded on B', async () => {
    const a = await open('net');
    const b = await open('net');
    const counters = { frames: 1234, bytes: 98765, txErrors: 2, rxTooSmall: 1, offloadDrops: 3, checksummed: 4, segmented: 5 };
    Object.assign(a.backend.net, counters);
    const state = await saveDeviceState(a.client);
    expect(state.length, 'stream header, MAC slot, one f64 per counter').to.equal(20 + 8 + 7 * 8);
    await loadDeviceState(b.client, state);
    expect(b.backend.net).to.deep.equal(counters);
  });

  it('blk: counters carried; a disk of another size refuses the state', async () => {
    const a = await open('blk');
    const b = await open('blk');
    a.backend.blk.writes = 77;
    const state = await saveDeviceState(a.client);
    await loadDeviceState(b.client, state);
    expect(b.backend.blk.writes).to.equal(77);
    const t = tempSocketPath();
    const other = ReferenceBackend.listen(t.path, { device: 'blk', blkSize: 1024 * 1024 });
    cleanups.push(() => t.cleanup(), () => other.close());
    const c = await VhostUserClient.connect(t.path);
    cleanups.push(() => c.close());
    await c.negotiate();
    const err = await loadDeviceState(c, state).catch((e: unknown) => e);
    expect(err).to.have.property('code', 'VHOST_BACKEND_FAILED');
  });

  for (const [what, spoil] of [
    ['truncated', (s: Uint8Array) => s.subarray(0, s.length - 5)],
    ['corrupt (one byte changed)', (s: Uint8Array) => Uint8Array.from(s, (x, i) => (i === 20 ? x ^ 0x40 : x))],
    ['of another device (blk state into net)', (s: Uint8Array) => s],
  ] as const) {
    it(`a stream ${what} makes CHECK_DEVICE_STATE fail (VHOST_BACKEND_FAILED) and changes nothing`, async () => {
      const a = await open(what.startsWith('of another') ? 'blk' : 'net');
      const b = await open('net');
      a.backend.net.frames = 5;
      const state = spoil(await saveDeviceState(a.client));
      const err = await loadDeviceState(b.client, state).catch((e: unknown) => e);
      expect(err).to.have.property('code', 'VHOST_BACKEND_FAILED');
      expect((err as Error).message).to.match(/CHECK_DEVICE_STATE/);
      expect(b.backend.net.frames).to.equal(0);
      // The connection is still usable: a good state loads afterwards.
      await loadDeviceState(b.client, await saveDeviceState(b.client));
    });
  }
});
