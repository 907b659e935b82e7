#!/usr/bin/env node
/**
 * `vhost-user <command> [options]`: the command-line front of the library.
 *
 * Exit status: 0 success, 1 failure, 2 bad usage. A failure prints exactly one
 * line on stderr, `vhost-user: CODE [REQUEST]: message`, never a stack trace:
 * the code is what scripts match on.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VhostUserError } from '../errors.js';
import { formatHelp, isUsageError, parseArgs, table, UsageError, type OptionSpecs } from './args.js';
import type { AnyCommand, CliIo } from './command.js';
import { commands as builtins } from './commands/index.js';

export type { CliIo, Command } from './command.js';

const PROGRAM = 'vhost-user';

/** The package version, from the package.json next to dist/. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** `vhost-user: CODE [REQUEST]: message` on one line, for any thrown value. */
export function errorLine(e: unknown): string {
  const text =
    e instanceof VhostUserError
      ? e.toLine()
      : `VHOST_INTERNAL: ${e instanceof Error ? `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}` : String(e)}`;
  // Some messages carry a back-end's output tail; the contract is one line.
  return `${PROGRAM}: ${text.replace(/\s*\n\s*/g, ' | ')}\n`;
}

function generalHelp(commands: readonly AnyCommand[]): string {
  return [
    `Usage: ${PROGRAM} <command> [options]`,
    '',
    'Drive vhost-user back-ends (DPDK, qemu-storage-daemon, virtiofsd, rust-vmm) without a VM.',
    '',
    'Commands:',
    ...table(commands.map((c) => [c.name, c.summary])),
    '',
    'Options:',
    ...table([
      ['-h, --help', 'show this help'],
      ['--version', 'print the version'],
    ]),
    '',
    `Run '${PROGRAM} <command> --help' for the options of a command.`,
    '',
  ].join('\n');
}

/** The command whose name words lead `argv`, longest name first (`net send` before `net`). */
function findCommand(commands: readonly AnyCommand[], argv: readonly string[]): AnyCommand | undefined {
  return [...commands]
    .sort((a, b) => b.name.split(' ').length - a.name.split(' ').length)
    .find((c) => c.name.split(' ').every((w, i) => argv[i] === w));
}

/**
 * Runs one command line (`argv` without node and the script) and resolves with the
 * exit status. Never throws: failures are reported on `io.stderr`.
 */
export async function main(argv: readonly string[], io: CliIo, commands: readonly AnyCommand[] = builtins): Promise<number> {
  try {
    const first = argv[0];
    if (first === undefined) throw new UsageError(`no command given (see '${PROGRAM} --help')`);
    if (first === '--help' || first === '-h' || first === 'help') {
      io.stdout(generalHelp(commands));
      return 0;
    }
    if (first === '--version' || first === '-V') {
      io.stdout(`${version()}\n`);
      return 0;
    }
    const command = findCommand(commands, argv);
    if (!command) {
      const group = commands.filter((c) => c.name.startsWith(`${first} `)).map((c) => c.name);
      throw new UsageError(
        group.length
          ? `'${first}' needs a subcommand: ${group.join(', ')} (see '${PROGRAM} --help')`
          : `unknown command '${first}' (see '${PROGRAM} --help')`,
      );
    }
    const parsed = parseArgs(command.options, argv.slice(command.name.split(' ').length), { where: command.name });
    if (parsed.help) {
      io.stdout(formatHelp(`${PROGRAM} ${command.name} [options]`, command.description ?? command.summary, command.options as OptionSpecs));
      return 0;
    }
    return (await command.run(parsed.options, io)) ?? 0;
  } catch (e) {
    io.stderr(errorLine(e));
    return isUsageError(e) ? 2 : 1;
  }
}

/** Whether this module is the process entry point (also through npm's bin symlink). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  let progressShown = false;
  const clearProgress = () => {
    if (progressShown) process.stderr.write('\r\x1b[K');
    progressShown = false;
  };
  const io: CliIo = {
    stdout: (t) => void (clearProgress(), process.stdout.write(t)),
    stderr: (t) => void (clearProgress(), process.stderr.write(t)),
    ...(process.stderr.isTTY ? { progress: (t: string) => void ((progressShown = true), process.stderr.write(`\r\x1b[K${t}`)) } : {}),
  };
  // Last resort for errors raised outside a command's promise (an emitter without a listener): still one line.
  const die = (e: unknown) => {
    process.stderr.write(errorLine(e));
    process.exit(1);
  };
  process.on('uncaughtException', die);
  process.on('unhandledRejection', die);
  process.stdout.on('error', () => {}); // EPIPE from `| head`: nothing left to tell
  const status = await main(process.argv.slice(2), io);
  process.exitCode = status;
  // Commands close what they open, so the loop should drain now; if a handle is still
  // referenced anyway, do not hang the shell. unref: this timer alone keeps nothing alive.
  setTimeout(() => process.exit(status), 1000).unref();
}
