/**
 * The reference back-end (lib/backend) as a separate process, `vhost-user serve`,
 * for what an in-process back-end cannot show: a back-end that is killed with
 * SIGKILL in the middle of traffic and started again on the same socket.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatFault, type Fault } from '../backend/faults.js';
import { BackendHandle, makeTempDir, spawnBackend, type BackendProcess } from './backend-process.js';

/** How {@link startReferenceBackend} starts `vhost-user serve`; each option maps to a serve flag. */
export interface ReferenceBackendProcessOptions {
  /** The device served (serve --device); default 'net' (a loopback: what is sent comes back). */
  device?: 'net' | 'blk';
  /** Default `<tempDir>/vhost-ref.sock`. A restarted back-end is given the same path. */
  socketPath?: string;
  /** Virtqueues offered (serve --queues). */
  queues?: number;
  /** blk: disk image file (serve --image): data outlives the process. */
  image?: string;
  /** blk without an image: memfd size in bytes (serve --size). */
  size?: number;
  /** blk: read-only (serve --read-only). */
  readOnly?: boolean;
  /** blk: hold each request this long before serving it (serve --latency-ms). */
  latencyMs?: number;
  /** blk: false does not offer INFLIGHT_SHMFD (serve --no-inflight). */
  inflight?: boolean;
  /** Misbehaviours to inject, for fault tests (serve --fault); default none. */
  faults?: readonly Fault[];
  /** Default 15 000 ms. */
  readyTimeoutMs?: number;
}

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/** A running `vhost-user serve`. Its stdout is one JSON event per line (see serve.ts). */
export class ReferenceBackendProcess extends BackendHandle {
  /** @internal Use {@link startReferenceBackend}. */
  constructor(
    proc: BackendProcess,
    /** The node arguments serve was started with: the CLI's main script, then `serve` and its flags. */
    readonly args: readonly string[],
  ) {
    super(proc);
  }

  /** The JSON events printed so far (listening, connection, violation, fault, disconnect, ...). */
  events(): {
    /** The event's name; the other keys depend on it. */
    event: string;
    [key: string]: unknown;
  }[] {
    return this.output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { event: string });
  }
}

/** Starts `vhost-user serve --json` and resolves once it listens. */
export async function startReferenceBackend(opts: ReferenceBackendProcessOptions = {}): Promise<ReferenceBackendProcess> {
  const tempDir = await makeTempDir('vhost-ref-');
  const socketPath = opts.socketPath ?? path.join(tempDir, 'vhost-ref.sock');
  const args = [MAIN, 'serve', '--json', '--socket', socketPath, '--device', opts.device ?? 'net'];
  if (opts.queues !== undefined) args.push('--queues', String(opts.queues));
  if (opts.image !== undefined) args.push('--image', opts.image);
  if (opts.size !== undefined) args.push('--size', String(opts.size));
  if (opts.readOnly) args.push('--read-only');
  if (opts.latencyMs !== undefined) args.push('--latency-ms', String(opts.latencyMs));
  if (opts.inflight === false) args.push('--no-inflight');
  if (opts.faults?.length) args.push('--fault', opts.faults.map(formatFault).join(','));
  const proc = await spawnBackend({
    command: process.execPath,
    args,
    socketPath,
    tempDir,
    readyTimeoutMs: opts.readyTimeoutMs,
    ready: (b) => b.output().includes('"event":"listening"'),
    readyLabel: `socket ${socketPath} (the 'listening' event)`,
  });
  return new ReferenceBackendProcess(proc, args);
}
