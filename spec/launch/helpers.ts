import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import os from 'node:os';
import { expect } from 'chai';
import { processGroupMembers } from '../../lib/launch/index.js';

/** Asserts that no process has this pid any more. */
export function expectGone(pid: number): void {
  expect(() => process.kill(pid, 0)).to.throw().with.property('code', 'ESRCH');
}

export function expectRemoved(p: string): void {
  expect(existsSync(p), `${p} still exists`).to.equal(false);
}

/** Names of entries in os.tmpdir() starting with `prefix`. */
export async function tmpEntries(prefix: string): Promise<Set<string>> {
  return new Set((await readdir(os.tmpdir())).filter((n) => n.startsWith(prefix)));
}

/** Awaits `p`, which must reject; returns the rejection. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  expect.fail('expected a rejection');
}

/** proc(5) stat fields after "(comm) ": state, ppid, pgrp. */
function statFields(pid: string): { state: string; pgid: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, pgid: Number(f[2]) };
  } catch {
    return null;
  }
}

/** Living (not zombie) processes whose command line (arguments joined by spaces) contains `text`, with their process groups. */
export function processesMentioning(text: string): { pid: number; pgid: number; cmdline: string }[] {
  const found: { pid: number; pgid: number; cmdline: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${name}/cmdline`, 'latin1').replaceAll('\0', ' ');
    } catch {
      continue;
    }
    if (!cmdline.includes(text)) continue;
    const s = statFields(name);
    if (s && s.state !== 'Z') found.push({ pid: Number(name), pgid: s.pgid, cmdline });
  }
  return found;
}

/**
 * Records, every 25 ms until `stop()`, the process groups of processes whose command line
 * contains `text` (a unique socket path) and that `include` accepts (default all): the groups
 * a run started, whatever they forked.
 */
export function watchGroups(
  text: string,
  include: (p: { pid: number; cmdline: string }) => boolean = () => true,
): { seen: Set<number>; commands: Set<string>; stop(): Set<number> } {
  const seen = new Set<number>();
  const commands = new Set<string>();
  const poll = () => {
    for (const p of processesMentioning(text)) {
      if (!include(p)) continue;
      seen.add(p.pgid);
      commands.add(p.cmdline.trim());
    }
  };
  const timer = setInterval(poll, 25);
  return {
    seen,
    commands,
    stop() {
      clearInterval(timer);
      poll();
      return seen;
    },
  };
}

/**
 * Waits (at most `ms`: orphans are reparented to init and die within its scheduling) until no
 * living process is in any of `pgids`, then asserts it, naming what is left.
 */
export async function expectGroupsGone(pgids: Iterable<number>, ms = 3000): Promise<void> {
  const groups = [...pgids];
  const left = () => groups.flatMap((g) => processGroupMembers(g).map((pid) => `${pid} (group ${g}): ${commandLineOf(pid)}`));
  const deadline = Date.now() + ms;
  while (left().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const still = left();
  expect(still, `processes left in the back-end groups; watchdogs: ${still.length > 0 ? describeWatchdogs() : '-'}`).to.deep.equal([]);
}

/**
 * Every process-group watchdog (launch/process-group.ts) alive, with its state, its stdin
 * pipe and every other process holding that pipe: what a failure to kill a group after the
 * front-end died needs to be understood (no watchdog, a watchdog that never saw end-of-file
 * because another process holds the pipe, ...).
 */
function describeWatchdogs(): string {
  const holders = new Map<string, string[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      for (const fd of readdirSync(`/proc/${name}/fd`)) {
        const link = readlinkSync(`/proc/${name}/fd/${fd}`);
        if (link.startsWith('pipe:')) holders.set(link, [...(holders.get(link) ?? []), `${name}/${fd}`]);
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return JSON.stringify(
    processesMentioning('while read -r op id').map((p) => {
      let stdin = '?';
      try {
        stdin = readlinkSync(`/proc/${p.pid}/fd/0`);
      } catch {
        // gone
      }
      return { pid: p.pid, state: statFields(String(p.pid))?.state, stdin, holders: holders.get(stdin) ?? [] };
    }),
  );
}

function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').replaceAll('\0', ' ').trim();
  } catch {
    return '(gone)';
  }
}
