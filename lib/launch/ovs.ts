/**
 * Open vSwitch with DPDK (Debian `openvswitch-switch-dpdk`, OVS 3.1 / DPDK 22.11) as a
 * vhost-user back-end: a private ovsdb-server and ovs-vswitchd, a netdev bridge, vhost-user
 * ports of either kind, OpenFlow rules and port counters.
 *
 * Nothing system-wide is touched: the DPDK build of ovs-vswitchd is run by its path (no
 * update-alternatives, no systemd), OVS_RUNDIR / OVS_DBDIR / OVS_LOGDIR / OVS_SYSCONFDIR point
 * into a temp dir of our own, the database is created there from the installed schema, and every
 * ovs-vsctl / ovs-ofctl / ovs-appctl call names that database or control socket. Both daemons run
 * in the foreground, each in a process group of its own (see backend-process.ts), so stop() ends
 * them by process group and removes the directory and DPDK's runtime files.
 *
 * DPDK runs without hugepages: `--no-huge --legacy-mem` (without `--legacy-mem` OVS adds
 * `--in-memory`, which cannot be combined with `--no-huge`), `per-port-memory=true` (the shared
 * mempool asks for 262,144 mbufs and fails in 1 GiB), `pmd-maxsleep` so an idle PMD thread sleeps
 * instead of burning its core.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { VhostUserError } from '../errors.js';
import { findExecutable, isSocket, makeTempDir, spawnBackend, type BackendProcess, type ExitStatus } from './backend-process.js';
import { dpdkRuntimeDir } from './dpdk-testpmd.js';

/** Where Debian's `openvswitch-switch-dpdk` installs the DPDK build of ovs-vswitchd. */
export const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
/** The OVS database schema (`openvswitch-common`). */
export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

/**
 * The two vhost-user port types of OVS-DPDK: `dpdkvhostuser` (OVS listens at
 * `OVS_RUNDIR/NAME`, the front-end connects; deprecated upstream) and `dpdkvhostuserclient`
 * (OVS connects to `options:vhost-server-path`, where the front-end listens; OVS reconnects
 * by itself when the front-end goes away).
 */
export type OvsPortKind = 'dpdkvhostuser' | 'dpdkvhostuserclient';

/** One vhost-user port on the bridge. */
export interface OvsPortOptions {
  /** Port and interface name (also the socket's file name for `dpdkvhostuser`). */
  name: string;
  /** Default 'dpdkvhostuser'. */
  kind?: OvsPortKind;
  /** VLAN access port: frames enter the bridge tagged with this VID and leave it stripped. */
  tag?: number;
  /** The OpenFlow port number to ask for (`ofport_request`); default: OVS picks one. */
  ofport?: number;
  /** `dpdkvhostuserclient` only: where the front-end listens; default `<tempDir>/<name>.sock`. */
  socketPath?: string;
  /** `mtu_request` of the interface. */
  mtu?: number;
}

/** A port as created: its name, kind, socket and OpenFlow port number. */
export interface OvsPort {
  /** Port and interface name. */
  readonly name: string;
  /** Which side listens. */
  readonly kind: OvsPortKind;
  /** The vhost-user socket: OVS's (dpdkvhostuser) or the front-end's (dpdkvhostuserclient). */
  readonly socketPath: string;
  /** OpenFlow port number, for flows (`in_port=`, `output:`). */
  readonly ofport: number;
  /** VLAN tag of an access port, or null for a trunk. */
  readonly tag: number | null;
}

/** How {@link startOvs} starts OVS-DPDK. */
export interface OvsOptions {
  /** Bridge name; default 'br0'. */
  bridge?: string;
  /** Ports to create once the bridge is up; more can be added with addPort(). */
  ports?: readonly OvsPortOptions[];
  /** `dpdk-lcore-mask` (non-PMD threads); default '0x1'. */
  lcoreMask?: string;
  /** `pmd-cpu-mask` (the PMD thread polling the ports); default '0x2'. */
  pmdCpuMask?: string;
  /** `pmd-maxsleep` in microseconds: an idle PMD sleeps up to this long. Default 10 000. */
  pmdMaxSleepUs?: number;
  /** EAL `-m` with `--no-huge`; default 1024. */
  memoryMb?: number;
  /** Deadline for each daemon to come up and for each ovs-vsctl call; default 20 000 ms. */
  readyTimeoutMs?: number;
  /**
   * `other_config:userspace-tso-enable=true` (default false): OVS's userspace datapath
   * takes TSO frames whole and its vhost-user ports offer HOST_TSO4/6 (and CSUM) to
   * front-ends. OVS reads the key once, when ovs-vswitchd starts (OVS
   * Documentation/topics/userspace-tso.rst: changing it needs a restart), so it is
   * written with the DPDK settings, before ovs-vswitchd runs and before any port exists.
   */
  userspaceTso?: boolean;
}

/**
 * A port's counters as OpenFlow 1.4 port stats report them (current, unlike the Interface
 * `statistics` column, which OVS refreshes every 5 s). OVS 3.1 with DPDK 22.11 cannot read the
 * packet and byte counters of vhost-user ports (they show as `?`: null here); its own drop
 * counters (custom statistics) it does report.
 */
export interface OvsPortStats {
  /** Frames OVS took from the port, i.e. that the front-end transmitted; null when OVS cannot tell. */
  rxPackets: number | null;
  /** Frames OVS put into the port, i.e. into the front-end's RX ring; null when OVS cannot tell. */
  txPackets: number | null;
  /** Frames OVS dropped on their way out of the port; null when OVS cannot tell. */
  txDropped: number | null;
  /** `ovs_tx_failure_drops`: frames dropped because the front-end's RX ring had no free buffer (after the retries). */
  txFailureDrops: number;
  /** `ovs_tx_retries`: enqueue retries because the RX ring was full. */
  txRetries: number;
  /** `ovs_tx_mtu_exceeded_drops`: frames dropped for exceeding the port's MTU. */
  txMtuExceededDrops: number;
  /** Every counter OVS reported, by its own name (`rx_packets` ... only when known). */
  raw: Record<string, number>;
}

const POLL_MS = 50;
let prefixCounter = 0;

/** Parses `{a=1, b=2}` (ovs-vsctl map output) into numbers. */
export function parseOvsMap(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/"?([A-Za-z0-9_]+)"?=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/**
 * Parses one port of `ovs-ofctl -O OpenFlow14 dump-ports BR PORT`: the `rx pkts=..` and
 * `tx pkts=..` lines and the `CUSTOM Statistics` name=value pairs.
 */
export function parseOfctlPortStats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const dir of ['rx', 'tx'] as const) {
    const line = new RegExp(`${dir} pkts=(\\d+|\\?), bytes=(\\d+|\\?), drop=(\\d+|\\?), errs=(\\d+|\\?)`).exec(text);
    if (!line) continue;
    // '?': OVS could not read the counter (vhost-user ports in OVS 3.1).
    const fields = ['packets', 'bytes', 'dropped', 'errors'];
    fields.forEach((f, i) => {
      if (line[i + 1] !== '?') out[`${dir}_${f}`] = Number(line[i + 1]);
    });
  }
  const custom = text.indexOf('CUSTOM Statistics');
  if (custom >= 0) for (const m of text.slice(custom).matchAll(/([A-Za-z0-9_]+)=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

function toPortStats(raw: Record<string, number>): OvsPortStats {
  const n = (k: string) => raw[k] ?? 0;
  return {
    rxPackets: raw['rx_packets'] ?? null,
    txPackets: raw['tx_packets'] ?? null,
    txDropped: raw['tx_dropped'] ?? null,
    txFailureDrops: n('ovs_tx_failure_drops'),
    txRetries: n('ovs_tx_retries'),
    txMtuExceededDrops: n('ovs_tx_mtu_exceeded_drops'),
    raw,
  };
}

/**
 * The counters of port `port` of any running OVS (the system's, or one started by
 * {@link startOvs}), found through its run directory as OVS's own tools find it:
 * `RUNDIR/db.sock` for ovs-vsctl (which bridge, which OpenFlow port) and
 * `RUNDIR/BRIDGE.mgmt` for ovs-ofctl (OpenFlow 1.4 port stats, with OVS-DPDK's drop counters).
 */
export async function readOvsPortStats(port: string, rundir = process.env['OVS_RUNDIR'] ?? '/var/run/openvswitch', timeoutMs = 5000): Promise<OvsPortStats> {
  const env = { OVS_RUNDIR: rundir };
  const vsctl = (...args: string[]) => runOvsTool('ovs-vsctl', [`--db=unix:${path.join(rundir, 'db.sock')}`, `--timeout=${Math.ceil(timeoutMs / 1000)}`, ...args], env, timeoutMs);
  const bridge = await vsctl('port-to-br', port);
  const ofport = await vsctl('get', 'Interface', port, 'ofport');
  const text = await runOvsTool('ovs-ofctl', ['-O', 'OpenFlow14', 'dump-ports', `unix:${path.join(rundir, `${bridge}.mgmt`)}`, ofport], env, timeoutMs);
  if (!text.includes('tx pkts=')) throw new VhostUserError('VHOST_BACKEND_FAILED', `unexpected dump-ports output for ${port}:\n${text}`);
  return toPortStats(parseOfctlPortStats(text));
}

/** Whether the DPDK build of OVS and its tools are installed (`openvswitch-switch-dpdk`). */
export function ovsDpdkInstalled(): boolean {
  return (
    findExecutable(OVS_VSWITCHD_DPDK) !== null &&
    ['ovsdb-server', 'ovsdb-tool', 'ovs-vsctl', 'ovs-ofctl', 'ovs-appctl'].every((e) => findExecutable(e) !== null)
  );
}

/** A running private OVS-DPDK: ovsdb-server, ovs-vswitchd, one netdev bridge. Use {@link startOvs}. */
export class OvsBackend {
  /** OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR and OVS_SYSCONFDIR: removed by stop(). */
  readonly tempDir: string;
  /** The bridge. */
  readonly bridge: string;
  /** The database socket every ovs-vsctl call names (`--db=unix:...`). */
  readonly dbSocket: string;
  /** EAL `--file-prefix`, unique per instance. */
  readonly filePrefix: string;
  readonly #ports = new Map<string, OvsPort>();
  readonly #env: NodeJS.ProcessEnv;
  readonly #timeoutMs: number;
  readonly #ovsdb: BackendProcess;
  #vswitchd: BackendProcess;
  #generation = 0;
  #stopping: Promise<void> | undefined;

  /** @internal Use {@link startOvs}. */
  constructor(init: { tempDir: string; bridge: string; filePrefix: string; ovsdb: BackendProcess; vswitchd: BackendProcess; env: NodeJS.ProcessEnv; timeoutMs: number }) {
    this.tempDir = init.tempDir;
    this.bridge = init.bridge;
    this.dbSocket = path.join(init.tempDir, 'db.sock');
    this.filePrefix = init.filePrefix;
    this.#ovsdb = init.ovsdb;
    this.#vswitchd = init.vswitchd;
    this.#env = init.env;
    this.#timeoutMs = init.timeoutMs;
  }

  /** pid (and process group id) of the running ovs-vswitchd; a new one after restartVswitchd(). */
  get vswitchdPid(): number {
    return this.#vswitchd.pid;
  }

  /** pid (and process group id) of ovsdb-server. */
  get ovsdbPid(): number {
    return this.#ovsdb.pid;
  }

  /** Whether both daemons are running. */
  get running(): boolean {
    return this.#ovsdb.running && this.#vswitchd.running;
  }

  /** Resolves when ovs-vswitchd (the current one) exits. */
  get vswitchdExited(): Promise<ExitStatus> {
    return this.#vswitchd.exited;
  }

  /** The ports created so far, in creation order. */
  get ports(): readonly OvsPort[] {
    return [...this.#ports.values()];
  }

  /** The port called `name`. */
  port(name: string): OvsPort {
    const p = this.#ports.get(name);
    if (!p) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `no port ${name} on ${this.bridge}`);
    return p;
  }

  /** The vhost-user socket of port `name` (OVS's, or where the front-end must listen). */
  socketPath(name: string): string {
    return this.port(name).socketPath;
  }

  /** Runs ovs-vsctl against this database and returns its stdout (trimmed). */
  vsctl(...args: string[]): Promise<string> {
    return this.#run('ovs-vsctl', [`--db=unix:${this.dbSocket}`, `--timeout=${Math.ceil(this.#timeoutMs / 1000)}`, ...args]);
  }

  /** Runs ovs-ofctl (it finds the bridge's management socket through OVS_RUNDIR) and returns its stdout. */
  ofctl(...args: string[]): Promise<string> {
    return this.#run('ovs-ofctl', args);
  }

  /** Runs ovs-appctl against the running ovs-vswitchd. */
  appctl(...args: string[]): Promise<string> {
    return this.#run('ovs-appctl', ['-t', path.join(this.tempDir, `ovs-vswitchd.${this.#generation}.ctl`), ...args]);
  }

  /**
   * Adds a vhost-user port and waits until ovs-vswitchd has applied it (and, for
   * `dpdkvhostuser`, until its socket exists). Resolves with its OpenFlow port number.
   */
  async addPort(opts: OvsPortOptions): Promise<OvsPort> {
    const kind = opts.kind ?? 'dpdkvhostuser';
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(opts.name)) {
      throw new VhostUserError('VHOST_INVALID_ARGUMENT', `port name must be 1-15 characters [A-Za-z0-9_.-], got '${opts.name}'`);
    }
    if (this.#ports.has(opts.name)) throw new VhostUserError('VHOST_INVALID_ARGUMENT', `port ${opts.name} exists already`);
    const socketPath = kind === 'dpdkvhostuser' ? path.join(this.tempDir, opts.name) : (opts.socketPath ?? path.join(this.tempDir, `${opts.name}.sock`));
    const iface = [`type=${kind}`];
    if (kind === 'dpdkvhostuserclient') iface.push(`options:vhost-server-path=${socketPath}`);
    if (opts.ofport !== undefined) iface.push(`ofport_request=${opts.ofport}`);
    if (opts.mtu !== undefined) iface.push(`mtu_request=${opts.mtu}`);
    const portCols = opts.tag !== undefined ? ['--', 'set', 'Port', opts.name, `tag=${opts.tag}`] : [];
    await this.vsctl('add-port', this.bridge, opts.name, '--', 'set', 'Interface', opts.name, ...iface, ...portCols);
    if (kind === 'dpdkvhostuser') await this.#until(() => isSocket(socketPath), `socket ${socketPath}`);
    const ofport = Number(await this.vsctl('get', 'Interface', opts.name, 'ofport'));
    const port: OvsPort = { name: opts.name, kind, socketPath, ofport, tag: opts.tag ?? null };
    this.#ports.set(opts.name, port);
    return port;
  }

  /** Removes a port from the bridge. */
  async deletePort(name: string): Promise<void> {
    this.port(name);
    await this.vsctl('del-port', this.bridge, name);
    this.#ports.delete(name);
  }

  /** `ovs-ofctl add-flow BRIDGE FLOW`, e.g. `priority=10,in_port=1,actions=drop`. */
  async addFlow(flow: string): Promise<void> {
    await this.ofctl('add-flow', this.bridge, flow);
  }

  /** `ovs-ofctl del-flows BRIDGE [MATCH]`: without a match every flow goes (NORMAL too: nothing is forwarded). */
  async deleteFlows(match?: string): Promise<void> {
    await this.ofctl('del-flows', this.bridge, ...(match !== undefined ? ['--strict', match] : []));
  }

  /** Replaces every flow by `flows` (one add-flow each). */
  async replaceFlows(flows: readonly string[]): Promise<void> {
    await this.ofctl('del-flows', this.bridge);
    for (const f of flows) await this.addFlow(f);
  }

  /** Back to the bridge's default: one flow, `priority=0,actions=NORMAL` (MAC learning switch). */
  async normal(): Promise<void> {
    await this.replaceFlows(['priority=0,actions=NORMAL']);
  }

  /** `ovs-ofctl dump-flows BRIDGE`: the flows with their packet counters. */
  dumpFlows(): Promise<string> {
    return this.ofctl('dump-flows', this.bridge);
  }

  /**
   * The port's counters, current: OpenFlow 1.4 port stats including OVS-DPDK's custom drop
   * counters (`ovs_tx_failure_drops`, `ovs_tx_retries`, ...). The Interface `statistics`
   * column has the same names but is refreshed only every 5 s (`stats-update-interval`).
   */
  async portStats(name: string): Promise<OvsPortStats> {
    return readOvsPortStats(this.port(name).name, this.tempDir, this.#timeoutMs);
  }

  /**
   * Waits until OVS reports the port's link `up` (a front-end connected and its rings are
   * running; `down` for the opposite), polling {@link OvsBackend.link}. Frames sent to the
   * port before that are flooded past it or dropped.
   */
  async waitLink(name: string, state: 'up' | 'down' = 'up', timeoutMs = this.#timeoutMs): Promise<void> {
    const iface = this.port(name).name;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = await this.link(iface);
      if (now === state) return;
      if (Date.now() > deadline) throw new VhostUserError('VHOST_TIMEOUT', `OVS port ${iface}: link ${now}, not ${state}, after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /**
   * The port's link state as OpenFlow reports it (`ovs-ofctl show`: LINK_DOWN or not). The
   * Interface `link_state` column can stay `down` after a restart of ovs-vswitchd although the
   * port runs; OpenFlow port status follows the port itself.
   */
  async link(name: string): Promise<'up' | 'down'> {
    const text = await this.ofctl('show', this.bridge);
    const at = text.indexOf(`(${this.port(name).name}):`);
    const state = at < 0 ? '' : (/state:\s*([^\n]*)/.exec(text.slice(at))?.[1] ?? '');
    return at < 0 || state.includes('LINK_DOWN') ? 'down' : 'up';
  }

  /** The Interface `statistics` column (`ovs-vsctl get Interface NAME statistics`), as OVS last stored it. */
  async interfaceStatistics(name: string): Promise<Record<string, number>> {
    return parseOvsMap(await this.vsctl('get', 'Interface', this.port(name).name, 'statistics'));
  }

  /**
   * Administrative link state (`ovs-ofctl mod-port BRIDGE PORT up|down`). A port that is down
   * neither takes frames from the front-end's TX ring nor puts any into its RX ring (OVS drops
   * them and counts them in tx_dropped).
   */
  async setLink(name: string, up: boolean): Promise<void> {
    await this.ofctl('mod-port', this.bridge, name, up ? 'up' : 'down');
  }

  /**
   * Stops ovs-vswitchd (SIGTERM, as `ovs-ctl stop` does) and starts it again on the same
   * database: the bridge, ports and (unless `keepFlows` is false) the flows come back.
   * Front-ends on `dpdkvhostuser` ports must reconnect; OVS reconnects to
   * `dpdkvhostuserclient` ones. Resolves once the new ovs-vswitchd has applied the database.
   */
  async restartVswitchd(options: { keepFlows?: boolean; downMs?: number } = {}): Promise<void> {
    const flows = options.keepFlows === false ? null : await this.ofctl('dump-flows', '--no-stats', this.bridge);
    await this.#vswitchd.stop();
    if (options.downMs) await new Promise((r) => setTimeout(r, options.downMs));
    this.#vswitchd = await startVswitchd(this.tempDir, this.#env, ++this.#generation, this.filePrefix, this.#timeoutMs);
    await untilExit(this.#vswitchd, this.vsctl('--', 'wait-until', 'Open_vSwitch', '.', 'dpdk_initialized=true'), 'initialising DPDK');
    // ovs-vsctl without --no-wait returns once ovs-vswitchd has applied the database (cur_cfg).
    await this.vsctl('set', 'Open_vSwitch', '.', 'external_ids:restarts=' + String(this.#generation));
    for (const p of this.#ports.values()) if (p.kind === 'dpdkvhostuser') await this.#until(() => isSocket(p.socketPath), `socket ${p.socketPath}`);
    if (flows !== null) {
      const lines = flows.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('NXST_FLOW') && !l.startsWith('OFPST_FLOW'));
      await this.replaceFlows(lines);
    }
  }

  /** The last lines of ovs-vswitchd's log file and output, and ovsdb-server's: for failure messages. */
  async logs(lines = 40): Promise<string> {
    const parts: string[] = [];
    for (const f of [`ovs-vswitchd.${this.#generation}.log`, 'ovsdb-server.log']) {
      const text = await readFile(path.join(this.tempDir, f), 'utf8').catch(() => '');
      parts.push(`--- ${f}`, ...text.trimEnd().split('\n').slice(-lines));
    }
    parts.push('--- ovs-vswitchd output', this.#vswitchd.outputTail(lines));
    return parts.join('\n');
  }

  /** Stops ovs-vswitchd, then ovsdb-server (each by process group), and removes the temp dir and DPDK's runtime files. Idempotent. */
  stop(graceMs = 3000): Promise<void> {
    return (this.#stopping ??= (async () => {
      await this.#vswitchd.stop(graceMs);
      await this.#ovsdb.stop(graceMs);
    })());
  }

  /** `await using` support: stop(). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #run(cmd: string, args: string[]): Promise<string> {
    return runOvsTool(cmd, args, this.#env, this.#timeoutMs);
  }

  async #until(cond: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new VhostUserError('VHOST_SPAWN_TIMEOUT', `OVS: ${what} not there after ${this.#timeoutMs} ms\n${await this.logs()}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

function runOvsTool(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) {
        reject(new VhostUserError('VHOST_BACKEND_FAILED', `${cmd} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      } else resolve(stdout.trim());
    });
  });
}

/** `work`, unless ovs-vswitchd exits first (DPDK failed to initialise): then a VHOST_SPAWN_FAILED quoting its output. */
async function untilExit<T>(vswitchd: BackendProcess, work: Promise<T>, what: string): Promise<T> {
  let exited: ((s: ExitStatus) => void) | undefined;
  const died = new Promise<ExitStatus>((r) => (exited = r));
  void vswitchd.exited.then((s) => exited?.(s));
  const r = await Promise.race([work.then((v) => ({ v })), died.then((s) => ({ s }))]);
  if ('v' in r) {
    exited = undefined;
    return r.v;
  }
  work.catch(() => {});
  const how = r.s.signal ? `was killed by ${r.s.signal}` : `exited with code ${r.s.code}`;
  throw new VhostUserError('VHOST_SPAWN_FAILED', `ovs-vswitchd (pid ${vswitchd.pid}) ${how} while ${what}; last output:\n${vswitchd.outputTail()}`);
}

async function startVswitchd(dir: string, env: NodeJS.ProcessEnv, generation: number, filePrefix: string, timeoutMs: number): Promise<BackendProcess> {
  // Each ovs-vswitchd owns a (empty) directory of its own, so stopping one for a restart
  // leaves the shared run directory (database, sockets, logs) in place.
  const own = path.join(dir, `vswitchd.${generation}`);
  await mkdir(own);
  const ctl = path.join(dir, `ovs-vswitchd.${generation}.ctl`);
  return spawnBackend({
    command: OVS_VSWITCHD_DPDK,
    args: [
      `unix:${path.join(dir, 'db.sock')}`,
      `--pidfile=${path.join(dir, `ovs-vswitchd.${generation}.pid`)}`,
      `--unixctl=${ctl}`,
      `--log-file=${path.join(dir, `ovs-vswitchd.${generation}.log`)}`,
      '-vconsole:off',
    ],
    socketPath: ctl,
    tempDir: own,
    env,
    mergeStderr: true,
    cleanupPaths: [dpdkRuntimeDir(filePrefix)],
    readyTimeoutMs: timeoutMs,
    readyLabel: `ovs-vswitchd control socket ${ctl}`,
  });
}

/**
 * Starts a private OVS-DPDK: creates the database from the installed schema, runs
 * ovsdb-server and the DPDK ovs-vswitchd (by path) in a fresh temp dir with a unique DPDK
 * file prefix, creates a netdev bridge (flow: NORMAL) and the given ports. On failure
 * everything started is stopped and removed, and the error quotes the logs.
 */
export async function startOvs(opts: OvsOptions = {}): Promise<OvsBackend> {
  if (!ovsDpdkInstalled()) {
    throw new VhostUserError('VHOST_SPAWN_FAILED', `OVS-DPDK is not installed (${OVS_VSWITCHD_DPDK}; apt-get install openvswitch-switch-dpdk)`);
  }
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  const bridge = opts.bridge ?? 'br0';
  const tempDir = await makeTempDir('vhost-ovs-');
  const env = { OVS_RUNDIR: tempDir, OVS_DBDIR: tempDir, OVS_LOGDIR: tempDir, OVS_SYSCONFDIR: tempDir, OVS_PKGDATADIR: '/usr/share/openvswitch' };
  const filePrefix = `ovs${process.pid}-${++prefixCounter}-${randomBytes(3).toString('hex')}`;
  const db = path.join(tempDir, 'conf.db');
  const dbSocket = path.join(tempDir, 'db.sock');
  let ovsdb: BackendProcess | undefined;
  let vswitchd: BackendProcess | undefined;
  let ovs: OvsBackend | undefined;
  try {
    await runOvsTool('ovsdb-tool', ['create', db, OVS_SCHEMA], env, timeoutMs);
    ovsdb = await spawnBackend({
      command: 'ovsdb-server',
      args: [db, `--remote=punix:${dbSocket}`, `--unixctl=${path.join(tempDir, 'ovsdb-server.ctl')}`, `--pidfile=${path.join(tempDir, 'ovsdb-server.pid')}`, `--log-file=${path.join(tempDir, 'ovsdb-server.log')}`, '-vconsole:off'],
      socketPath: dbSocket,
      // ovsdb-server owns the whole directory: its stop() (the last) removes it.
      tempDir,
      env,
      mergeStderr: true,
      readyTimeoutMs: timeoutMs,
    });
    const vsctl = (...args: string[]) => runOvsTool('ovs-vsctl', [`--db=unix:${dbSocket}`, `--timeout=${Math.ceil(timeoutMs / 1000)}`, ...args], env, timeoutMs);
    await vsctl('--no-wait', 'init');
    await vsctl(
      '--no-wait', 'set', 'Open_vSwitch', '.',
      'other_config:dpdk-init=true',
      `other_config:dpdk-extra=--no-huge --legacy-mem -m ${opts.memoryMb ?? 1024} --no-pci --file-prefix=${filePrefix}`,
      'other_config:per-port-memory=true',
      `other_config:dpdk-lcore-mask=${opts.lcoreMask ?? '0x1'}`,
      `other_config:pmd-cpu-mask=${opts.pmdCpuMask ?? '0x2'}`,
      `other_config:pmd-maxsleep=${opts.pmdMaxSleepUs ?? 10_000}`,
      `other_config:userspace-tso-enable=${opts.userspaceTso === true}`,
    );
    vswitchd = await startVswitchd(tempDir, env, 0, filePrefix, timeoutMs);
    ovs = new OvsBackend({ tempDir, bridge, filePrefix, ovsdb, vswitchd, env, timeoutMs });
    await untilExit(vswitchd, vsctl('--', 'wait-until', 'Open_vSwitch', '.', 'dpdk_initialized=true'), 'initialising DPDK');
    await vsctl('add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev');
    for (const p of opts.ports ?? []) await ovs.addPort(p);
    return ovs;
  } catch (e) {
    const logs = ovs ? await ovs.logs(20) : (vswitchd?.outputTail() ?? '');
    await vswitchd?.stop(0);
    await ovsdb?.stop(0);
    if (!ovsdb) await rm(tempDir, { recursive: true, force: true });
    if (e instanceof VhostUserError && e.code !== 'VHOST_BACKEND_FAILED') throw e;
    throw new VhostUserError('VHOST_SPAWN_FAILED', `OVS did not start: ${(e as Error).message}\n${logs}`);
  }
}
