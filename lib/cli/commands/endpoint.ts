/**
 * Which side listens: `--socket PATH` (the back-end listens, this side connects) or
 * `--listen PATH` (this side listens and the back-end connects). Shared by net send/recv,
 * probe and conformance.
 */
import { UnixListener } from '../../transport/unix-listener.js';
import { UsageError, type OptionSpecs } from '../args.js';

/**
 * `--listen PATH`, server mode: this side listens and the back-end connects, as OVS
 * `dpdkvhostuserclient` ports and DPDK `client=1` do (vhost-user.rst: "the back-end can act as
 * client"). Shared by net send/recv, probe and conformance.
 */
export const listenOption = {
  listen: { type: 'string', valueName: 'PATH', description: 'listen on PATH and wait for the back-end to connect (OVS dpdkvhostuserclient, DPDK client=1)' },
} as const satisfies OptionSpecs;

/** Exactly one of --socket and --listen: which side listens. */
export function endpoint(command: string, args: { socket?: string | undefined; listen?: string | undefined }): { socket: string } | { listen: string } {
  if ((args.socket === undefined) === (args.listen === undefined)) {
    throw new UsageError(`${command}: give either --socket PATH (the back-end listens) or --listen PATH (the back-end connects) (see 'vhost-user ${command} --help')`);
  }
  return args.socket !== undefined ? { socket: args.socket } : { listen: args.listen! };
}

/**
 * Server mode: listens on `path`, waits up to `timeoutMs` for one back-end to connect, and
 * closes the listener again (removing the socket file) whatever happened; the accepted
 * connection stays open. A back-end that reconnects by itself (OVS) finds no socket afterwards.
 */
export async function acceptOnce<T>(path: string, accept: (listener: UnixListener) => Promise<T>): Promise<T> {
  const listener = UnixListener.listen(path);
  try {
    return await accept(listener);
  } finally {
    listener.close();
  }
}
