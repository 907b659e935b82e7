import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnixListener } from '../../lib/transport/unix-listener.js';
import { UnixStream } from '../../lib/transport/unix-stream.js';

/** A fresh socket path in its own temp dir; `cleanup()` removes the dir. */
export function tempSocketPath(name = 'vhost.sock'): { path: string; dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-test-'));
  return { path: join(dir, name), dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Two connected UnixStreams over a real AF_UNIX socket. */
export async function streamPair(): Promise<{ a: UnixStream; b: UnixStream; close(): void }> {
  const tmp = tempSocketPath();
  const listener = UnixListener.listen(tmp.path);
  try {
    const [a, b] = await Promise.all([UnixStream.connect(tmp.path), listener.accept(2000)]);
    return {
      a,
      b,
      close() {
        a.close();
        b.close();
      },
    };
  } finally {
    listener.close();
    tmp.cleanup();
  }
}
