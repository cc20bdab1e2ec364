/**
 * The binary form of a journal entry, shared by the journal (main thread) and
 * the drain window (pool worker): the value is JSON text encoded once at
 * append, so a drain only slices bytes.
 *
 *   byte 0      flags: 1 = prefix delete, 2 = delete
 *   bytes 1–8   append time, ms (float64 LE)
 *   bytes 9–10  key length in bytes (uint16 LE)
 *   key bytes (UTF-8), then the value's JSON text (UTF-8) to the end
 */

export const FLAG_PREFIX = 1;
export const FLAG_DELETE = 2;
const HEADER = 11;

/** A decoded journal entry: key, JSON text of the value (null deletes), prefix flag, append time. */
export interface StoredEntry {
  k: string;
  /** JSON text of the value; null for a delete */
  v: string | null;
  p: boolean;
  t: number;
}

/** Encodes one entry; `json` null deletes the key (or the prefix). */
export function encodeEntry(key: string, json: string | null, prefix: boolean, t: number): Buffer {
  const keyLen = Buffer.byteLength(key);
  const valueLen = json === null ? 0 : Buffer.byteLength(json);
  const b = Buffer.allocUnsafe(HEADER + keyLen + valueLen);
  b[0] = (prefix ? FLAG_PREFIX : 0) | (json === null ? FLAG_DELETE : 0);
  b.writeDoubleLE(t, 1);
  b.writeUInt16LE(keyLen, 9);
  b.write(key, HEADER, keyLen, 'utf8');
  if (json !== null) b.write(json, HEADER + keyLen, valueLen, 'utf8');
  return b;
}

/** The append time (ms) of an encoded entry. */
export const entryTime = (b: Buffer): number => b.readDoubleLE(1);
/** The flags byte of an encoded entry. */
export const entryFlags = (b: Uint8Array): number => b[0];
/** Where the key starts and ends in an encoded entry. */
export const keyStart = HEADER;
export const keyEnd = (b: Uint8Array): number => HEADER + (b[9] | (b[10] << 8));

/** Decodes an entry (for inspection; the drain works on the bytes). */
export function decodeEntry(b: Buffer): StoredEntry {
  const end = keyEnd(b);
  const flags = b[0];
  return {
    k: b.toString('utf8', HEADER, end),
    v: flags & FLAG_DELETE ? null : b.toString('utf8', end),
    p: (flags & FLAG_PREFIX) !== 0,
    t: b.readDoubleLE(1),
  };
}
