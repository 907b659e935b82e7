import { expect } from 'chai';
import { isUsageError } from '../../lib/cli/args.js';
import { backendCounters, backendOptions, parseForwardStats, ringFullPercent } from '../../scripts/bench/cell.js';
import { foreignCpuPercent, parseProcStat, parsePidStat, stealPercent, type CpuSnapshot } from '../../scripts/bench/cpu.js';
import { offloadCommands, offloadFrame, virtioUserTestpmdArgs } from '../../scripts/bench/dpdk-frontend.js';
import { renderCommand } from '../../scripts/bench/frontend.js';
import { benchHelp, parseBenchArgs } from '../../scripts/bench/options.js';
import { WORKER_PATH, workerArgs } from '../../scripts/bench/ours.js';
import { gbpsOf, median, midpoint, rateBetween, ratioOf, spread } from '../../scripts/bench/rate.js';
import {
  alignColumns,
  exitCodeOf,
  failedRuns,
  formatTable,
  GBPS_BASIS,
  SOURCES,
  summarize,
  toJson,
  type BenchMeta,
  type CellOutcome,
  type RunResult,
} from '../../scripts/bench/report.js';
import { decodeMessage, encodeMessage } from '../../scripts/bench/worker-protocol.js';

function usageMessage(argv: string[]): string {
  try {
    parseBenchArgs(argv);
  } catch (e) {
    expect(isUsageError(e), String(e)).to.equal(true);
    return (e as Error).message;
  }
  return expect.fail(`no usage error for ${argv.join(' ')}`);
}

function run(mpps: number, frameSize: number, extra: Partial<RunResult> = {}): RunResult {
  return {
    mpps,
    gbps: gbpsOf(mpps, frameSize),
    packets: Math.round(mpps * 5e6),
    bytes: Math.round(mpps * 5e6) * frameSize,
    elapsedMs: 5000,
    bytesPerPacket: frameSize,
    senderRingFullPct: 0.5,
    frontendMpps: mpps,
    readUncertaintyMs: 0.5,
    foreignCpuPct: 1,
    ...extra,
  };
}

const META: BenchMeta = {
  durationMs: 5000,
  warmupMs: 1000,
  repeat: 1,
  queueSize: 1024,
  burst: 32,
  cores: { frontend: 0, backend: 1 },
  gbpsBasis: GBPS_BASIS,
  source: SOURCES,
};

describe('scripts/bench options', () => {
  it('has the documented defaults', () => {
    expect(parseBenchArgs([])).to.deep.equal({
      durationMs: 5000,
      warmupMs: 1000,
      sizes: [64, 1500],
      directions: ['tx', 'rx'],
      frontends: ['dpdk', 'ours'],
      repeat: 1,
      queueSize: 1024,
      burst: 32,
      frontendCore: 0,
      backendCore: 1,
      maxForeignPct: 10,
      retries: 2,
      txMode: 'copy',
      ringStats: false,
      offload: null,
      json: false,
    });
  });

  it('--offload: tx cells only; tso measures 65 400-byte frames whatever --sizes says', () => {
    expect(parseBenchArgs(['--offload', 'tso'])).to.deep.include({ offload: 'tso', sizes: [65400], directions: ['tx'] });
    expect(parseBenchArgs(['--offload', 'csum', '--sizes', '64'])).to.deep.include({ offload: 'csum', sizes: [64], directions: ['tx'] });
    expect(() => parseBenchArgs(['--offload', 'tso', '--directions', 'rx'])).to.throw(/tx cells only/);
    expect(() => parseBenchArgs(['--offload', 'gro'])).to.throw();
  });

  it('parses lists, --only, --json and both option forms', () => {
    const o = parseBenchArgs(['--duration=2000', '--warmup', '0', '--sizes', '1500, 64,64', '--directions=rx', '--only', 'dpdk', '--json', '--cores', '1,0']);
    expect(o).to.include({ durationMs: 2000, warmupMs: 0, json: true, frontendCore: 1, backendCore: 0 });
    expect(o!.sizes).to.deep.equal([1500, 64]);
    expect(o!.directions).to.deep.equal(['rx']);
    expect(o!.frontends).to.deep.equal(['dpdk']);
  });

  it('returns undefined for --help and -h, and the help lists every option', () => {
    expect(parseBenchArgs(['--sizes', 'bogus', '--help'])).to.equal(undefined);
    expect(parseBenchArgs(['-h'])).to.equal(undefined);
    const help = benchHelp();
    for (const flag of ['--duration MS', '--warmup MS', '--sizes LIST', '--directions LIST', '--only dpdk|ours', '--json', '--help']) {
      expect(help).to.contain(flag);
    }
    expect(help).to.contain('npm run bench:net');
  });

  it('rejects bad input with one usage line that points at this script', () => {
    expect(usageMessage(['--sizes', '64,abc'])).to.match(/^bench:net: --sizes needs non-negative integers, got 'abc' \(see 'npm run bench:net -- --help'\)$/);
    expect(usageMessage(['--sizes', '9000'])).to.contain('outside 60..1514');
    expect(usageMessage(['--sizes', '64,'])).to.contain('comma-separated list');
    expect(usageMessage(['--directions', 'tx,up'])).to.contain("tx and/or rx, got 'up'");
    expect(usageMessage(['--only', 'qemu'])).to.contain('must be one of dpdk, ours');
    expect(usageMessage(['--cores', '1,1'])).to.contain('different CPUs');
    expect(usageMessage(['--cores', '0'])).to.contain('two CPUs');
    expect(usageMessage(['--queue-size', '1000'])).to.contain('power of two');
    expect(usageMessage(['--duration', '10'])).to.contain('at least 100');
    const unknown = usageMessage(['--frobnicate']);
    expect(unknown).to.contain('unknown option --frobnicate');
    expect(unknown).not.to.contain('vhost-user --help');
  });
});

describe('scripts/bench rate math', () => {
  it('computes Mpps and L2 Gbit/s from two samples with hrtime', () => {
    const r = rateBetween({ tNs: 1_000_000_000n, packets: 100, bytes: 6400 }, { tNs: 3_000_000_000n, packets: 40_000_100, bytes: 6400 + 40_000_000 * 64 }, 64);
    expect(r.packets).to.equal(40_000_000);
    expect(r.elapsedMs).to.equal(2000);
    expect(r.mpps).to.equal(20);
    expect(r.gbps).to.be.closeTo(10.24, 1e-9);
    expect(r.bytesPerPacket).to.equal(64);
  });

  it('Gbit/s is frames only: Mpps x size x 8 / 1000, no 20-byte preamble/IFG', () => {
    expect(gbpsOf(4.4, 1500)).to.be.closeTo(52.8, 1e-9);
    expect(gbpsOf(1, 64)).to.be.closeTo(0.512, 1e-12);
  });

  it('rejects samples out of order and counters that went backwards', () => {
    expect(() => rateBetween({ tNs: 5n, packets: 0, bytes: 0 }, { tNs: 5n, packets: 1, bytes: 64 }, 64)).to.throw(RangeError, /time order/);
    expect(() => rateBetween({ tNs: 1n, packets: 10, bytes: 640 }, { tNs: 2n, packets: 0, bytes: 0 }, 64)).to.throw(RangeError, /backwards/);
  });

  it('reports no bytes per packet for an empty window', () => {
    const r = rateBetween({ tNs: 0n, packets: 7, bytes: 7 }, { tNs: 1_000_000n, packets: 7, bytes: 7 }, 64);
    expect(r.mpps).to.equal(0);
    expect(r.bytesPerPacket).to.equal(null);
  });

  it('ratio, median, spread, midpoint', () => {
    expect(ratioOf(10, 20)).to.equal(0.5);
    expect(ratioOf(null, 20)).to.equal(null);
    expect(ratioOf(10, null)).to.equal(null);
    expect(ratioOf(10, 0)).to.equal(null);
    expect(median([])).to.equal(null);
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(spread([10])).to.equal(null);
    expect(spread([9, 10, 11])).to.be.closeTo(0.2, 1e-12);
    expect(midpoint(10n, 20n)).to.equal(15n);
  });
});

describe('scripts/bench report', () => {
  const opts = { directions: ['tx', 'rx'] as const, sizes: [64, 1500], frontends: ['dpdk', 'ours'] as const };
  const outcomes: CellOutcome[] = [
    { direction: 'tx', frameSize: 64, frontend: 'dpdk', runs: [run(20, 64)] },
    { direction: 'tx', frameSize: 64, frontend: 'ours', runs: [run(5, 64)] },
    { direction: 'tx', frameSize: 1500, frontend: 'dpdk', runs: [run(4, 1500), run(4.4, 1500), run(4.2, 1500)] },
    { direction: 'tx', frameSize: 1500, frontend: 'ours', runs: [], error: 'driver not available: no file' },
    { direction: 'rx', frameSize: 64, frontend: 'dpdk', runs: [run(16, 64, { foreignCpuPct: 55 })] },
    { direction: 'rx', frameSize: 64, frontend: 'ours', runs: [run(8, 64)] },
    { direction: 'rx', frameSize: 1500, frontend: 'dpdk', runs: [run(8, 1500, { bytesPerPacket: 1486 })] },
    { direction: 'rx', frameSize: 1500, frontend: 'ours', runs: [run(6, 1500)] },
  ];
  const cases = summarize(outcomes, { ...opts, directions: [...opts.directions], frontends: [...opts.frontends] });

  it('summarizes one case per direction and size, in option order, with medians and ratios', () => {
    expect(cases.map((c) => `${c.direction}/${c.frameSize}`)).to.deep.equal(['tx/64', 'tx/1500', 'rx/64', 'rx/1500']);
    expect(cases[0]!.ratio).to.equal(0.25);
    expect(cases[1]!.dpdk!.mpps).to.equal(4.2);
    expect(cases[1]!.dpdk!.runs).to.deep.equal([4, 4.4, 4.2]);
    expect(cases[1]!.dpdk!.gbps).to.be.closeTo(50.4, 1e-9);
    expect(cases[1]!.ours).to.equal(null);
    expect(cases[1]!.ratio).to.equal(null);
    expect(cases[1]!.errors).to.deep.equal({ ours: 'driver not available: no file' });
  });

  it('JSON has the documented shape', () => {
    const doc = JSON.parse(JSON.stringify(toJson(cases, META))) as {
      cases: { direction: string; frameSize: number; ours: { mpps: number; gbps: number } | null; dpdk: { mpps: number; gbps: number } | null; ratio: number | null }[];
      durationMs: number;
      gbpsBasis: string;
    };
    expect(doc.cases).to.have.length(4);
    expect(doc.cases[0]).to.deep.include({ direction: 'tx', frameSize: 64, ratio: 0.25, offload: null });
    const tso = JSON.parse(JSON.stringify(toJson(cases, { ...META, offload: 'tso' }))) as { cases: { offload: string }[] };
    expect(tso.cases.map((c) => c.offload)).to.deep.equal(['tso', 'tso', 'tso', 'tso']);
    expect(doc.cases[0]!.dpdk).to.deep.include({ mpps: 20, gbps: 10.24 });
    expect(doc.cases[0]!.ours).to.deep.include({ mpps: 5, gbps: 2.56 });
    expect(doc.cases[1]!.ours).to.equal(null);
    expect(doc.cases[1]!.ratio).to.equal(null);
    expect(doc.durationMs).to.equal(5000);
    expect(doc.gbpsBasis).to.contain('without');
  });

  it('marks sides left out by --only', () => {
    const only = summarize([{ direction: 'tx', frameSize: 64, frontend: 'dpdk', runs: [run(20, 64)] }], {
      directions: ['tx'],
      sizes: [64],
      frontends: ['dpdk'],
    });
    expect(only[0]!.ours).to.equal(null);
    expect(only[0]!.errors).to.deep.equal({ ours: 'not run (--only)' });
  });

  it('the table has a row per case, dashes for missing sides, the Gbit/s basis and notes', () => {
    const text = formatTable(cases, META);
    const lines = text.split('\n');
    expect(lines[0]).to.match(/^dir\s+frame\s+DPDK Mpps\s+DPDK Gbit\/s\s+ours Mpps\s+ours Gbit\/s\s+ours\/DPDK\s+best\/best$/);
    expect(lines[1]).to.match(/^tx\s+64 B\s+20\.00\s+10\.24\s+5\.00\s+2\.56\s+25\.0%\s+25\.0%$/);
    expect(lines[2]).to.match(/^tx\s+1500 B\s+4\.20 \(4\.00-4\.40\)\s+50\.40\s+-\s+-\s+-\s+-$/);
    expect(text).to.contain('preamble');
    expect(text).to.contain('tx 1500 B ours: driver not available: no file');
    expect(text).to.contain('rx 64 B dpdk: 1 run(s) disturbed, other programs took up to 55% of a CPU');
    expect(text).to.contain('rx 1500 B dpdk: the back-end counted 1486.0 bytes per frame');
  });

  describe('failed runs', () => {
    // Run 2 of 3 failed on our side, run 3 on DPDK's; another cell lost every run of ours.
    const failing: CellOutcome[] = [
      { direction: 'tx', frameSize: 64, frontend: 'dpdk', runs: [run(17, 64), run(18, 64)], failures: [{ run: 3, error: 'back-end exited during the cell:' }] },
      { direction: 'tx', frameSize: 64, frontend: 'ours', runs: [run(16, 64), run(30, 64)], failures: [{ run: 2, error: 'ours worker exited with code 1' }] },
      { direction: 'rx', frameSize: 64, frontend: 'dpdk', runs: [run(15, 64), run(15, 64), run(15, 64)], failures: [] },
      {
        direction: 'rx', frameSize: 64, frontend: 'ours', runs: [], error: 'link still down',
        failures: [1, 2, 3].map((r) => ({ run: r, error: 'link still down' })),
      },
    ];
    const failedCases = summarize(failing, { directions: ['tx', 'rx'], sizes: [64], frontends: ['dpdk', 'ours'] });
    const meta3 = { ...META, repeat: 3 };

    it('a failed run of our side alone fails the benchmark (exit 1), as one of DPDK\'s does', () => {
      expect(exitCodeOf(failedCases)).to.equal(1);
      const oursOnly = summarize(failing.filter((o) => o.frontend === 'ours' && o.direction === 'tx').concat([failing[0]!].map((o) => ({ ...o, failures: [] }))), {
        directions: ['tx'], sizes: [64], frontends: ['dpdk', 'ours'],
      });
      expect(oursOnly[0]!.failures).to.deep.equal({ ours: [{ run: 2, error: 'ours worker exited with code 1' }] });
      expect(exitCodeOf(oursOnly)).to.equal(1);
      const dpdkOnly = summarize([failing[0]!, { ...failing[1]!, failures: [] }], { directions: ['tx'], sizes: [64], frontends: ['dpdk', 'ours'] });
      expect(exitCodeOf(dpdkOnly)).to.equal(1);
      expect(exitCodeOf(cases), 'no failed run: exit 0').to.equal(0);
    });

    it('lists every failed run, both sides, in order', () => {
      expect(failedRuns(failedCases)).to.deep.equal([
        { direction: 'tx', frameSize: 64, frontend: 'dpdk', run: 3, error: 'back-end exited during the cell:' },
        { direction: 'tx', frameSize: 64, frontend: 'ours', run: 2, error: 'ours worker exited with code 1' },
        { direction: 'rx', frameSize: 64, frontend: 'ours', run: 1, error: 'link still down' },
        { direction: 'rx', frameSize: 64, frontend: 'ours', run: 2, error: 'link still down' },
        { direction: 'rx', frameSize: 64, frontend: 'ours', run: 3, error: 'link still down' },
      ]);
      expect(failedRuns(cases)).to.deep.equal([]);
    });

    it('the table marks the cells and lists each failed run under FAILED', () => {
      const text = formatTable(failedCases, meta3);
      const lines = text.split('\n');
      expect(lines[1]).to.match(/^tx\s+64 B\s+17\.50 \(17\.00-18\.00\) \[1 failed\]\s+[\d.]+\s+23\.00 \(16\.00-30\.00\) \[1 failed\]\s/);
      expect(lines[2]).to.match(/^rx\s+64 B\s+15\.00 \(15\.00-15\.00\)\s+[\d.]+\s+- \[3 failed\]\s+-\s+-\s+-$/);
      const at = lines.findIndex((l) => l.startsWith('FAILED:'));
      expect(lines[at]).to.equal('FAILED: 5 run(s) did not complete; the medians above leave them out, so the benchmark fails:');
      expect(lines.slice(at + 1, at + 6)).to.deep.equal([
        '  tx 64 B dpdk run 3/3: back-end exited during the cell:',
        '  tx 64 B ours run 2/3: ours worker exited with code 1',
        '  rx 64 B ours run 1/3: link still down',
        '  rx 64 B ours run 2/3: link still down',
        '  rx 64 B ours run 3/3: link still down',
      ]);
      expect(formatTable(cases, META)).not.to.contain('FAILED');
    });

    it('JSON lists them per case and counts them', () => {
      const doc = JSON.parse(JSON.stringify(toJson(failedCases, meta3))) as {
        failedRuns: number;
        cases: { failures?: Record<string, { run: number; error: string }[]>; ours: { runs: number[] } | null }[];
      };
      expect(doc.failedRuns).to.equal(5);
      expect(doc.cases[0]!.failures).to.deep.equal({
        dpdk: [{ run: 3, error: 'back-end exited during the cell:' }],
        ours: [{ run: 2, error: 'ours worker exited with code 1' }],
      });
      expect(doc.cases[0]!.ours!.runs, 'the median is of the runs that completed').to.deep.equal([16, 30]);
      expect(doc.cases[1]!.failures!.ours).to.have.length(3);
      expect(doc.cases[1]!.ours).to.equal(null);
      const clean = JSON.parse(JSON.stringify(toJson(cases, META))) as { failedRuns: number; cases: object[] };
      expect(clean.failedRuns).to.equal(0);
      expect(clean.cases[0]).not.to.have.property('failures');
    });
  });

  it('aligns columns', () => {
    expect(alignColumns([['a', '1'], ['bbb', '22']])).to.deep.equal(['a     1', 'bbb  22']);
  });
});

describe('scripts/bench command lines', () => {
  it('back-end: rxonly for tx cells, txonly --txpkts for rx cells, forwarding lcore on the back-end CPU', () => {
    const tx = backendOptions({ direction: 'tx', frameSize: 64, burst: 32, frontendCore: 0, backendCore: 1 });
    expect(tx).to.deep.include({ interactive: true, forwardMode: 'rxonly', lcores: '0,1', mainLcore: 0 });
    expect(tx.extraArgs).to.deep.equal(['--burst=32']);
    const rx = backendOptions({ direction: 'rx', frameSize: 1500, burst: 64, frontendCore: 0, backendCore: 1 });
    expect(rx).to.deep.include({ forwardMode: 'txonly' });
    expect(rx.extraArgs).to.deep.equal(['--burst=64', '--txpkts=1500']);
  });

  it('back-end for offload cells: TSO offered (tso=1), RX checksum offload on the port', () => {
    const o = backendOptions({ direction: 'tx', frameSize: 65400, burst: 32, frontendCore: 0, backendCore: 1, offload: 'tso' });
    expect(o).to.deep.include({ extraVdevArgs: 'tso=1', forwardMode: 'rxonly' });
    expect(o.extraArgs).to.deep.equal(['--burst=32', '--rx-offloads=0xc']);
  });

  it('DPDK frontend for offload cells: a pcap vdev replayed through the csum engine, large mbufs for tso', () => {
    const args = virtioUserTestpmdArgs(
      { socketPath: '/s', forwardMode: 'txonly', forwardCore: 0, mainCore: 1, queueSize: 1024, burst: 32, txFrameSize: 65400, offload: 'tso', pcapPath: '/p.pcap' },
      'pfx',
    ).join(' ');
    expect(args).to.contain('--vdev net_virtio_user0,path=/s,queues=1,queue_size=1024 --vdev net_pcap0,rx_pcap=/p.pcap,infinite_rx=1 --');
    expect(args).to.contain('--total-num-mbufs=6144 --mbuf-size=65535');
    expect(args).to.contain('--forward-mode=csum').and.not.to.contain('--txpkts');
    expect(offloadCommands('tso')).to.deep.equal(['port stop all', 'csum set ip sw 0', 'csum set tcp hw 0', 'tso set 1448 0', 'port start all']);
    expect(offloadCommands('csum')).to.deep.equal(['port stop all', 'csum set ip sw 0', 'csum set udp hw 0', 'port start all']);
    const f = offloadFrame('tso', 65400);
    expect(f.length).to.equal(65400);
    const w = workerArgs({ socketPath: '/s', direction: 'tx', frameSize: 65400, burst: 32, queueSize: 1024, maxMs: 9000, offload: 'tso' });
    expect(w.slice(-2)).to.deep.equal(['--offload', 'tso']);
  });

  it('back-end counters: rx-packets for tx, tx-packets for rx', () => {
    const s = { rxPackets: 1, rxBytes: 64, rxMissed: 2, rxNombuf: 3, txPackets: 10, txBytes: 640, txErrors: 4 };
    expect(backendCounters('tx', s)).to.deep.equal({ packets: 1, bytes: 64 });
    expect(backendCounters('rx', s)).to.deep.equal({ packets: 10, bytes: 640 });
  });

  it("parses testpmd's forward statistics (stop) and the ring-full share", () => {
    const text = [
      'Telling cores to stop...',
      '  ---------------------- Forward statistics for port 0  ----------------------',
      '  RX-packets: 1              RX-dropped: 2             RX-total: 3',
      '  TX-packets: 28081888       TX-dropped: 424640        TX-total: 28506528',
      '  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++',
      '  RX-packets: 0              RX-dropped: 0             RX-total: 0',
      '  TX-packets: 28081888       TX-dropped: 424640        TX-total: 28506528',
      'Done.',
    ].join('\n');
    expect(parseForwardStats(text)).to.deep.equal({ rxPackets: 0, rxDropped: 0, txPackets: 28081888, txDropped: 424640 });
    expect(parseForwardStats('Telling cores to stop...')).to.equal(undefined);
    expect(ringFullPercent(75, 25)).to.equal(25);
    expect(ringFullPercent(0, 0)).to.equal(null);
  });

  it('DPDK frontend: virtio-user on the socket, main lcore on the back-end CPU, forwarding on the other', () => {
    const args = virtioUserTestpmdArgs(
      { socketPath: '/tmp/x/s.sock', forwardMode: 'txonly', forwardCore: 0, mainCore: 1, queueSize: 1024, burst: 32, txFrameSize: 64 },
      'pfx',
    );
    expect(args.join(' ')).to.equal(
      '--no-huge -m 1024 --no-pci --file-prefix=pfx -l 1,0 --main-lcore 1 ' +
        '--vdev net_virtio_user0,path=/tmp/x/s.sock,queues=1,queue_size=1024 -- -i --total-num-mbufs=8192 ' +
        '--rxd=1024 --txd=1024 --burst=32 --forward-mode=txonly --txpkts=64',
    );
    expect(() =>
      virtioUserTestpmdArgs({ socketPath: '/tmp/a,b', forwardMode: 'rxonly', forwardCore: 0, mainCore: 1, queueSize: 256, burst: 32 }, 'p'),
    ).to.throw(/comma/);
  });

  it('ours worker arguments', () => {
    const a = workerArgs({ socketPath: '/s', direction: 'rx', frameSize: 1500, burst: 64, queueSize: 1024, maxMs: 9000 });
    expect(a[0]).to.equal(WORKER_PATH);
    expect(a.slice(1).join(' ')).to.equal('--socket /s --direction rx --size 1500 --burst 64 --queue-size 1024 --max-ms 9000');
    const inPlace = workerArgs({ socketPath: '/s', direction: 'tx', frameSize: 1500, burst: 32, queueSize: 1024, maxMs: 9000, txMode: 'in-place' });
    expect(inPlace.slice(-2)).to.deep.equal(['--tx-mode', 'in-place']);
    const counted = workerArgs({ socketPath: '/s', direction: 'tx', frameSize: 64, burst: 32, queueSize: 1024, maxMs: 9000, ringStats: true });
    expect(counted.at(-1)).to.equal('--ring-stats');
  });

  it('renders commands for humans', () => {
    expect(renderCommand(['dpdk-testpmd', '-l', '0,1', '--vdev', "a b'c"])).to.equal(`dpdk-testpmd -l 0,1 --vdev 'a b'\\''c'`);
  });
});

describe('scripts/bench worker protocol', () => {
  it('round-trips messages and ignores other lines', () => {
    const m = { type: 'mark', tNs: '123456789012345678', packets: 5, bytes: 320 } as const;
    expect(decodeMessage(encodeMessage(m))).to.deep.equal(m);
    expect(decodeMessage('EAL: something')).to.equal(undefined);
    expect(decodeMessage('{not json')).to.equal(undefined);
    expect(decodeMessage('{"no":"type"}')).to.equal(undefined);
  });
});

describe('scripts/bench CPU accounting', () => {
  it('parses /proc/stat and /proc/PID/stat', () => {
    expect(parseProcStat('cpu  100 5 50 1000 10 1 2 3 0 0\ncpu0 1 2 3 4\n')).to.deep.equal({ busy: 161, total: 1171, steal: 3 });
    const pidStat = '4242 (node (x) y) R 1 2 3 0 -1 4194304 98 0 0 0 700 300 0 0 20 0 1 0';
    expect(parsePidStat(pidStat)).to.equal(1000);
  });

  it('foreign CPU is system busy time minus our processes, in % of one CPU', () => {
    const a: CpuSnapshot = { system: { busy: 0, total: 0, steal: 0 }, ours: new Map([[1, 0], [2, 0]]) };
    // 2 CPUs x 100 ticks: 180 busy ticks, 150 of them ours, 10 stolen by the hypervisor.
    const b: CpuSnapshot = { system: { busy: 180, total: 200, steal: 10 }, ours: new Map([[1, 100], [2, 50], [3, 999]]) };
    expect(foreignCpuPercent(a, b, 2)).to.be.closeTo(20, 1e-9);
    expect(stealPercent(a, b, 2)).to.be.closeTo(10, 1e-9);
    expect(foreignCpuPercent(a, a, 2)).to.equal(null);
    expect(stealPercent(a, a, 2)).to.equal(null);
  });
});

describe('scripts/bench CPU accounting: who disturbed a run', () => {
  it('names the busiest other processes, started-in-window ones included', async () => {
    const { topForeign, parsePidComm } = await import('../../scripts/bench/cpu.js');
    expect(parsePidComm('4242 (node (x) y) R 1')).to.equal('node (x) y');
    const a: CpuSnapshot = {
      system: { busy: 0, total: 0, steal: 0 },
      ours: new Map(),
      others: new Map([[10, { comm: 'tsc', ticks: 100 }], [11, { comm: 'idle', ticks: 5 }]]),
    };
    const b: CpuSnapshot = {
      system: { busy: 180, total: 200, steal: 0 },
      ours: new Map(),
      others: new Map([[10, { comm: 'tsc', ticks: 190 }], [11, { comm: 'idle', ticks: 6 }], [12, { comm: 'mocha', ticks: 40 }]]),
    };
    expect(topForeign(a, b, 2)).to.deep.equal(['tsc[10] 90%', 'mocha[12] 40%']);
    expect(topForeign(a, b, 2, 1)).to.deep.equal(['tsc[10] 90%']);
  });
});

describe('scripts/bench report: steadiness', () => {
  it('flags runs whose 1-s rates moved by more than a quarter', async () => {
    const { unsteady } = await import('../../scripts/bench/report.js');
    expect(unsteady([10, 9.9, 10.2])).to.equal(false);
    expect(unsteady([10, 4.7, 3.4])).to.equal(true);
    expect(unsteady([5])).to.equal(false);
    const cases = summarize(
      [{ direction: 'rx', frameSize: 1500, frontend: 'dpdk', runs: [run(6, 1500, { intervalMpps: [9.6, 9.9, 4.7, 3.4] })] }],
      { directions: ['rx'], sizes: [1500], frontends: ['dpdk'] },
    );
    expect(cases[0]!.dpdk!.intervalMpps).to.deep.equal([[9.6, 9.9, 4.7, 3.4]]);
    expect(formatTable(cases, META)).to.contain('rx 1500 B dpdk: 1 run(s) unsteady, 1-s rates from 3.40 to 9.90 Mpps');
  });
});

describe('scripts/bench progress line', () => {
  it('describes a run with its cross-checks', async () => {
    const { describeRun } = await import('../../scripts/bench/report.js');
    const line = describeRun(
      run(16.1, 64, { packets: 80_500_000, elapsedMs: 5000.4, frontendMpps: 16.107, intervalMpps: [15.2, 16.8], foreignCpuPct: 12, foreignTop: ['tsc[9] 11%'], stealPct: 3 }),
    );
    expect(line).to.equal(
      '16.100 Mpps [80500000 frames in 5000.4 ms, 64.0 B/frame, sender found the ring full for 0.5% of frames, ' +
        'frontend counted 16.107 Mpps, 1-s slices 15.20..16.80 Mpps, ' +
        'other programs 12% CPU (tsc[9] 11%), steal 3%]',
    );
  });
});

describe('scripts/bench --ring-stats', () => {
  it('counts reaps (empty ones, while full), reap and publish sizes and kicks of a real split ring', async () => {
    const { countingQueues, describeRingStats } = await import('../../scripts/bench/ring-stats.js');
    const { GuestMemory } = await import('../../lib/memory/guest-memory.js');
    const { SplitDeviceQueue } = await import('../../lib/virtqueue/device/split-device.js');
    const memory = GuestMemory.create({ size: 1 << 20 });
    try {
      const counting = countingQueues();
      const q = counting.createQueue('split', { memory, index: 1, size: 4, ringGpa: 0x1000, eventIdx: false, inOrder: true });
      const device = new SplitDeviceQueue(memory, (q as unknown as { layout: never }).layout, { eventIdx: false });
      const tokens = new Uint32Array(4);
      const lens = new Uint32Array(4);
      for (let i = 0; i < 4; i++) q.addBuffer(0x80000 + i * 2048, 64, false, i);
      q.publish();
      expect(q.reap(tokens, lens, 4)).to.equal(0);
      for (let i = 0; i < 3; i++) device.push(device.pop()!.head, 0);
      expect(q.reap(tokens, lens, 4)).to.equal(3);
      q.addBuffer(0x80000, 64, false, 0);
      q.publish();
      const s = counting.stats(1)!;
      expect(s).to.include({ reaps: 2, emptyReaps: 1, reapsWhileFull: 2, emptyReapsWhileFull: 1, meanReap: 3, publishes: 2, meanPublish: 2.5 });
      expect(s.reapSizes).to.deep.equal({ 3: 1 });
      expect(s.publishSizes).to.deep.equal({ 1: 1, 4: 1 });
      // Without NO_NOTIFY from the device, every publish asks for a kick.
      expect(s.kicks).to.equal(2);
      expect(describeRingStats(s)).to.match(/^ring: 2 reaps \(50% empty; 2 while full, 50% of them empty\), mean reap 3\.0, 2 publishes of 2\.5 on average, 2 kicks$/);
      expect(counting.stats(0)).to.equal(null);
    } finally {
      memory.close();
    }
  });
});

describe('scripts/bench bottleneck', () => {
  it('names the side that could not keep up', async () => {
    const { limitedBy } = await import('../../scripts/bench/report.js');
    expect(limitedBy('tx', 60)).to.equal('back-end');
    expect(limitedBy('tx', 1.5)).to.equal('frontend');
    expect(limitedBy('rx', 60)).to.equal('frontend');
    expect(limitedBy('rx', 0)).to.equal('back-end');
    expect(limitedBy('rx', 10)).to.equal('both');
    expect(limitedBy('tx', null)).to.equal(null);
  });

  it('the table lists the bottleneck per case', () => {
    const cases = summarize(
      [
        { direction: 'tx', frameSize: 64, frontend: 'dpdk', runs: [run(17, 64, { senderRingFullPct: 1.5 })] },
        { direction: 'tx', frameSize: 64, frontend: 'ours', runs: [run(17, 64, { senderRingFullPct: 62 })] },
      ],
      { directions: ['tx'], sizes: [64], frontends: ['dpdk', 'ours'] },
    );
    const text = formatTable(cases, META);
    expect(text).to.match(/\n {2}tx\s+64 B\s+dpdk: frontend \(1\.5%\)\s+ours: back-end \(62\.0%\)\n/);
    const doc = toJson(cases, META) as { cases: { dpdk: { limitedBy: string }; ours: { limitedBy: string } }[] };
    expect(doc.cases[0]!.dpdk.limitedBy).to.equal('frontend');
    expect(doc.cases[0]!.ours.limitedBy).to.equal('back-end');
  });
});
