/**
 * What a `vhost-user` subcommand is. Commands write only through `io`, never to
 * `process.stdout` directly, so tests can run them in-process.
 */
import type { FileSystem } from '../file-system.js';
import type { OptionSpecs, ParsedOptions } from './args.js';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Where files named on the command line (--output, --pcap) are read and written; default `node:fs`. */
  fs?: FileSystem;
  /**
   * A status line for long work. Shown only on a terminal (overwritten in place),
   * so scripts reading stderr still get exactly one line on failure.
   */
  progress?(text: string): void;
}

export interface Command<O extends OptionSpecs = OptionSpecs> {
  /** One word, or a group and a word (`net send`): matched against the leading argv words. */
  name: string;
  /** One line for `vhost-user --help`. */
  summary: string;
  /** Longer text for `vhost-user <name> --help`; default the summary. */
  description?: string;
  options: O;
  /** Resolves with the exit status (default 0). Throws for failures: main prints one line. */
  run(args: ParsedOptions<O>, io: CliIo): Promise<number | void>;
}

/**
 * A command of any option set, for lists of commands. `run` takes its own options, so
 * `Command<O>` is not assignable to `Command<OptionSpecs>`; `any` erases O only here.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyCommand = Command<any>;

/** Identity, so a command's `run` sees its options typed from its own declarations. */
export function defineCommand<const O extends OptionSpecs>(command: Command<O>): Command<O> {
  return command;
}
