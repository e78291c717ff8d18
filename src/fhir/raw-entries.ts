// Byte pass-through of unchanged Bundle entries (issue 7): a resource released exactly as the upstream
// sent it is written from the upstream's bytes instead of being serialised again. This finds, in one pass
// over the bytes JSON.parse already accepted, where each `entry[i].resource` object starts and ends.
//
// The bytes must mean exactly what the parsed object means, or the client would receive something that was
// never decided. So any text that is not plain — invalid UTF-8, a key written with escapes, the same key
// twice in one object (JSON.parse keeps the last, other parsers the first), nesting past 64 levels, or an
// entry count that disagrees with the parse — yields no spans, and the caller serialises as before.
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { Bundle } from '@medplum/fhirtypes';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const maxDepth = 64;
/** Keys of all open objects at once (a FHIR resource's deepest path holds a few dozen). */
const maxKeys = 4096;

const ENTRY = Buffer.from('entry');
const RESOURCE = Buffer.from('resource');

function keyIs(bytes: Uint8Array, start: number, end: number, word: Buffer): boolean {
  if (end - start !== word.length) return false;
  for (let k = 0; k < word.length; k++) if (bytes[start + k] !== word[k]) return false;
  return true;
}

/**
 * The span of `entry[i].resource` for each entry of the Bundle whose JSON text is `bytes` (start -1 for
 * an entry without a resource object), or undefined when the text is not plain enough to pass through.
 * `entries` is the number of entries JSON.parse found; a different count here also yields undefined.
 */
export function resourceSpans(bytes: Uint8Array, entries: number): { readonly starts: Int32Array; readonly ends: Int32Array } | undefined {
  if (!isUtf8(bytes)) return undefined;
  const n = bytes.length;
  const starts = new Int32Array(entries).fill(-1);
  const ends = new Int32Array(entries);
  const isObject = new Uint8Array(maxDepth + 2);
  /** Hashes of the keys of every open object, innermost last; `keysFrom[d]` is where depth d's begin. */
  const keyHashes = new Int32Array(maxKeys);
  const keysFrom = new Int32Array(maxDepth + 2);
  let keyCount = 0;
  let depth = 0;
  let expectKey = false;
  /** The key whose value comes next: 1 = top-level `entry`, 2 = `resource` of an entry object. */
  let pendingKey = 0;
  let inEntries = false;
  let entry = -1;
  let resourceStart = -1;

  for (let i = 0; i < n; i++) {
    const c = bytes[i];
    if (c === QUOTE) {
      let j = i + 1;
      if (expectKey) {
        let hash = 0;
        for (; bytes[j] !== QUOTE; j++) {
          if (bytes[j] === BACKSLASH || j === n) return undefined; // an escaped key could spell a duplicate
          hash = (Math.imul(hash, 31) + bytes[j]) | 0;
        }
        hash = (Math.imul(hash, 31) + (j - i)) | 0;
        for (let k = keysFrom[depth]; k < keyCount; k++) if (keyHashes[k] === hash) return undefined;
        if (keyCount === maxKeys) return undefined;
        keyHashes[keyCount++] = hash;
        pendingKey = depth === 1 && keyIs(bytes, i + 1, j, ENTRY) ? 1 : depth === 3 && inEntries && keyIs(bytes, i + 1, j, RESOURCE) ? 2 : 0;
        expectKey = false;
      } else {
        // A value string: skip to its closing quote, stepping over escaped characters.
        for (; bytes[j] !== QUOTE; j++) {
          if (bytes[j] === BACKSLASH) j++;
          if (j >= n) return undefined; // unterminated: not the text JSON.parse accepted
        }
      }
      i = j;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (depth === maxDepth) return undefined;
      if (pendingKey === 1 && c === OPEN_ARRAY) inEntries = true;
      else if (pendingKey === 2 && c === OPEN_OBJECT) resourceStart = i;
      else if (depth === 2 && inEntries && c === OPEN_OBJECT && ++entry === entries) return undefined;
      depth++;
      isObject[depth] = c === OPEN_OBJECT ? 1 : 0;
      keysFrom[depth] = keyCount;
      expectKey = c === OPEN_OBJECT;
      pendingKey = 0;
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      keyCount = keysFrom[depth];
      depth--;
      if (depth === 3 && resourceStart !== -1) {
        starts[entry] = resourceStart;
        ends[entry] = i + 1;
        resourceStart = -1;
      } else if (depth === 1 && inEntries) {
        inEntries = false;
      }
      expectKey = false;
      pendingKey = 0;
    } else if (c === COMMA) {
      expectKey = isObject[depth] === 1;
      pendingKey = 0;
    }
  }
  return depth === 0 && entry + 1 === entries ? { starts, ends } : undefined;
}

/** Resources released exactly as parsed, each with the upstream bytes it was parsed from. */
export type RawResources = WeakMap<object, Uint8Array>;

/** Notes the bytes of every resource of a parsed Bundle page that its text allows (see resourceSpans). */
export function rememberRawResources(raw: RawResources, body: Buffer, entries: readonly { readonly resource?: object }[]): void {
  const spans = resourceSpans(body, entries.length);
  if (!spans) return;
  for (let i = 0; i < entries.length; i++) {
    const resource = entries[i].resource;
    if (resource && spans.starts[i] !== -1) raw.set(resource, body.subarray(spans.starts[i], spans.ends[i]));
  }
}

/** Stands in for a resource written from its raw bytes; random per process, so no data can spell it. */
const placeholderValue = `\u0000raw-resource-${randomBytes(16).toString('hex')}\u0000`;
const placeholder = JSON.stringify(placeholderValue);

/**
 * A Bundle's JSON bytes with each entry resource that is still the very object parsed upstream written
 * from its upstream bytes (so unchanged), everything else serialised. Meaning equals JSON.stringify(bundle).
 */
export function bundleBytes(bundle: Bundle, raw: RawResources): Buffer {
  const bytes: Uint8Array[] = [];
  // The replacer stops the walk at every raw resource: only the Bundle's own skeleton is serialised.
  const skeleton = JSON.stringify(bundle, function (this: unknown, key: string, value: unknown) {
    if (key !== 'resource' || typeof value !== 'object' || value === null) return value;
    const source = raw.get(value);
    if (!source) return value;
    bytes.push(source);
    return placeholderValue;
  });
  if (bytes.length === 0) return Buffer.from(skeleton);
  const text = skeleton.split(placeholder);
  const parts: Uint8Array[] = [Buffer.from(text[0])];
  for (let i = 0; i < bytes.length; i++) parts.push(bytes[i], Buffer.from(text[i + 1]));
  return Buffer.concat(parts);
}
