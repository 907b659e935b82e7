import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { defineCommand, type CliIo } from '../../lib/cli/command.js';
import { errorLine, main } from '../../lib/cli/main.js';
import { VhostUserError } from '../../lib/errors.js';

/** An in-process io that records what a command wrote. */
function captureIo(): CliIo & { out: string; err: string } {
  const io = { out: '', err: '', stdout: (t: string) => void (io.out += t), stderr: (t: string) => void (io.err += t) };
  return io;
}

const echo = defineCommand({
  name: 'net send',
  summary: 'test command',
  options: { count: { type: 'number', default: 1, description: 'how many' } },
  async run(args, io) {
    io.stdout(`sent ${args.count}\n`);
    if (args.count === 13) throw new VhostUserError('VHOST_NACK', 'back-end said no\nsecond line', { request: 'SET_VRING_ADDR' });
    if (args.count === 14) throw new TypeError('oops');
    return args.count === 0 ? 3 : undefined;
  },
});

async function run(argv: string[]) {
  const io = captureIo();
  const status = await main(argv, io, [echo]);
  return { status, out: io.out, err: io.err };
}

describe('cli/main (in-process)', () => {
  it('--help lists the commands; --version prints package.json version', async () => {
    const help = await run(['--help']);
    expect(help.status).to.equal(0);
    expect(help.out).to.match(/Commands:\n\s+net send\s+test command/);
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(await run(['--version'])).to.deep.equal({ status: 0, out: `${pkg.version}\n`, err: '' });
  });

  it('dispatches multi-word commands and returns their status', async () => {
    expect(await run(['net', 'send', '--count', '2'])).to.deep.equal({ status: 0, out: 'sent 2\n', err: '' });
    expect((await run(['net', 'send', '--count=0'])).status).to.equal(3);
  });

  it('<command> --help prints the generated usage', async () => {
    const r = await run(['net', 'send', '--help']);
    expect(r.status).to.equal(0);
    expect(r.out).to.contain('Usage: vhost-user net send [options]');
    expect(r.out).to.match(/--count COUNT +how many \(default: 1\)/);
  });

  it('usage errors exit 2 with one stderr line', async () => {
    for (const argv of [[], ['bogus'], ['net'], ['net', 'send', '--bogus']]) {
      const r = await run(argv);
      expect(r.status, argv.join(' ')).to.equal(2);
      expect(r.err).to.match(/^vhost-user: VHOST_INVALID_ARGUMENT: [^\n]+\n$/);
    }
    expect((await run(['net'])).err).to.contain("'net' needs a subcommand: net send");
  });

  it('failures exit 1 with one line: CODE [REQUEST]: message, never a stack', async () => {
    const r = await run(['net', 'send', '--count=13']);
    expect(r.status).to.equal(1);
    expect(r.err).to.equal('vhost-user: VHOST_NACK [SET_VRING_ADDR]: back-end said no | second line\n');
    const internal = await run(['net', 'send', '--count=14']);
    expect(internal.status).to.equal(1);
    expect(internal.err).to.equal('vhost-user: VHOST_INTERNAL: TypeError: oops\n');
  });

  it('formats non-errors thrown', () => {
    expect(errorLine('boom')).to.equal('vhost-user: VHOST_INTERNAL: boom\n');
    expect(errorLine(new Error('plain'))).to.equal('vhost-user: VHOST_INTERNAL: plain\n');
  });
});
