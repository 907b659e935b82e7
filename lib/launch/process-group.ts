/**
 * Process groups for back-ends. A back-end is often started through a wrapper
 * (`sh -c`, `npx`, `stdbuf`, `env`, `sudo`) that forks the real program rather
 * than exec'ing it, and a back-end may fork helpers of its own: signalling the
 * pid we started reaches none of those. So each back-end runs in a process group
 * of its own (pgid = the pid we started) and is stopped by signalling the group.
 *
 * If this process dies without running its 'exit' handlers (SIGKILL, a crash in
 * native code), the kernel's parent-death signal (`setpriv --pdeathsig`) reaches
 * only our direct child: it is cleared in the children that child forks. So one
 * watchdog per process, a POSIX shell reading "+PGID" / "-PGID" lines on a pipe
 * from us, kills every group still registered when it reads end-of-file, which
 * the kernel delivers when our end of the pipe closes, however we died. It is
 * outside the groups it guards, so the pid we report stays the back-end's own
 * (the fd-leak checks read /proc/PID/fd) and the back-end's exit status is its
 * own; and it needs nothing built at install time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * The watchdog: ignores the signals a terminal or a group kill of our own group
 * would send it, keeps the registered groups in a space-separated list, and on
 * end-of-file kills each with SIGKILL (by group id, never by name).
 */
const WATCHDOG_SCRIPT = `trap '' HUP INT QUIT TERM PIPE
g=' '
while read -r op id; do
  case $op in
    +) g="$g$id " ;;
    -) case $g in *" $id "*) g="\${g%% $id *} \${g#* $id }" ;; esac ;;
  esac
done
for id in $g; do kill -s KILL -- "-$id" 2>/dev/null; done
`;

const guarded = new Set<number>();
let watchdog: ChildProcess | undefined;

function send(line: string): void {
  // A new watchdog is told every group still guarded, which already covers this line.
  if (watchdogPid() === undefined) return startWatchdog();
  // A pipe write is attempted at once (libuv writes before queueing), so the line is in the
  // kernel's pipe buffer before spawnBackend's caller can do anything else.
  watchdog!.stdin?.write(line);
}

function startWatchdog(): void {
  const child = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT], {
    stdio: ['pipe', 'ignore', 'ignore'],
    // Its own session: a terminal's SIGINT to our foreground group does not reach it.
    detached: true,
    cwd: '/',
  });
  child.on('error', () => {});
  child.stdin?.on('error', () => {});
  // Neither the process nor the pipe keeps our event loop alive.
  child.unref();
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  watchdog = child;
  if (child.pid === undefined) return;
  for (const pgid of guarded) child.stdin?.write(`+ ${pgid}\n`);
}

/** Registers `pgid` with the watchdog: if this process dies, the group is killed with SIGKILL. */
export function guardGroup(pgid: number): void {
  if (guarded.has(pgid)) return;
  guarded.add(pgid);
  send(`+ ${pgid}\n`);
}

/** Unregisters `pgid` (its processes are gone, so the number may be reused). */
export function releaseGroup(pgid: number): void {
  if (!guarded.delete(pgid)) return;
  send(`- ${pgid}\n`);
}

/**
 * Starts the watchdog now if it is not running. It is otherwise started by the first
 * back-end launch and then lives as long as this process (one pipe fd): leak checks call
 * this before their first snapshot so that fd is not counted against the first test that
 * launches a back-end.
 */
export function ensureWatchdog(): void {
  if (watchdogPid() === undefined) startWatchdog();
}

/** The watchdog's pid, if it is running (for tests). */
export function watchdogPid(): number | undefined {
  return watchdog && watchdog.exitCode === null && watchdog.signalCode === null ? watchdog.pid : undefined;
}

/**
 * Sends `signal` to every process of group `pgid`. Returns false when the group has
 * no process left (ESRCH), true otherwise.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/**
 * Pids of the living processes in group `pgid` (zombies, already dead and waiting
 * for their parent or init to reap them, are left out), read from /proc/PID/stat.
 */
export function processGroupMembers(pgid: number): number[] {
  // A cheap test first: no process at all in the group, zombies included.
  try {
    process.kill(-pgid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return [];
  }
  const members: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return members;
  }
  for (const name of entries) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue; // exited meanwhile
    }
    // proc(5): "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') members.push(Number(name));
  }
  return members;
}
