/**
 * The suite's three outputs: text (one line per check as it runs, then a summary
 * and the evidence of each failure), JSON ({backend, checks, summary}) and JUnit
 * XML (one testcase per check: failures carry the evidence, skips the reason).
 */
import type { CheckResult } from './check.js';
import type { ConformanceReport } from './runner.js';

const LABEL = { pass: 'PASS', fail: 'FAIL', skip: 'SKIP' } as const;

/** `PASS rings.initially-disabled (12 ms): detail` */
export function formatResultLine(r: CheckResult): string {
  return `${LABEL[r.status]} ${r.id} (${r.ms} ms)${r.detail ? `: ${r.detail}` : ''}`;
}

/** One line: how many checks passed, failed and were skipped, and back-end restarts. */
export function formatSummary(report: ConformanceReport): string {
  const { pass, fail, skip } = report.summary;
  const { crashes, restarts: n } = report.backend;
  const oneShot = report.backend.oneShot ? ' (one-shot: it exits when its front-end leaves)' : '';
  const restarts = n ? `; back-end restarted ${n} time(s)${oneShot}, ${crashes} after a crash` : '';
  return `${report.checks.length} checks against ${report.backend.name} (${report.backend.device}): ${pass} passed, ${fail} failed, ${skip} skipped in ${(report.ms / 1000).toFixed(1)} s${restarts}`;
}

/** The part printed after the per-check lines: each failure's rule and evidence, then the summary. */
export function formatTextFooter(report: ConformanceReport): string {
  const out: string[] = [];
  for (const r of report.checks.filter((c) => c.status === 'fail')) {
    out.push('', `FAIL ${r.id}: ${r.title}`, `  rule: ${r.rule}`, `  finding: ${r.detail}`);
    if (r.evidence.length) out.push('  evidence:', ...r.evidence.map((l) => `    ${l}`));
  }
  out.push('', formatSummary(report));
  return `${out.join('\n')}\n`;
}

/** The whole text report: a line per check, then every failure with its evidence, then the summary. */
export function formatText(report: ConformanceReport): string {
  return `${report.checks.map(formatResultLine).join('\n')}\n${formatTextFooter(report)}`;
}

/** The JSON document: {"backend":…, "checks":[{id, rule, status, detail, …}], "summary":{pass, fail, skip}}. */
export function toJsonReport(report: ConformanceReport): object {
  return {
    backend: report.backend,
    checks: report.checks.map((r) => ({
      id: r.id,
      rule: r.rule,
      title: r.title,
      status: r.status,
      detail: r.detail,
      evidence: r.evidence,
      ms: r.ms,
      ...(r.crash !== undefined ? { crash: r.crash } : {}),
    })),
    summary: report.summary,
    ms: report.ms,
  };
}

/** The JSON report `{backend, checks, summary, ms}` (the report's fields), indented and newline-terminated. */
export function formatJson(report: ConformanceReport): string {
  return `${JSON.stringify(toJsonReport(report), null, 2)}\n`;
}

function xml(s: string): string {
  // XML 1.0 has no way to carry most control characters: drop them.
  return s
    // eslint-disable-next-line no-control-regex -- XML 1.0 forbids these characters: they are what is removed
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

/**
 * JUnit XML: one testsuite named after the back-end, one testcase per check (classname
 * `conformance.<area>`); failures carry rule, finding and evidence, skips the reason.
 */
export function formatJunit(report: ConformanceReport): string {
  const suite = `vhost-user conformance: ${report.backend.name}`;
  const cases = report.checks.map((r) => {
    const [area] = r.id.split('.');
    const open = `    <testcase classname="conformance.${xml(area ?? r.id)}" name="${xml(r.id)}" time="${(r.ms / 1000).toFixed(3)}"`;
    if (r.status === 'pass') return `${open}/>`;
    if (r.status === 'skip') return `${open}>\n      <skipped message="${xml(r.detail)}"/>\n    </testcase>`;
    const body = [`rule: ${r.rule}`, `finding: ${r.detail}`, ...(r.evidence.length ? ['evidence:', ...r.evidence] : [])].join('\n');
    return `${open}>\n      <failure message="${xml(r.detail)}" type="finding">${xml(body)}</failure>\n    </testcase>`;
  });
  const { pass, fail, skip } = report.summary;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="vhost-user conformance" tests="${pass + fail + skip}" failures="${fail}" skipped="${skip}" time="${(report.ms / 1000).toFixed(3)}">`,
    `  <testsuite name="${xml(suite)}" tests="${pass + fail + skip}" failures="${fail}" errors="0" skipped="${skip}" time="${(report.ms / 1000).toFixed(3)}">`,
    `    <properties><property name="device" value="${xml(report.backend.device)}"/><property name="socket" value="${xml(report.backend.socket)}"/><property name="crashes" value="${report.backend.crashes}"/><property name="restarts" value="${report.backend.restarts}"/><property name="one-shot" value="${report.backend.oneShot}"/></properties>`,
    ...cases,
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}
