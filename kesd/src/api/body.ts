// Request-body decoding with Go encoding/json semantics where clients rely on them:
// keys match case-insensitively, unknown fields are ignored, []byte fields are strict standard base64.
import { ErrInvalidBody, type KesError } from '../kes/errors.js';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export type JsonObject = Record<string, unknown>;

/** Parses a JSON body; an empty body is `{}` when allowed. */
export function parseJson(body: Buffer, invalid: KesError = ErrInvalidBody): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid;
  }
}

export function parseObject(body: Buffer, opts: { emptyOk?: boolean; invalid?: KesError } = {}): JsonObject {
  if (body.length === 0 && opts.emptyOk) return {};
  const value = parseJson(body, opts.invalid);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw opts.invalid ?? ErrInvalidBody;
  return value as JsonObject;
}

/** The field named `name`, matched exactly first and then case-insensitively (Go's rule). */
export function field(obj: JsonObject, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name];
  for (const k in obj) if (k.toLowerCase() === name) return obj[k];
  return undefined;
}

export function stringField(obj: JsonObject, name: string, invalid: KesError = ErrInvalidBody): string | undefined {
  const v = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid;
  return v;
}

/** A base64 []byte field; absent or null gives undefined. */
export function bytesField(obj: JsonObject, name: string, invalid: KesError = ErrInvalidBody): Buffer | undefined {
  const v = stringField(obj, name, invalid);
  if (v === undefined) return undefined;
  if (!BASE64.test(v)) throw invalid;
  return Buffer.from(v, 'base64');
}

export function stringArrayField(obj: JsonObject, name: string, invalid: KesError = ErrInvalidBody): string[] {
  const v = field(obj, name);
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalid;
  return v as string[];
}
