/**
 * `vhost-user conformance`: runs the back-end conformance suite (lib/conformance)
 * against a back-end listening on --socket, or one it starts itself with --spawn.
 * Text output streams one line per check and ends with the findings and a
 * summary; --format json|junit prints one document at the end (or writes it to
 * --output). Exit status 0 once the suite ran, whatever it found, unless --strict.
 */
import { appliesTo, CONFORMANCE_DEVICES, matchesOnly } from '../../conformance/check.js';
import { allChecks } from '../../conformance/checks/index.js';
import { formatJson, formatJunit, formatResultLine, formatTextFooter } from '../../conformance/report.js';
import { runConformance } from '../../conformance/runner.js';
import { UsageError } from '../args.js';
import { nodeFileSystem } from '../../file-system.js';
import { defineCommand } from '../command.js';
import { endpoint, listenOption } from './endpoint.js';

export default defineCommand({
  name: 'conformance',
  summary: 'check a back-end against the vhost-user spec: pass, fail with evidence, or skip per rule',
  description:
    'Runs the conformance suite against the back-end on --socket: handshake and feature negotiation,\n' +
    'REPLY_ACK per message type, ring states, GET_VRING_BASE after traffic, memory tables and slots,\n' +
    'config space, inflight fds, dirty logging, SEND_RARP, reset, reconnect, malformed messages and fd\n' +
    'leaks. Each check names the spec rule it enforces and reports pass, fail (with the messages\n' +
    'exchanged) or skip (with the reason, e.g. a feature not offered). Net data-plane checks need a\n' +
    'back-end that sends frames back (testpmd --forward-mode=io, the reference loopback).\n' +
    '\n' +
    "--spawn 'CMD' starts the back-end with `sh -c 'exec CMD'` (CMD must listen on --socket), notices\n" +
    'when a check makes it crash (a finding of that check) and starts it again. A back-end that exits\n' +
    'with code 0 once its front-end leaves (virtiofsd) is detected as one-shot and started again for\n' +
    'every check and wherever a check needs a new front-end; only a non-zero exit or a signal is a crash. CMD runs in a\n' +
    'process group of its own, stopped as a whole: what a wrapper (npx, sh -c) started in it is stopped too.\n' +
    '\n' +
    '--listen PATH runs the suite in server mode: every connection a check needs is one the back-end\n' +
    'opens to PATH (OVS dpdkvhostuserclient, DPDK client=1; they reconnect about once a second).',
  options: {
    socket: { type: 'string', valueName: 'PATH', description: 'the back-end socket (the back-end listens); or give --listen' },
    ...listenOption,
    device: { type: 'enum', choices: CONFORMANCE_DEVICES, default: 'generic', description: 'device the back-end serves (net and blk add data-plane and config checks)' },
    spawn: { type: 'string', valueName: 'CMD', description: 'start the back-end with this command, and restart it after a crash' },
    format: { type: 'enum', choices: ['text', 'json', 'junit'], default: 'text', description: 'output format' },
    output: { type: 'string', valueName: 'FILE', description: 'write the json/junit document to FILE instead of stdout' },
    only: { type: 'string', valueName: 'PATTERN', description: "run only checks whose id starts with PATTERN or matches it (* wildcards, comma-separated), e.g. 'rings,negative.mem-*'" },
    timeout: { type: 'number', integer: true, min: 100, default: 2000, valueName: 'MS', description: 'deadline for each reply, and for a back-end to refuse a malformed message' },
    checkTimeout: { type: 'number', integer: true, min: 1000, default: 10_000, valueName: 'MS', description: 'deadline for a check that sets none of its own' },
    pid: { type: 'number', integer: true, min: 1, valueName: 'PID', description: "the back-end's pid when not spawned (enables the fd-leak checks)" },
    strict: { type: 'boolean', description: 'exit 1 when any check fails' },
  },
  async run(args, io) {
    if (args.output !== undefined && args.format === 'text') throw new UsageError("conformance: --output needs --format json or junit (see 'vhost-user conformance --help')");
    const text = args.format === 'text';
    if (!allChecks.some((c) => appliesTo(c, args.device) && matchesOnly(c.id, args.only))) {
      throw new UsageError(`conformance: no check matches --only '${args.only ?? ''}' for device ${args.device} (see 'vhost-user conformance --help')`);
    }
    const where = endpoint('conformance', args);
    if ('listen' in where && args.spawn !== undefined) throw new UsageError("conformance: --spawn needs --socket, not --listen (see 'vhost-user conformance --help')");
    const report = await runConformance({
      ...where,
      device: args.device,
      timeoutMs: args.timeout,
      checkTimeoutMs: args.checkTimeout,
      ...(args.spawn !== undefined ? { spawn: args.spawn } : {}),
      ...(args.only !== undefined ? { only: args.only } : {}),
      ...(args.pid !== undefined ? { backendPid: args.pid } : {}),
      onStart: (check, i, total) => io.progress?.(`[${i + 1}/${total}] ${check.id}`),
      onResult: (r) => {
        if (text) io.stdout(`${formatResultLine(r)}\n`);
      },
    });
    if (text) io.stdout(formatTextFooter(report));
    else {
      const doc = args.format === 'json' ? formatJson(report) : formatJunit(report);
      if (args.output !== undefined) (io.fs ?? nodeFileSystem).writeFileSync(args.output, doc);
      else io.stdout(doc);
    }
    if (args.strict && report.summary.fail > 0) {
      io.stderr(`vhost-user: conformance: ${report.summary.fail} of ${report.checks.length} checks failed (--strict)\n`);
      return 1;
    }
    return 0;
  },
});
