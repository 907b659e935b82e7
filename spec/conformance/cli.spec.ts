/**
 * `vhost-user conformance` end to end: the built CLI as a child process, starting
 * its back-end with --spawn (the reference back-end through `vhost-user serve`, or
 * one that crashes), in each output format.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { memfs } from 'memfs';
import { main } from '../../lib/cli/main.js';
import { allChecks, appliesTo } from '../../lib/conformance/index.js';
import { cli, expectOneErrorLine } from '../helpers/cli.js';
import { expectGroupsGone, processesMentioning, watchGroups } from '../launch/helpers.js';

const MAIN = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const CRASHING = fileURLToPath(new URL('./crashing-backend.js', import.meta.url));

interface JsonReport {
  backend: { name: string; device: string; spawned: boolean; crashes: number; restarts: number };
  checks: { id: string; rule: string; status: string; detail: string; evidence: string[] }[];
  summary: { pass: number; fail: number; skip: number };
}

describe('cli conformance (child process)', function () {
  this.timeout(60_000);
  let dir: string;
  let socket: string;
  const serve = (extra = '') => `${process.execPath} ${MAIN} serve --socket ${socket} --device net ${extra}`;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'vhost-conformance-test-'));
    socket = path.join(dir, 'net.sock');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('--help lists the options; a bad option value exits 2 with one line', async () => {
    const help = await cli(['conformance', '--help']);
    expect(help.status).to.equal(0);
    for (const opt of ['--socket PATH', '--device net|blk|fs|generic', '--spawn CMD', '--format text|json|junit', '--only PATTERN', '--strict']) expect(help.stdout).to.contain(opt);
    const bad = await cli(['conformance', '--socket', socket, '--format', 'yaml']);
    expect(bad.status).to.equal(2);
    expectOneErrorLine(bad, 'VHOST_INVALID_ARGUMENT');
    const noFile = await cli(['conformance', '--socket', socket, '--output', path.join(dir, 'x')]);
    expect(noFile.status).to.equal(2);
    expectOneErrorLine(noFile, 'VHOST_INVALID_ARGUMENT');
    // Nothing matches: refused before any back-end is started or connected to.
    const none = await cli(['conformance', '--socket', socket, '--device', 'blk', '--only', 'rarp', '--spawn', 'exit 3']);
    expect(none.status).to.equal(2);
    expectOneErrorLine(none, 'VHOST_INVALID_ARGUMENT');
    expect(none.stderr).to.contain("no check matches --only 'rarp' for device blk");
    const spawnFails = await cli(['conformance', '--socket', socket, '--spawn', 'exit 3']);
    expect(spawnFails.status).to.equal(1);
    expectOneErrorLine(spawnFails, 'VHOST_SPAWN_FAILED');
  });

  it('--spawn the reference back-end, --format json: every net check ran, none failed, the back-end is stopped', async () => {
    const r = await cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', serve(), '--format', 'json']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as JsonReport;
    expect(report.backend).to.include({ device: 'net', spawned: true, oneShot: false, crashes: 0, restarts: 0 });
    expect(report.checks.map((c) => c.id)).to.deep.equal(allChecks.filter((c) => appliesTo(c, 'net')).map((c) => c.id));
    expect(report.summary.fail).to.equal(0);
    expect(report.summary.pass + report.summary.skip).to.equal(report.checks.length);
    // With the pid known, the fd-leak check ran against the child.
    expect(report.checks.find((c) => c.id === 'leak.set-vring-kick')!.status).to.equal('pass');
    for (const c of report.checks) expect(Object.keys(c)).to.include.members(['id', 'rule', 'status', 'detail']);
  });

  it('text output: one line per check, then the summary; exit 0 despite failures, 1 with --strict', async () => {
    const args = ['conformance', '--socket', socket, '--device', 'net', '--spawn', serve('--fault nak@SET_VRING_ENABLE --fault-repeat'), '--only', 'handshake.version,reply-ack.SET_VRING_ENABLE'];
    const r = await cli(args);
    expect(r.status, r.stderr).to.equal(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).to.match(/^PASS handshake\.version-1 \(\d+ ms\)$/);
    expect(lines[1]).to.match(/^FAIL reply-ack\.SET_VRING_ENABLE \(\d+ ms\): VHOST_NACK \[SET_VRING_ENABLE\]/);
    expect(r.stdout).to.contain('  rule: vhost-user.rst, \'VHOST_USER_PROTOCOL_F_REPLY_ACK\'');
    expect(r.stdout).to.match(/ {4}< SET_VRING_ENABLE flags=0x5 size=8 0x1\n/);
    expect(r.stdout).to.match(/\n2 checks against .* \(net\): 1 passed, 1 failed, 0 skipped in [\d.]+ s; back-end restarted 1 time\(s\), 0 after a crash\n$/);
    const strict = await cli([...args, '--strict']);
    expect(strict.status).to.equal(1);
    expect(strict.stderr).to.equal('vhost-user: conformance: 1 of 2 checks failed (--strict)\n');
  });

  it('--format junit --output FILE: one testcase per check, failures with evidence, skips with reasons', async () => {
    const out = path.join(dir, 'junit.xml');
    const r = await cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', serve('--fault nak@SET_VRING_ENABLE --fault-repeat'), '--only', 'reply-ack,inflight', '--format', 'junit', '--output', out]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('');
    const xml = readFileSync(out, 'utf8');
    const ids = allChecks.filter((c) => appliesTo(c, 'net') && (c.id.startsWith('reply-ack') || c.id.startsWith('inflight'))).map((c) => c.id);
    expect(xml.match(/<testcase /g)).to.have.length(ids.length);
    expect(xml).to.match(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<testsuites name="vhost-user conformance" tests="\d+" failures="1" skipped="\d+"/);
    expect(xml).to.contain('<testcase classname="conformance.reply-ack" name="reply-ack.SET_VRING_ENABLE"');
    expect(xml).to.match(/<failure message="VHOST_NACK \[SET_VRING_ENABLE\][^"]*" type="finding">rule: vhost-user.rst/);
    expect(xml).to.contain('&lt; SET_VRING_ENABLE flags=0x5 size=8 0x1');
    expect(xml).to.contain('<skipped message="protocol feature INFLIGHT_SHMFD not offered"/>');
  });

  it('in-process on memfs: --output writes the report to the file system given, not to disk', async () => {
    const { fs } = memfs({ '/reports': null });
    let out = '';
    let err = '';
    const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t), fs };
    const args = ['conformance', '--socket', socket, '--device', 'net', '--spawn', serve(), '--only', 'handshake.version,handshake.get-features'];
    expect(await main([...args, '--format', 'json', '--output', '/reports/r.json'], io), err).to.equal(0);
    expect(out).to.equal('');
    expect(existsSync('/reports/r.json')).to.equal(false);
    const report = JSON.parse(fs.readFileSync('/reports/r.json', 'utf8') as string) as JsonReport;
    expect(report.checks.map((c) => [c.id, c.status])).to.deep.equal([['handshake.get-features', 'pass'], ['handshake.version-1', 'pass']]);
    expect(await main([...args, '--format', 'junit', '--output', '/reports/r.xml'], io), err).to.equal(0);
    expect(fs.readFileSync('/reports/r.xml', 'utf8')).to.match(/^<\?xml [^>]*>\n<testsuites name="vhost-user conformance" tests="2" failures="0"/);
    // Into a directory that is not there: one error line, exit 1, and the back-end was still stopped.
    err = '';
    expect(await main([...args, '--format', 'json', '--output', '/missing/r.json'], io)).to.equal(1);
    expect(err).to.match(/^vhost-user: .*ENOENT[^\n]*\n$/);
    expect(processesMentioning(socket)).to.deep.equal([]);
  });

  it('a back-end that crashes is a finding of the check that crashed it, and is restarted for the next check', async () => {
    const spawn = `${process.execPath} ${CRASHING} ${socket}`;
    const r = await cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', spawn, '--only', 'handshake.version,negative.request-code,handshake.get-features', '--timeout', '500', '--format', 'json']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as JsonReport;
    expect(report.checks.map((c) => [c.id, c.status])).to.deep.equal([
      ['handshake.get-features', 'pass'],
      ['handshake.version-1', 'pass'],
      ['negative.request-code-0', 'fail'],
      ['negative.request-code-unknown', 'fail'],
    ]);
    for (const c of report.checks.slice(2)) {
      expect(c.detail).to.match(/^the back-end \(pid \d+\) was killed by SIGKILL during the check/);
      expect(c.detail).to.contain('crashing on request code');
      expect(c.evidence.some((l) => l.startsWith('back-end output: crashing on'))).to.equal(true);
    }
    expect(report.backend).to.include({ crashes: 2, restarts: 2 });
  });

  it('a socket nobody serves: each check fails within its deadline, exit 0', async () => {
    const r = await cli(['conformance', '--socket', socket, '--only', 'handshake.get-features,reconnect.mid-handshake', '--timeout', '300', '--format', 'json']);
    expect(r.status, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as JsonReport;
    expect(report.checks.map((c) => c.status)).to.deep.equal(['fail', 'fail']);
    for (const c of report.checks) expect(c.detail).to.match(/^VHOST_CONNECT_TIMEOUT/);
    expect(r.ms).to.be.below(5000);
  });

  describe('nothing --spawn started outlives the run', () => {
    const ourGroup = Number(readFileSync('/proc/self/stat', 'latin1').split(') ')[1]!.split(' ')[2]);
    // The CLI itself (which names the socket too) runs in our group; everything else is the back-end's.
    const isCli = (p: { cmdline: string }) => p.cmdline.startsWith(`${process.execPath} ${MAIN} conformance `);
    const backendProcesses = () => processesMentioning(socket).filter((p) => !isCli(p));
    /** A project with this package installed (linked), as a user of it has: where `npx --no-install vhost-user` finds the bin. */
    const userProject = (): string => {
      const project = path.join(dir, 'project');
      mkdirSync(path.join(project, 'node_modules', '.bin'), { recursive: true });
      writeFileSync(path.join(project, 'package.json'), '{"private":true}\n');
      symlinkSync(REPO, path.join(project, 'node_modules', 'vhost-user-client'));
      symlinkSync('../vhost-user-client/dist/lib/cli/main.js', path.join(project, 'node_modules', '.bin', 'vhost-user'));
      // npm's bin linking makes the target executable; tsc writes it without the x bits.
      chmodSync(path.join(REPO, 'dist', 'lib', 'cli', 'main.js'), 0o755);
      return project;
    };
    const spawns: [string, () => string][] = [
      // npx runs the bin through `sh -c`, so the back-end is a grandchild of what the runner started.
      // Its NAK makes one check fail, so the runner also stops it mid-run and starts a fresh one.
      ['npx --no-install vhost-user serve', () => `npx --no-install --prefix ${userProject()} vhost-user serve --socket ${socket} --device net --fault nak@SET_VRING_ENABLE --fault-repeat`],
      ['sh -c that forks the back-end', () => `sh -c '${serve()}; exit $?'`],
      ['a back-end that forks a child of its own', () => `sh -c 'sleep 300 & exec ${serve()}'`],
    ];
    for (const [what, command] of spawns) {
      it(`${what}: the run exits 0 and no process of the back-end's group is left`, async () => {
        const groups = watchGroups(socket, (p) => !isCli(p));
        const spawn = command();
        const r = await cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', spawn, '--only', 'handshake.version,reply-ack.SET_VRING_ENABLE', '--format', 'json'], 30_000);
        const seen = groups.stop();
        expect(r.status, r.stderr).to.equal(0);
        const report = JSON.parse(r.stdout) as JsonReport;
        const restarted = spawn.includes('--fault');
        if (spawn.startsWith('npx')) {
          // The back-end ran as a grandchild: the bin npx found in the project, under npm's `sh -c`.
          expect([...groups.commands].some((c) => /^\S*node \S+\/project\/node_modules\/\.bin\/vhost-user serve /.test(c)), [...groups.commands].join('\n')).to.equal(true);
        }
        expect(report.summary.fail).to.equal(restarted ? 1 : 0);
        expect(report.backend.restarts).to.equal(restarted ? 1 : 0);
        expect(seen.size, 'each back-end started was seen running').to.equal(restarted ? 2 : 1);
        expect([...seen]).not.to.include(ourGroup);
        await expectGroupsGone(seen);
        expect(backendProcesses()).to.deep.equal([]);
      });
    }

    it('the front-end killed with SIGKILL mid-run: no process of the back-end\'s group is left', async () => {
      const groups = watchGroups(socket, (p) => !isCli(p));
      const run = cli(['conformance', '--socket', socket, '--device', 'net', '--spawn', `sh -c 'sleep 300 & ${serve()}; exit $?'`, '--timeout', '5000'], 30_000);
      // Once the back-end runs, kill the CLI without giving it a chance to stop anything.
      for (let i = 0; i < 500 && groups.seen.size === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(groups.seen.size, 'the back-end was seen running').to.equal(1);
      expect([...groups.seen]).not.to.include(ourGroup);
      const cliPid = processesMentioning(socket).find(isCli)?.pid;
      expect(cliPid, 'the CLI process').to.be.a('number');
      process.kill(cliPid!, 'SIGKILL');
      expect((await run).status).to.equal(null);
      await expectGroupsGone(groups.stop());
      expect(backendProcesses()).to.deep.equal([]);
    });
  });
});
