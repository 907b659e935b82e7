/** Test helpers: hex strings (spaces ignored) to bytes and back. */
export function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) throw new Error(`bad hex: ${s}`);
  return Uint8Array.from(clean.match(/../g) ?? [], (b) => parseInt(b, 16));
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Runs fn and returns the error it throws (fails the test if it returns). */
export function thrown(fn: () => unknown): { code?: string; request?: string; rule?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; request?: string; rule?: string; message: string };
  }
  throw new Error('expected an error, none was thrown');
}
