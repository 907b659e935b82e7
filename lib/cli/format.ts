/** Output helpers shared by the commands. */

/** A 64-bit mask as `0x` + 16 hex digits, the one format the CLI prints and emits in JSON. */
export function hex64(mask: bigint): string {
  return `0x${mask.toString(16).padStart(16, '0')}`;
}

/** JSON.stringify that never throws on a bigint: it becomes {@link hex64} (commands should convert first). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? hex64(v) : v), 2);
}

/** `{a: {b: 1}, c: null}` → `[['a.b', '1'], ['c', '-']]`, for text output of decoded structs. */
export function flatten(value: object, prefix = ''): [string, string][] {
  const rows: [string, string][] = [];
  for (const [k, v] of Object.entries(value)) {
    const key = prefix + k;
    if (v !== null && typeof v === 'object') rows.push(...flatten(v as object, `${key}.`));
    else rows.push([key, v === null ? '-' : String(v)]);
  }
  return rows;
}
