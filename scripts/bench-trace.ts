/**
 * `npm run bench:trace`: what the tracing proxy costs a conversation. The
 * reference back-end runs as its own process (`vhost-user serve`), the proxy as
 * its own process (`vhost-user trace --format json --output /dev/null`), and this
 * process is the front-end. Measured direct and through the proxy: request
 * round trips per second (GET_FEATURES, one after another) and the time of a
 * whole VirtioNet start (negotiation, memory table, two rings; fds included).
 * The data path (rings, kicks, calls) does not pass through the proxy.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserClient } from '../lib/client/vhost-user-client.js';
import { VirtioNet } from '../lib/devices/net/virtio-net.js';
import { makeTempDir } from '../lib/launch/backend-process.js';
import { startReferenceBackend } from '../lib/launch/reference-backend.js';

const MAIN = fileURLToPath(new URL('../lib/cli/main.js', import.meta.url));
const ROUND_TRIPS = 5000;
const OPENS = 20;

async function measure(socket: string): Promise<{ roundTripsPerSec: number; openMs: number }> {
  const client = await VhostUserClient.connect(socket, { timeoutMs: 5000, connect: { timeoutMs: 5000 } });
  for (let i = 0; i < 200; i++) await client.getFeatures(); // warm up
  const t0 = performance.now();
  for (let i = 0; i < ROUND_TRIPS; i++) await client.getFeatures();
  const roundTripsPerSec = ROUND_TRIPS / ((performance.now() - t0) / 1000);
  client.close();
  const opens: number[] = [];
  for (let i = 0; i < OPENS; i++) {
    const t = performance.now();
    const net = await VirtioNet.open(socket, { queueSize: 256, timeoutMs: 5000 });
    opens.push(performance.now() - t);
    net.close();
  }
  opens.sort((a, b) => a - b);
  return { roundTripsPerSec, openMs: opens[Math.floor(opens.length / 2)]! };
}

const dir = await makeTempDir('vhost-bench-trace-');
const backend = await startReferenceBackend({ socketPath: path.join(dir, 'backend.sock') });
const listen = path.join(dir, 'trace.sock');
const proxy = spawn(process.execPath, [MAIN, 'trace', '--listen', listen, '--connect', backend.socketPath, '--format', 'json', '--output', '/dev/null'], { stdio: 'ignore' });
try {
  for (const deadline = Date.now() + 10_000; !existsSync(listen) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
  const direct = await measure(backend.socketPath);
  const traced = await measure(listen);
  const row = (name: string, m: { roundTripsPerSec: number; openMs: number }) =>
    `${name.padEnd(14)} ${Math.round(m.roundTripsPerSec).toString().padStart(8)} round trips/s   VirtioNet.open median ${m.openMs.toFixed(1)} ms`;
  process.stdout.write(`${row('direct', direct)}\n${row('through proxy', traced)}\n`);
} finally {
  proxy.kill('SIGTERM');
  await new Promise((r) => proxy.once('close', r));
  await backend.stop();
  await rm(dir, { recursive: true, force: true });
}
