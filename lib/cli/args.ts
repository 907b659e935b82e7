/**
 * A small declarative option parser for the `vhost-user` commands: no
 * dependency, typed results, and usage text generated from the same
 * declarations so help and behaviour cannot drift apart.
 *
 * Option keys are camelCase; on the command line they are kebab-case
 * (`imageSize` is `--image-size`). Accepted forms: `--name value`,
 * `--name=value`, bare `--flag` for booleans (`--flag=false` too), `-h`/`--help`,
 * and `--` to end the options.
 */
import { VhostUserError } from '../errors.js';

export type OptionType = 'string' | 'number' | 'boolean' | 'enum';

export interface OptionSpec {
  type: OptionType;
  description: string;
  required?: boolean;
  default?: string | number | boolean;
  /** Allowed values of an 'enum' option. */
  choices?: readonly string[];
  /** Placeholder in the usage text (`--socket PATH`); default the upper-cased name. */
  valueName?: string;
  /** Single-letter alias, without the dash. */
  short?: string;
  /** 'number' only: reject fractions. */
  integer?: boolean;
  /** 'number' only: inclusive bounds. */
  min?: number;
  max?: number;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'number'
    ? number
    : S extends { choices: readonly (infer C)[] }
      ? C
      : string;

/** Always present: booleans, required options and options with a default. */
type Present<S extends OptionSpec> = S extends { type: 'boolean' } | { required: true } | { default: string | number | boolean } ? true : false;

/** The typed result of parsing with specs `O`. */
export type ParsedOptions<O extends OptionSpecs> = {
  -readonly [K in keyof O]: Present<O[K]> extends true ? ValueOf<O[K]> : ValueOf<O[K]> | undefined;
};

export interface ParseResult<O extends OptionSpecs> {
  /** `-h`/`--help` was given: nothing else was validated. */
  help: boolean;
  options: ParsedOptions<O>;
  positionals: string[];
}

/** Bad command-line input: the CLI prints one line and exits with status 2. */
export class UsageError extends VhostUserError {
  constructor(message: string) {
    super('VHOST_INVALID_ARGUMENT', message);
    this.name = 'UsageError';
  }
}

export function isUsageError(e: unknown): e is UsageError {
  return e instanceof UsageError;
}

/** `imageSize` → `image-size`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * Parses `argv` (the words after the command name) against `specs`.
 * Throws {@link UsageError} for an unknown option, a missing or malformed
 * value, or a missing required option; `where` prefixes the messages
 * (e.g. `probe`) so the one-line error says which command complained.
 */
export function parseArgs<O extends OptionSpecs>(
  specs: O,
  argv: readonly string[],
  opts: { where?: string; allowPositionals?: boolean } = {},
): ParseResult<O> {
  const byFlag = new Map<string, string>();
  for (const key of Object.keys(specs)) {
    byFlag.set(`--${flagName(key)}`, key);
    const short = specs[key]!.short;
    if (short) byFlag.set(`-${short}`, key);
  }
  const where = opts.where ? `${opts.where}: ` : '';
  const hint = `see 'vhost-user ${opts.where ? `${opts.where} ` : ''}--help'`;
  const fail = (msg: string): never => {
    throw new UsageError(`${where}${msg} (${hint})`);
  };

  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  if (argv.some((a, i) => (a === '--help' || a === '-h') && !argv.slice(0, i).includes('--'))) {
    return { help: true, options: values as ParsedOptions<O>, positionals };
  }
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!word.startsWith('-') || word === '-') {
      positionals.push(word);
      continue;
    }
    const eq = word.indexOf('=');
    const flag = eq > 0 ? word.slice(0, eq) : word;
    const key = byFlag.get(flag);
    if (key === undefined) fail(`unknown option ${flag}`);
    const spec = specs[key!]!;
    let raw: string | undefined = eq > 0 ? word.slice(eq + 1) : undefined;
    if (raw === undefined && spec.type !== 'boolean') {
      const next = argv[i + 1];
      // A following option is a forgotten value, not the value itself.
      if (next === undefined || (next.startsWith('--') && next.length > 2)) fail(`${flag} needs a value`);
      raw = next!;
      i++;
    }
    values[key!] = convert(spec, flag, raw, fail);
  }
  if (positionals.length && !opts.allowPositionals) fail(`unexpected argument '${positionals[0]}'`);
  for (const [key, spec] of Object.entries(specs)) {
    if (values[key] !== undefined) continue;
    if (spec.default !== undefined) values[key] = spec.default;
    else if (spec.type === 'boolean') values[key] = false;
    else if (spec.required) fail(`--${flagName(key)} is required`);
  }
  return { help: false, options: values as ParsedOptions<O>, positionals };
}

function convert(spec: OptionSpec, flag: string, raw: string | undefined, fail: (m: string) => never): unknown {
  switch (spec.type) {
    case 'boolean':
      if (raw === undefined || raw === 'true') return true;
      if (raw === 'false') return false;
      return fail(`${flag} takes no value or true/false, got '${raw}'`);
    case 'string':
      return raw;
    case 'enum':
      if (!spec.choices?.includes(raw!)) fail(`${flag} must be one of ${spec.choices?.join(', ')}, got '${raw}'`);
      return raw;
    case 'number': {
      const n = raw!.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(n)) fail(`${flag} needs a number, got '${raw}'`);
      if (spec.integer && !Number.isInteger(n)) fail(`${flag} needs an integer, got '${raw}'`);
      if (spec.min !== undefined && n < spec.min) fail(`${flag} must be at least ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) fail(`${flag} must be at most ${spec.max}, got ${n}`);
      return n;
    }
  }
}

/** Usage text for a command: `usage` line, optional description, one line per option. */
export function formatHelp(usage: string, description: string, specs: OptionSpecs): string {
  const rows: [string, string][] = Object.entries(specs).map(([key, s]) => {
    const names = `${s.short ? `-${s.short}, ` : ''}--${flagName(key)}`;
    const value = s.type === 'boolean' ? '' : ` ${s.type === 'enum' && !s.valueName ? (s.choices ?? []).join('|') : (s.valueName ?? key.toUpperCase())}`;
    const notes = [s.required ? 'required' : '', s.default !== undefined && s.type !== 'boolean' ? `default: ${s.default}` : '']
      .filter(Boolean)
      .join(', ');
    return [`${names}${value}`, `${s.description}${notes ? ` (${notes})` : ''}`];
  });
  rows.push(['-h, --help', 'show this help']);
  return [`Usage: ${usage}`, '', ...(description ? [description, ''] : []), 'Options:', ...table(rows), ''].join('\n');
}

/** Two columns, the first padded to its widest cell. */
export function table(rows: readonly (readonly [string, string])[], indent = '  '): string[] {
  const width = Math.max(0, ...rows.map(([a]) => a.length));
  return rows.map(([a, b]) => `${indent}${a.padEnd(width)}  ${b}`.trimEnd());
}
