/** Runs the built `vhost-user` CLI as a child process, as a user would. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const MAIN = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** What a Node child process ended with. */
export interface NodeRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node script ...args` as a child process, collecting its output; SIGKILL after `killAfterMs`. */
export function runNode(script: string, args: readonly string[], killAfterMs: number): Promise<NodeRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs the built CLI; async so that peers in this process keep answering meanwhile. */
export async function cli(args: string[], killAfterMs = 20_000): Promise<CliResult> {
  const t0 = Date.now();
  const r = await runNode(MAIN, args, killAfterMs);
  return { ...r, ms: Date.now() - t0 };
}

/** Exactly one stderr line naming `code`, no stack frames. */
export function expectOneErrorLine(r: CliResult, code: string): void {
  expect(r.stderr, r.stderr).to.match(new RegExp(`^vhost-user: ${code}( \\[[A-Z_]+\\])?: [^\\n]+\\n$`));
  expect(r.stderr).not.to.match(/\n\s+at /);
}

