/**
 * File names are bytes. Linux, tar, OCI layers and Docker treat a name as a byte string with no
 * encoding: `caf\xe9.txt` (Latin-1) and `caf\xc3\xa9.txt` (UTF-8) are two different files, and a
 * name need not be valid UTF-8 at all. clip keeps them so end to end: the tar parser and writer,
 * the index file, the reader and the FUSE addon all carry a name as a *byte string* — a JS string
 * with one character per byte (U+0000..U+00FF), what Buffer's `latin1` encoding produces — the
 * way Go's `string` carries bytes in archive/tar.
 *
 * Convert only at the edges: `nameFromBytes`/`nameBytes` where bytes come from or go to a file,
 * `nameFromText` for text a person typed (UTF-8, e.g. a CLI argument), `displayName` for messages
 * and JSON (invalid UTF-8 shown as `\xNN`).
 */

/** A byte string from raw name bytes. */
export function nameFromBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** The raw bytes of a byte string. Throws on characters above U+00FF (a text string passed by mistake). */
export function nameBytes(name: string): Buffer {
  if (!isByteString(name)) throw new TypeError(`not a byte string (a character above U+00FF): ${JSON.stringify(name)}`);
  return Buffer.from(name, 'latin1');
}

export function isByteString(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/[^\x00-\xff]/.test(s);
}

/** The byte string of a text (a path typed by a person, a JSON string): its UTF-8 bytes. */
export function nameFromText(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

// One well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates, at most U+10FFFF), or any single byte.
const UTF8_OR_BYTE =
  /[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}|[\s\S]/g;

/**
 * A byte string as text for people: UTF-8 decoded, and each byte that is not part of a valid
 * UTF-8 sequence written as `\xNN` (so `caf\xe9.txt` reads `caf\xe9.txt`, `café.txt` reads `café.txt`).
 */
export function displayName(name: string): string {
  if (/^[\x00-\x7f]*$/.test(name)) return name;
  return name.replace(UTF8_OR_BYTE, (seq) => {
    if (seq.length > 1) return Buffer.from(seq, 'latin1').toString('utf8');
    const code = seq.charCodeAt(0);
    return code < 0x80 ? seq : `\\x${code.toString(16).padStart(2, '0')}`;
  });
}
