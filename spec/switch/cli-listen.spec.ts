/**
 * The command line in server mode (`--listen PATH`) against OVS `dpdkvhostuserclient` ports,
 * which connect to the front-end (and reconnect about once a second after it leaves):
 * probe, net send → net recv across the bridge (both listening), and conformance.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { liveBackends, makeTempDir } from '../../lib/launch/backend-process.js';
import { ovsDpdkInstalled, startOvs, type OvsBackend } from '../../lib/launch/ovs.js';
import { framePayloadIntact, frameSequence } from '../../lib/net/frame-builder.js';
import { readPcapFrames } from '../../lib/pcap/pcap-reader.js';
import { cli } from '../helpers/cli.js';

describe('CLI --socket / --listen', () => {
  it('neither or both is a usage error (exit 2, one line), for every command that takes them', async () => {
    for (const cmd of [['probe'], ['net', 'send'], ['net', 'recv'], ['conformance']]) {
      const none = await cli(cmd);
      expect(none.status, cmd.join(' ')).to.equal(2);
      expect(none.stderr).to.match(/either --socket PATH \(the back-end listens\) or --listen PATH \(the back-end connects\)/);
      const both = await cli([...cmd, '--socket', '/nonexistent.sock', '--listen', '/tmp/nonexistent-listen.sock']);
      expect(both.status, cmd.join(' ')).to.equal(2);
    }
  });

  it('conformance --listen with --spawn is a usage error', async () => {
    const r = await cli(['conformance', '--listen', '/tmp/nonexistent-listen.sock', '--spawn', 'true']);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/--spawn needs --socket/);
  });
});

describe('switch: CLI --listen against OVS dpdkvhostuserclient ports @integration', function () {
  this.timeout(60_000);
  let ovs: OvsBackend | undefined;
  let dir = '';

  before(async function () {
    if (!ovsDpdkInstalled()) {
      process.stdout.write('      skipped: OVS-DPDK is not installed (apt-get install openvswitch-switch-dpdk)\n');
      this.skip();
    }
    dir = await makeTempDir('vhost-cli-listen-');
    ovs = await startOvs({ ports: [{ name: 'c0', kind: 'dpdkvhostuserclient' }, { name: 'c1', kind: 'dpdkvhostuserclient' }] });
  });

  after(async () => {
    await ovs?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    expect(liveBackends()).to.deep.equal([]);
  });

  it('probe --listen: OVS connects and its features are reported', async () => {
    const r = await cli(['probe', '--listen', ovs!.socketPath('c0'), '--device', 'net', '--json', '--timeout', '10000']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as { socket: string; featureNames: string[]; protocolFeatureNames: string[] };
    expect(report.socket).to.equal(ovs!.socketPath('c0'));
    expect(report.featureNames).to.include('VIRTIO_NET_F_MRG_RXBUF');
    expect(report.protocolFeatureNames).to.include('REPLY_ACK');
  });

  it('net send --listen → OVS → net recv --listen: every frame arrives intact, or OVS says it dropped it', async () => {
    const pcap = path.join(dir, 'listen.pcap');
    const recv = cli(['net', 'recv', '--listen', ovs!.socketPath('c1'), '--count', '2000', '--pcap', pcap, '--json', '--timeout', '10000', '--ovs-port', 'c1', '--ovs-rundir', ovs!.tempDir]);
    await ovs!.waitLink('c1');
    const send = await cli(['net', 'send', '--listen', ovs!.socketPath('c0'), '--count', '2000', '--size', '200', '--json', '--timeout', '10000']);
    expect(send.status, send.stderr).to.equal(0);
    const r = await recv;
    expect(r.status, r.stderr).to.equal(0);
    const summary = JSON.parse(r.stdout) as { frames: number; backendDropped: number };
    const frames = readPcapFrames(pcap);
    expect(frames.length).to.equal(summary.frames);
    expect(summary.frames + summary.backendDropped).to.equal(2000);
    let last = -1;
    frames.forEach((f, i) => {
      expect(f.length).to.equal(200);
      expect(frameSequence(f), `frame ${i}`).to.be.greaterThan(last);
      expect(framePayloadIntact(f), `frame ${i}`).to.equal(true);
      last = frameSequence(f)!;
    });
  });

  it('conformance --listen: the handshake checks run on connections OVS opens', async () => {
    const r = await cli(['conformance', '--listen', ovs!.socketPath('c0'), '--device', 'net', '--only', 'handshake', '--format', 'json'], 60_000);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as { backend: { socket: string }; checks: { id: string; status: string; detail: string }[] };
    expect(report.backend.socket).to.equal(ovs!.socketPath('c0'));
    expect(report.checks.length).to.be.greaterThan(3);
    const failed = report.checks.filter((c) => c.status === 'fail');
    expect(failed, JSON.stringify(failed, null, 1)).to.deep.equal([]);
    expect(report.checks.filter((c) => c.status === 'pass').length).to.be.greaterThan(0);
  });
});
