import { existsSync } from 'node:fs';
import { expect } from 'chai';
import { VirtioNet } from '../../lib/devices/net/virtio-net.js';
import { dpdkRuntimeDir, liveBackends } from '../../lib/launch/index.js';
import { ovsDpdkInstalled, parseOfctlPortStats, parseOvsMap, startOvs } from '../../lib/launch/ovs.js';
import { UnixListener } from '../../lib/transport/unix-listener.js';
import { expectGone, expectRemoved, processesMentioning } from './helpers.js';

describe('launch/ovs parsers', () => {
  it('parseOvsMap reads an ovs-vsctl map column', () => {
    expect(parseOvsMap('{ovs_rx_qos_drops=0, ovs_tx_failure_drops=480, "rx_packets"=12}')).to.deep.equal({
      ovs_rx_qos_drops: 0,
      ovs_tx_failure_drops: 480,
      rx_packets: 12,
    });
  });

  it('parseOfctlPortStats reads OpenFlow 1.4 port stats: "?" counters are absent, custom statistics by name', () => {
    const text = [
      'OFPST_PORT reply (OF1.4) (xid=0x2): 1 ports',
      '  port  2: rx pkts=?, bytes=?, drop=?, errs=?, frame=?, over=?, crc=?',
      '           tx pkts=7, bytes=448, drop=3, errs=0, coll=?',
      '           duration=4.038s',
      '           CUSTOM Statistics',
      '                      ovs_tx_retries=1, ovs_tx_failure_drops=66272, ovs_tx_mtu_exceeded_drops=2,',
    ].join('\n');
    expect(parseOfctlPortStats(text)).to.deep.equal({
      tx_packets: 7,
      tx_bytes: 448,
      tx_dropped: 3,
      tx_errors: 0,
      ovs_tx_retries: 1,
      ovs_tx_failure_drops: 66272,
      ovs_tx_mtu_exceeded_drops: 2,
    });
  });
});

describe('launch/ovs @integration', function () {
  this.timeout(60_000);

  before(function () {
    if (!ovsDpdkInstalled()) {
      process.stdout.write('      skipped: OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)\n');
      this.skip();
    }
  });

  it('starts both daemons privately, serves both port kinds, restarts ovs-vswitchd, and stop() leaves nothing behind', async () => {
    const ovs = await startOvs({ bridge: 'brt', ports: [{ name: 'u0', ofport: 7, tag: 5 }, { name: 'c0', kind: 'dpdkvhostuserclient' }] });
    const pids = [ovs.ovsdbPid, ovs.vswitchdPid];
    let listener: UnixListener | undefined;
    const nets: VirtioNet[] = [];
    try {
      expect(ovs.port('u0')).to.include({ kind: 'dpdkvhostuser', ofport: 7, tag: 5 });
      expect(ovs.port('c0').tag).to.equal(null);
      expect(await ovs.vsctl('get', 'Open_vSwitch', '.', 'other_config:pmd-maxsleep')).to.equal('"10000"');
      expect(await ovs.vsctl('get', 'Bridge', 'brt', 'datapath_type')).to.equal('netdev');
      expect(existsSync(dpdkRuntimeDir(ovs.filePrefix)), 'DPDK runtime dir').to.equal(true);
      nets.push(await VirtioNet.open(ovs.socketPath('u0'), { reconnect: { timeoutMs: 20_000 } }));
      listener = UnixListener.listen(ovs.socketPath('c0'));
      nets.push(await VirtioNet.accept(listener, { acceptTimeoutMs: 10_000, reconnect: { timeoutMs: 20_000 } }));
      await ovs.waitLink('u0');
      await ovs.waitLink('c0');
      await ovs.addFlow('priority=5,in_port=7,actions=drop');
      const oldVswitchd = ovs.vswitchdPid;
      await ovs.restartVswitchd();
      expect(ovs.vswitchdPid).to.not.equal(oldVswitchd);
      expectGone(oldVswitchd);
      pids.push(ovs.vswitchdPid);
      expect(await ovs.dumpFlows()).to.match(/priority=5,in_port=7 actions=drop/);
      await ovs.waitLink('u0');
      await ovs.waitLink('c0', 'up', 5000).catch(async (e: Error) => {
        throw new Error(`${e.message}; reconnects ${nets.map((n) => n.reconnects).join(',')}\n${await ovs.logs(30)}`);
      });
      expect(nets.map((n) => n.reconnects)).to.deep.equal([1, 1]);
      expect((await ovs.portStats('c0')).txFailureDrops).to.equal(0);
      // The logs of the running ovs-vswitchd (the second), for failure messages.
      expect(await ovs.logs()).to.match(/--- ovs-vswitchd\.1\.log\n\S+\|\d+\|/);
    } finally {
      for (const n of nets) n.close();
      listener?.close();
      await ovs.stop();
    }
    for (const pid of pids) expectGone(pid);
    expectRemoved(ovs.tempDir);
    expectRemoved(dpdkRuntimeDir(ovs.filePrefix));
    expect(processesMentioning(ovs.tempDir)).to.deep.equal([]);
    expect(liveBackends()).to.deep.equal([]);
  });

  it('a bad port name is VHOST_INVALID_ARGUMENT, and a failed start quotes the logs and removes everything', async () => {
    const ovs = await startOvs();
    try {
      const e = await ovs.addPort({ name: 'this-name-is-too-long' }).then(() => null, (x: unknown) => x);
      expect(e).to.have.property('code', 'VHOST_INVALID_ARGUMENT');
    } finally {
      await ovs.stop();
    }
    // An lcore this machine does not have: EAL fails, and ovs-vswitchd with it.
    const failed = await startOvs({ lcoreMask: '0x80000000', readyTimeoutMs: 10_000 }).then(
      async (o) => {
        await o.stop();
        return null;
      },
      (x: unknown) => x as Error,
    );
    expect(failed, 'startOvs should have failed').to.not.equal(null);
    expect(failed).to.have.property('code').that.matches(/VHOST_SPAWN_/);
    expect(failed!.message).to.match(/dpdk|EAL|ovs-vswitchd/i);
    expect(liveBackends()).to.deep.equal([]);
  });
});
