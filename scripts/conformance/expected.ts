/**
 * The pinned conformance results of the back-ends in backends.ts, kept as data in
 * spec/conformance/expected/ (one JSON file per back-end and version series): what
 * each check is expected to end in, compared with a live run by the specs
 * (spec/conformance/real-backends.spec.ts), rewritten from a live run by
 * `npm run conformance:record`, and rendered into README.md by `npm run readme:conformance`.
 *
 * A file: {"backend": id, "version": "22.11" | null, "recordedWith": "22.11.11", "device",
 * "checks": {"<check id>": "pass" | "skip" | {"status": "fail", "crash"?: "SIGSEGV" | "exit 1",
 * "finding": "README text", "detail"?: "regex the finding's detail matches"}}}.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CheckResult, CheckStatus, ConformanceReport } from '../../lib/conformance/index.js';
import { PINNED_BACKENDS, versionSeries } from './backends.js';

/** spec/conformance/expected/ of this checkout (this module runs from dist/scripts/conformance/). */
export const EXPECTED_DIR = fileURLToPath(new URL('../../../spec/conformance/expected/', import.meta.url));

export interface ExpectedCheck {
  status: CheckStatus;
  /** How a spawned back-end crashed during the check (CheckResult.crash). */
  crash?: string;
  /**
   * A crash seen in some runs only, after an outcome that holds in every run (say why in
   * `finding`): the run may end without a crash or with this one. Not a way to pin a flaky
   * outcome; a check whose status flips is fixed instead.
   */
  mayCrash?: string;
  /** For a fail: the finding in a few words, for the README's findings table. */
  finding?: string;
  /** A regular expression the check's detail must match. */
  detail?: string;
}

export interface ExpectedResults {
  /** A PinnedBackend id. */
  backend: string;
  /** The version series (`major.minor`) these results hold for; null for the reference back-end. */
  version: string | null;
  /** The full version they were recorded with. */
  recordedWith: string | null;
  device: string;
  checks: Record<string, CheckStatus | ExpectedCheck>;
}

/** The file name for `backend` at `version` (a series or a full version). */
export function expectedFileName(backend: string, version: string | null): string {
  return version === null ? `${backend}.json` : `${backend}-${versionSeries(version)}.json`;
}

export function expectedCheck(v: CheckStatus | ExpectedCheck): ExpectedCheck {
  return typeof v === 'string' ? { status: v } : v;
}

/** Every expected-results file in `dir`, by file name. */
export function loadExpected(dir = EXPECTED_DIR): Map<string, ExpectedResults> {
  const out = new Map<string, ExpectedResults>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    out.set(f, JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as ExpectedResults);
  }
  return out;
}

/** The results pinned for `backend` at `version`, or why there are none (a reason to skip, not to fail). */
export function expectedFor(
  all: Map<string, ExpectedResults>,
  backend: string,
  versioned: boolean,
  version: string | null,
): { file: string; expected: ExpectedResults } | { reason: string } {
  if (versioned && version === null) return { reason: `${backend}: its version could not be read, so no pinned results apply` };
  const file = expectedFileName(backend, versioned ? version : null);
  const expected = all.get(file);
  if (expected) return { file, expected };
  const have = [...all.values()].filter((e) => e.backend === backend).map((e) => e.version);
  return {
    reason: `${backend} ${version}: no pinned results (spec/conformance/expected/${file}; pinned: ${have.length ? have.join(', ') : 'none'}); record them with npm run conformance:record -- ${backend}`,
  };
}

function oneLine(s: string, max = 300): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/** One line per check whose outcome differs from `expected` (empty: none does). */
export function differences(report: ConformanceReport, expected: ExpectedResults): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const r of report.checks) {
    seen.add(r.id);
    const raw = expected.checks[r.id];
    if (raw === undefined) {
      out.push(`${r.id}: new check, nothing pinned; got ${r.status}: ${oneLine(r.detail)}`);
      continue;
    }
    const e = expectedCheck(raw);
    if (e.status !== r.status) {
      out.push(`${r.id}: expected ${e.status}${e.finding ? ` (${e.finding})` : ''}, got ${r.status}: ${oneLine(r.detail)}`);
    } else if ((e.crash ?? null) !== (r.crash ?? null) && !(e.mayCrash !== undefined && e.crash === undefined && r.crash === e.mayCrash)) {
      out.push(`${r.id}: expected ${e.crash ? `a crash (${e.crash})` : 'no crash'}, got ${r.crash ? `a crash (${r.crash})` : 'none'}: ${oneLine(r.detail)}`);
    } else if (e.detail !== undefined && !new RegExp(e.detail).test(r.detail)) {
      out.push(`${r.id}: ${r.status} as expected, but the detail does not match /${e.detail}/: ${oneLine(r.detail)}`);
    }
  }
  for (const [id, raw] of Object.entries(expected.checks)) {
    if (!seen.has(id)) out.push(`${id}: expected ${expectedCheck(raw).status}, not run (the check is gone or no longer applies)`);
  }
  return out;
}

/** `SIGSEGV` → `killed by SIGSEGV`; `exit 1` → `exited with code 1`. */
export function describeCrash(crash: string): string {
  return crash.startsWith('SIG') ? `killed by ${crash}` : crash.replace(/^exit /, 'exited with code ');
}

/** A first wording of a finding, from its detail (hand-edited in the file afterwards where it says too little). */
export function draftFinding(r: CheckResult): string {
  if (r.crash !== undefined) {
    const said = /its output meanwhile: (.*)$/.exec(r.detail)?.[1]?.split(' | ').at(-1);
    return said && said !== '(none)' ? `\`${oneLine(said, 100)}\`` : 'crashed';
  }
  const accepted = /^accepted: acknowledged with 0/.exec(r.detail);
  // Whether it also closed right after is timing (a 150 ms window), so the finding does not say.
  if (accepted) return 'acked 0';
  return oneLine(r.detail, 120);
}

/**
 * Expected results from a live run. A check whose status and crash are unchanged keeps its
 * hand-written finding and detail pattern from `previous`.
 */
export function recordExpected(report: ConformanceReport, backend: string, version: string | null, previous?: ExpectedResults): ExpectedResults {
  const checks: ExpectedResults['checks'] = {};
  for (const r of report.checks) {
    if (r.status !== 'fail') {
      checks[r.id] = r.status;
      continue;
    }
    const old = previous?.checks[r.id] !== undefined ? expectedCheck(previous.checks[r.id]!) : undefined;
    const sometimes = old?.mayCrash !== undefined && (r.crash === undefined || r.crash === old.mayCrash);
    const same = old?.status === 'fail' && ((old.crash ?? null) === (r.crash ?? null) || sometimes);
    // Unanchored: a crash after the acceptance wraps the detail in the crash report.
    const accepted = /^accepted: acknowledged with 0/.test(r.detail) ? 'accepted: acknowledged with 0' : undefined;
    const e: ExpectedCheck = { status: 'fail' };
    if (same && sometimes) e.mayCrash = old.mayCrash!;
    else if (r.crash !== undefined) e.crash = r.crash;
    e.finding = same && old.finding ? old.finding : draftFinding(r);
    const detail = same ? old.detail : accepted;
    if (detail !== undefined) e.detail = detail;
    checks[r.id] = e;
  }
  return { backend, version: version === null ? null : versionSeries(version), recordedWith: version, device: report.backend.device, checks };
}

export function formatExpected(e: ExpectedResults): string {
  return `${JSON.stringify(e, null, 2)}\n`;
}

export const README_BEGIN = '<!-- conformance-results:begin (generated by npm run readme:conformance from spec/conformance/expected/; do not edit) -->';
export const README_END = '<!-- conformance-results:end -->';

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function order(e: ExpectedResults): number {
  const i = PINNED_BACKENDS.findIndex((b) => b.id === e.backend);
  return i < 0 ? PINNED_BACKENDS.length : i;
}

function label(e: ExpectedResults): string {
  const b = PINNED_BACKENDS.find((p) => p.id === e.backend);
  const name = b?.setup ?? e.backend;
  return e.version === null ? name : name.replace(/^(\S+)/, `$1 ${e.version}`);
}

function counts(e: ExpectedResults): { pass: number; fail: number; skip: number; crashes: number } {
  const c = { pass: 0, fail: 0, skip: 0, crashes: 0 };
  for (const v of Object.values(e.checks)) {
    const x = expectedCheck(v);
    c[x.status]++;
    if (x.crash !== undefined) c.crashes++;
  }
  return c;
}

/** The README section between the markers: the results table, then the findings of the real back-ends. */
export function renderReadmeSection(all: Map<string, ExpectedResults>): string {
  const files = [...all.values()].sort((a, b) => order(a) - order(b) || (a.version ?? '').localeCompare(b.version ?? ''));
  const lines = ['| back-end | device | pass | fail | skip | crashes |', '| --- | --- | --- | --- | --- | --- |'];
  for (const e of files) {
    const c = counts(e);
    lines.push(`| ${cell(label(e))} | ${e.device} | ${c.pass} | ${c.fail} | ${c.skip} | ${c.crashes} |`);
  }
  const real = files.filter((e) => e.version !== null);
  const failing = new Set<string>();
  for (const e of real) for (const [id, v] of Object.entries(e.checks)) if (expectedCheck(v).status === 'fail') failing.add(id);
  // Rows in the suite's order (the first file that has the check), identical rows merged.
  const ids = [...new Set(files.flatMap((e) => Object.keys(e.checks)))].filter((id) => failing.has(id));
  const rows = new Map<string, string[]>();
  for (const id of ids) {
    const cells = real.map((e) => {
      const raw = e.checks[id];
      if (raw === undefined) return '–';
      const x = expectedCheck(raw);
      if (x.status !== 'fail') return x.status;
      const finding = x.finding ?? 'fail';
      return x.crash !== undefined ? `**${describeCrash(x.crash)}**: ${finding}` : finding;
    });
    const key = cells.join('\u0000');
    rows.set(key, [...(rows.get(key) ?? []), id]);
  }
  lines.push('', `Findings (checks that fail on a real back-end; – : the check does not apply to the device):`, '');
  lines.push(`| check | ${real.map((e) => cell(`${e.backend} ${e.version}`)).join(' | ')} |`, `| --- |${real.map(() => ' --- |').join('')}`);
  for (const [key, group] of rows) {
    const area = group[0]!.split('.')[0]!;
    const names = group.map((id, i) => (i > 0 && id.startsWith(`${area}.`) ? id.slice(area.length + 1) : id)).join(', ');
    lines.push(`| ${cell(names)} | ${key.split('\u0000').map(cell).join(' | ')} |`);
  }
  return `${README_BEGIN}\n${lines.join('\n')}\n${README_END}`;
}

/** `readme` with the section between the markers replaced; throws if the markers are missing. */
export function replaceReadmeSection(readme: string, section: string): string {
  const a = readme.indexOf(README_BEGIN);
  const b = readme.indexOf(README_END);
  if (a < 0 || b < a) throw new Error(`README.md has no ${README_BEGIN} ... ${README_END} section`);
  return readme.slice(0, a) + section + readme.slice(b + README_END.length);
}

/** The section currently in `readme`, markers included, or null. */
export function readmeSection(readme: string): string | null {
  const a = readme.indexOf(README_BEGIN);
  const b = readme.indexOf(README_END);
  return a < 0 || b < a ? null : readme.slice(a, b + README_END.length);
}
