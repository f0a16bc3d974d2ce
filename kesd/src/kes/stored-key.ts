// A key as the real KES stores it in a keystore (kes-protocol §8.7): the v0.22/early-2023 JSON
// {"bytes","algorithm","created_at","created_by"}, or (since 2024-02-29, so in v0.24.0) base64 of the protobuf
// KeyVersion. Both are parsed; kesd writes the protobuf form, the one KES v0.24 writes (encodeKesStoredKey).
import { parseAlgorithm, type Algorithm } from '../crypto/key.js';

export interface KesStoredKey {
  readonly algorithm: Algorithm;
  readonly bytes: Buffer;
  /** Absent for JSON-encoded keys: KES never gave them one. */
  readonly hmac?: Buffer;
  readonly createdAt?: string;
  readonly createdBy?: string;
}

export function parseKesStoredKey(value: Buffer): KesStoredKey {
  const text = value.toString('utf8').trim();
  return text.startsWith('{') ? parseJsonKey(text) : parseProtobufKey(Buffer.from(text, 'base64'));
}

function parseJsonKey(text: string): KesStoredKey {
  const v = JSON.parse(text) as { bytes?: string; algorithm?: string; created_at?: string; created_by?: string };
  if (typeof v.bytes !== 'string') throw new Error('JSON key has no "bytes"');
  const algorithm = v.algorithm === undefined || v.algorithm === '' ? 'AES256' : parseAlgorithm(v.algorithm);
  if (algorithm === undefined) throw new Error(`unknown algorithm '${v.algorithm}'`);
  return {
    algorithm,
    bytes: checked32(Buffer.from(v.bytes, 'base64'), 'key'),
    createdAt: v.created_at,
    createdBy: v.created_by,
  };
}

// KeyVersion{1: SecretKey{1: bytes key, 2: uint32 type (1 AES256, 2 ChaCha20)}, 2: HMACKey{1: bytes key, 2: uint32 hash},
//            3: Timestamp{1: int64 seconds, 2: int32 nanos}, 4: string created_by}
function parseProtobufKey(buf: Buffer): KesStoredKey {
  const top = fields(buf);
  const secret = top.get(1);
  const hmac = top.get(2);
  if (!Buffer.isBuffer(secret) || !Buffer.isBuffer(hmac)) throw new Error('protobuf key lacks its secret or HMAC key');
  const s = fields(secret);
  const type = s.get(2);
  const algorithm: Algorithm | undefined = type === 1n ? 'AES256' : type === 2n ? 'ChaCha20' : undefined;
  if (algorithm === undefined) throw new Error(`unknown secret key type ${type}`);
  const h = fields(hmac);
  if (h.get(2) !== 1n) throw new Error('unsupported HMAC hash (only SHA-256)');
  const ts = top.get(3);
  const createdBy = top.get(4);
  return {
    algorithm,
    bytes: checked32(asBytes(s.get(1)), 'key'),
    hmac: checked32(asBytes(h.get(1)), 'HMAC key'),
    createdAt: Buffer.isBuffer(ts) ? timestamp(fields(ts)) : undefined,
    createdBy: Buffer.isBuffer(createdBy) ? createdBy.toString('utf8') : undefined,
  };
}

/** What a key needs to be stored the way KES v0.24 stores it. */
export interface KesKeyVersion {
  readonly algorithm: Algorithm;
  readonly bytes: Uint8Array;
  readonly hmac: Uint8Array;
  /** RFC 3339 with up to nanoseconds. */
  readonly createdAt: string;
  readonly createdBy: string;
}

/**
 * base64 of the protobuf KeyVersion, byte for byte what KES v0.24's EncodeKeyVersion writes (Go's protobuf marshals
 * fields in number order and omits zero values; checked against the §8.7 vector).
 */
export function encodeKesStoredKey(k: KesKeyVersion): string {
  if (k.bytes.length !== 32 || k.hmac.length !== 32) throw new Error('a KES key and its HMAC key are 32 bytes each');
  const { seconds, nanos } = parseTimestamp(k.createdAt);
  const secret = Buffer.concat([bytesField(1, k.bytes), varintField(2, BigInt(k.algorithm === 'AES256' ? 1 : 2))]);
  const hmac = Buffer.concat([bytesField(1, k.hmac), varintField(2, 1n)]);
  const ts = Buffer.concat([
    seconds === 0n ? Buffer.alloc(0) : varintField(1, seconds),
    nanos === 0 ? Buffer.alloc(0) : varintField(2, BigInt(nanos)),
  ]);
  const createdBy = Buffer.from(k.createdBy, 'utf8');
  return Buffer.concat([
    bytesField(1, secret),
    bytesField(2, hmac),
    bytesField(3, ts),
    createdBy.length === 0 ? Buffer.alloc(0) : bytesField(4, createdBy),
  ]).toString('base64');
}

/** Seconds and nanoseconds of an RFC 3339 time (JavaScript's Date keeps only milliseconds, so the fraction is read here). */
function parseTimestamp(text: string): { seconds: bigint; nanos: number } {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  const ms = m === null ? NaN : Date.parse(`${m[1]}${m[3]}`);
  if (m === null || Number.isNaN(ms)) throw new Error(`'${text}' is not an RFC 3339 time`);
  return { seconds: BigInt(ms / 1000), nanos: Number((m[2] ?? '').padEnd(9, '0')) };
}

function varint(v: bigint): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    const b = Number(x & 0x7fn);
    x >>= 7n;
    out.push(x === 0n ? b : b | 0x80);
  } while (x !== 0n);
  return Buffer.from(out);
}

const varintField = (field: number, v: bigint) => Buffer.concat([varint(BigInt(field << 3)), varint(v)]);
const bytesField = (field: number, b: Uint8Array) =>
  Buffer.concat([varint(BigInt((field << 3) | 2)), varint(BigInt(b.length)), b]);

function timestamp(f: Map<number, Buffer | bigint>): string {
  const seconds = Number(f.get(1) ?? 0n);
  const nanos = Number(f.get(2) ?? 0n);
  const iso = new Date(seconds * 1000).toISOString().slice(0, 19);
  return nanos === 0 ? `${iso}Z` : `${iso}.${String(nanos).padStart(9, '0').replace(/0+$/, '')}Z`;
}

function asBytes(v: Buffer | bigint | undefined): Buffer {
  if (!Buffer.isBuffer(v)) throw new Error('protobuf field is not bytes');
  return v;
}

function checked32(b: Buffer, what: string): Buffer {
  if (b.length !== 32) throw new Error(`${what} is ${b.length} bytes, expected 32`);
  return b;
}

/** A minimal protobuf reader: varint (wire type 0) and length-delimited (2) fields; the last occurrence wins. */
function fields(buf: Buffer): Map<number, Buffer | bigint> {
  const out = new Map<number, Buffer | bigint>();
  let i = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (i >= buf.length || shift > 63n) throw new Error('truncated protobuf varint');
      const b = buf[i++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const field = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.set(field, varint());
    else if (wire === 2) {
      const len = Number(varint());
      if (i + len > buf.length) throw new Error('truncated protobuf field');
      out.set(field, buf.subarray(i, i + len));
      i += len;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
  return out;
}
