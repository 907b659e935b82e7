/**
 * A picture of one migration, hand-written SVG (no dependency): dirty pages per
 * round as bars (the full copy first, the switchover round last, in another
 * colour), and a time line with the precopy rounds and the downtime.
 */
import type { MigrationReport } from './report.js';

const W = 640;
const H = 360;
const PAD = 48;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The SVG document for `r`. */
export function migrationSvg(r: MigrationReport): string {
  const rounds = r.rounds;
  const chartH = 200;
  const max = Math.max(1, ...rounds.map((x) => x.dirtyPages));
  const bw = (W - 2 * PAD) / Math.max(1, rounds.length);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${PAD}" y="20" font-size="14">${esc(`${r.device} (${r.ring}) live migration: ${r.verified ? 'verified' : 'NOT verified'}`)}</text>`);
  out.push(`<text x="${PAD}" y="36">dirty pages per round (log scale); downtime ${r.downtimeMs} ms, total ${r.totalMs} ms</text>`);
  const y0 = PAD + chartH;
  const scale = (v: number) => (v <= 0 ? 0 : (Math.log10(v + 1) / Math.log10(max + 1)) * (chartH - 10));
  out.push(`<line x1="${PAD}" y1="${y0}" x2="${W - PAD}" y2="${y0}" stroke="black"/>`);
  out.push(`<line x1="${PAD}" y1="${PAD}" x2="${PAD}" y2="${y0}" stroke="black"/>`);
  out.push(`<text x="${PAD - 4}" y="${PAD + 10}" text-anchor="end">${max}</text><text x="${PAD - 4}" y="${y0}" text-anchor="end">0</text>`);
  rounds.forEach((x, i) => {
    const h = scale(x.dirtyPages);
    const fill = x.switchover ? '#d62728' : i === 0 ? '#7f7f7f' : '#1f77b4';
    const bx = PAD + i * bw + 2;
    out.push(`<rect x="${bx.toFixed(1)}" y="${(y0 - h).toFixed(1)}" width="${(bw - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${fill}"><title>round ${x.round}: ${x.dirtyPages} dirty, ${x.copiedPages} copied</title></rect>`);
    out.push(`<text x="${(bx + (bw - 4) / 2).toFixed(1)}" y="${(y0 - h - 3).toFixed(1)}" text-anchor="middle">${x.dirtyPages}</text>`);
    out.push(`<text x="${(bx + (bw - 4) / 2).toFixed(1)}" y="${y0 + 13}" text-anchor="middle">${x.switchover ? 'stop' : x.round}</text>`);
  });
  // Time line: rounds as ticks, the downtime as a red band at the end.
  const ty = y0 + 50;
  const total = Math.max(r.totalMs, 1);
  const tx = (ms: number) => PAD + (ms / total) * (W - 2 * PAD);
  out.push(`<text x="${PAD}" y="${ty - 12}">time line (ms): precopy rounds, then the downtime</text>`);
  out.push(`<line x1="${PAD}" y1="${ty}" x2="${W - PAD}" y2="${ty}" stroke="#1f77b4" stroke-width="6"/>`);
  const down = Math.min(r.downtimeMs, total);
  out.push(`<rect x="${tx(total - down).toFixed(1)}" y="${ty - 8}" width="${Math.max(2, tx(total) - tx(total - down)).toFixed(1)}" height="16" fill="#d62728"><title>downtime ${r.downtimeMs} ms</title></rect>`);
  for (const x of rounds) out.push(`<line x1="${tx(x.atMs).toFixed(1)}" y1="${ty - 10}" x2="${tx(x.atMs).toFixed(1)}" y2="${ty + 10}" stroke="black"/>`);
  out.push(`<text x="${PAD}" y="${ty + 24}">0</text><text x="${W - PAD}" y="${ty + 24}" text-anchor="end">${r.totalMs} ms (downtime ${r.downtimeMs} ms)</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
