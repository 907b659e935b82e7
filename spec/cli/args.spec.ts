import { expect } from 'chai';
import { flagName, formatHelp, isUsageError, parseArgs, type OptionSpecs } from '../../lib/cli/args.js';

const specs = {
  socket: { type: 'string', required: true, valueName: 'PATH', description: 'the socket' },
  device: { type: 'enum', choices: ['net', 'blk'], description: 'device type' },
  json: { type: 'boolean', short: 'j', description: 'JSON output' },
  timeout: { type: 'number', integer: true, min: 1, default: 5000, valueName: 'MS', description: 'deadline' },
  imageSize: { type: 'number', description: 'bytes' },
} as const satisfies OptionSpecs;

function usageError(argv: string[], allowPositionals = false): string {
  try {
    parseArgs(specs, argv, { where: 'probe', allowPositionals });
  } catch (e) {
    expect(isUsageError(e), String(e)).to.equal(true);
    expect((e as { code: string }).code).to.equal('VHOST_INVALID_ARGUMENT');
    return (e as Error).message;
  }
  return expect.fail(`no usage error for ${argv.join(' ')}`);
}

describe('cli/args', () => {
  it('parses --opt value and --opt=value, applies defaults, types the result', () => {
    const r = parseArgs(specs, ['--socket', '/tmp/a.sock', '--device=blk', '--timeout=300']);
    expect(r.help).to.equal(false);
    expect(r.options).to.deep.equal({ socket: '/tmp/a.sock', device: 'blk', json: false, timeout: 300 });
    expect(r.options.imageSize).to.equal(undefined);
    const timeout: number = r.options.timeout;
    const device: 'net' | 'blk' | undefined = r.options.device;
    expect([timeout, device]).to.deep.equal([300, 'blk']);
  });

  it('takes booleans bare, as =true/=false, and by their short alias; the last occurrence wins', () => {
    expect(parseArgs(specs, ['--socket=s', '--json']).options.json).to.equal(true);
    expect(parseArgs(specs, ['--socket=s', '-j']).options.json).to.equal(true);
    expect(parseArgs(specs, ['--socket=s', '--json=false']).options.json).to.equal(false);
    expect(parseArgs(specs, ['--socket=a', '--socket=b']).options.socket).to.equal('b');
  });

  it('maps camelCase keys to kebab-case flags', () => {
    expect(flagName('imageSize')).to.equal('image-size');
    expect(parseArgs(specs, ['--socket=s', '--image-size', '1048576']).options.imageSize).to.equal(1048576);
  });

  it('keeps a value that looks like an option when given with =, and negative numbers after a space', () => {
    expect(parseArgs(specs, ['--socket=--weird']).options.socket).to.equal('--weird');
    expect(usageError(['--socket=s', '--image-size', '-5', '--timeout', '0'])).to.contain('--timeout must be at least 1');
  });

  it('reports unknown options, naming the command and where help is', () => {
    expect(usageError(['--socket=s', '--bogus'])).to.equal("probe: unknown option --bogus (see 'vhost-user probe --help')");
    expect(usageError(['--socket=s', '-x'])).to.contain('unknown option -x');
    expect(usageError(['--socket=s', '--bogus=1'])).to.contain('unknown option --bogus');
  });

  it('reports missing and malformed values', () => {
    expect(usageError([])).to.contain('--socket is required');
    expect(usageError(['--socket'])).to.contain('--socket needs a value');
    expect(usageError(['--socket', '--json'])).to.contain('--socket needs a value');
    expect(usageError(['--socket=s', '--timeout', 'soon'])).to.contain("--timeout needs a number, got 'soon'");
    expect(usageError(['--socket=s', '--timeout=']) ).to.contain('needs a number');
    expect(usageError(['--socket=s', '--timeout=1.5'])).to.contain('needs an integer');
    expect(usageError(['--socket=s', '--device', 'scsi'])).to.contain("--device must be one of net, blk, got 'scsi'");
    expect(usageError(['--socket=s', '--json=yes'])).to.contain('takes no value or true/false');
  });

  it('refuses positionals unless allowed; -- ends the options', () => {
    expect(usageError(['--socket=s', 'extra'])).to.contain("unexpected argument 'extra'");
    const r = parseArgs(specs, ['--socket=s', 'a', '--', '--json', '-h'], { allowPositionals: true });
    expect(r.positionals).to.deep.equal(['a', '--json', '-h']);
    expect(r.options.json).to.equal(false);
    expect(r.help).to.equal(false);
  });

  it('--help and -h win over everything else, even missing required options', () => {
    expect(parseArgs(specs, ['--bogus', '--help']).help).to.equal(true);
    expect(parseArgs(specs, ['-h']).help).to.equal(true);
  });

  it('generates usage text from the declarations', () => {
    const text = formatHelp('vhost-user probe [options]', 'Probes.', specs);
    expect(text).to.match(/^Usage: vhost-user probe \[options\]\n\nProbes\.\n\nOptions:\n/);
    expect(text).to.match(/--socket PATH +the socket \(required\)/);
    expect(text).to.match(/--device net\|blk +device type\n/);
    expect(text).to.match(/-j, --json +JSON output\n/);
    expect(text).to.match(/--timeout MS +deadline \(default: 5000\)/);
    expect(text).to.match(/--image-size IMAGESIZE +bytes/);
    expect(text).to.match(/-h, --help +show this help\n$/);
  });
});
