// KES per-message cryptography (kes-protocol §8.1–8.6).
//
//   seal: iv(16) and nonce(12) fresh from the CSPRNG; per-message key K' from (key, iv):
//     AES256   K' = HMAC-SHA256(key, iv)  → AES-256-GCM(K', nonce), 16-byte tag
//     ChaCha20 K' = HChaCha20(key, iv)    → IETF ChaCha20-Poly1305(K', nonce), 16-byte tag
//   associated data = the request context (absent ≡ empty).
//   Output is the raw format written by current KES: ct ‖ tag(16) ‖ iv(16) ‖ nonce(12).
//
//   open: decodes raw, msgpack (first byte 0x95) and legacy JSON (first byte '{') the way the newest
//   KES does: a 0x95/'{' blob that parses as msgpack/JSON is used as such, otherwise it is taken as
//   raw. Algorithm and key id written inside old formats are ignored; the stored key's own
//   algorithm decides. Every failure is ErrDecrypt.
import { createCipheriv, createDecipheriv, createSecretKey, hash } from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha.js';
import { ErrDecrypt } from '../kes/errors.js';
import { randomBytes, randomFill } from './random.js';

export type Algorithm = 'AES256' | 'ChaCha20';

export interface SecretKey {
  readonly algorithm: Algorithm;
  /** 32 bytes. */
  readonly bytes: Buffer;
}

const KEY_LEN = 32;
const TAG_LEN = 16;
const IV_LEN = 16;
const NONCE_LEN = 12;
/** tag + iv + nonce: what raw adds to the plaintext length. */
const OVERHEAD = TAG_LEN + IV_LEN + NONCE_LEN; // 44

/** Accepts the newest names and the v0.22 names, exact spelling only. */
export function parseAlgorithm(name: string): Algorithm | undefined {
  switch (name) {
    case 'AES256':
    case 'AES256-GCM_SHA256':
      return 'AES256';
    case 'ChaCha20':
    case 'XCHACHA20-POLY1305':
      return 'ChaCha20';
    default:
      return undefined;
  }
}

/** The v0.22 spelling of an algorithm (used in msgpack ciphertexts and v0.22 key JSON). */
export function legacyAlgorithmName(a: Algorithm): 'AES256-GCM_SHA256' | 'XCHACHA20-POLY1305' {
  return a === 'AES256' ? 'AES256-GCM_SHA256' : 'XCHACHA20-POLY1305';
}

/** A fresh 32-byte key from the CSPRNG. */
export function newSecretKey(algorithm: Algorithm = 'AES256'): SecretKey {
  return Object.freeze({ algorithm, bytes: randomBytes(KEY_LEN) });
}

// HMAC-SHA256 (RFC 2104) from two one-shot SHA-256 calls:
//   H((K0 ⊕ opad) ‖ H((K0 ⊕ ipad) ‖ m)),  K0 = key (or SHA-256(key) if longer than 64), zero-padded to 64.
// On Node 24 / OpenSSL 3 this is ~8× cheaper than createHmac() for short messages, because it skips
// creating an HMAC context object per call. Tests check it against createHmac.
const BLOCK = 64;
const DIGEST = 32;

/** Writes K0 ⊕ pad into dst[0, 64). */
function xorPad(dst: Buffer, key: Uint8Array, pad: number): void {
  for (let i = 0; i < key.length; i++) dst[i] = key[i] ^ pad;
  dst.fill(pad, key.length, BLOCK);
}

function hmacInto(key: Uint8Array, message: Uint8Array, inner: Buffer, outer: Buffer): Buffer {
  const k0 = key.length > BLOCK ? hash('sha256', key, 'buffer') : key;
  xorPad(inner, k0, 0x36);
  inner.set(message, BLOCK);
  xorPad(outer, k0, 0x5c);
  outer.set(hash('sha256', inner, 'buffer'), BLOCK);
  return hash('sha256', outer, 'buffer');
}

export function hmacSha256(key: Uint8Array, message: Uint8Array): Buffer {
  const inner = Buffer.allocUnsafe(BLOCK + message.length);
  const outer = Buffer.allocUnsafe(BLOCK + DIGEST);
  try {
    return hmacInto(key, message, inner, outer);
  } finally {
    inner.fill(0, 0, BLOCK);
    outer.fill(0);
  }
}

/** v0.22 key id: hex(SHA-256(key)[0:16]). */
export function keyId(bytes: Uint8Array): string {
  return hash('sha256', bytes, 'buffer').subarray(0, 16).toString('hex');
}

// ---------------------------------------------------------------------------------------------
// Per-message key derivation

// HChaCha20 works on 32-bit little-endian words (noble normalises the word order on BE hosts, so
// byte views over these arrays are the right input). Scratch is module-level: everything here is
// synchronous, and the buffers are wiped after each use.
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
const hcKey = new Uint32Array(8);
const hcIv = new Uint32Array(4);
const hcOut = new Uint32Array(8);
const hcKeyBytes = new Uint8Array(hcKey.buffer);
const hcIvBytes = new Uint8Array(hcIv.buffer);
const hcOutBytes = new Uint8Array(hcOut.buffer);

// Scratch for the AES per-message key HMAC(key, iv): (64 + 16) and (64 + 32) bytes.
const hmacInner = Buffer.alloc(BLOCK + IV_LEN);
const hmacOuter = Buffer.alloc(BLOCK + DIGEST);

type AeadName = 'aes-256-gcm' | 'chacha20-poly1305';

/** Calls `use` with the per-message AEAD key; the derived key is not retained afterwards. */
function withMessageKey<T>(key: SecretKey, iv: Uint8Array, use: (cipher: AeadName, k: Uint8Array) => T): T {
  if (key.bytes.length !== KEY_LEN) throw new RangeError('crypto: secret key must be 32 bytes');
  if (key.algorithm === 'AES256') {
    const k = hmacInto(key.bytes, iv, hmacInner, hmacOuter);
    try {
      return use('aes-256-gcm', k);
    } finally {
      k.fill(0);
      hmacInner.fill(0);
      hmacOuter.fill(0);
    }
  }
  if (key.algorithm === 'ChaCha20') {
    hcKeyBytes.set(key.bytes);
    hcIvBytes.set(iv);
    try {
      hchacha(SIGMA, hcKey, hcIv, hcOut);
      return use('chacha20-poly1305', hcOutBytes);
    } finally {
      hcKey.fill(0);
      hcIv.fill(0);
      hcOut.fill(0);
    }
  }
  throw new RangeError(`crypto: unknown algorithm ${String(key.algorithm)}`);
}

// ---------------------------------------------------------------------------------------------
// Seal

/** Encrypts into the raw format ct ‖ tag(16) ‖ iv(16) ‖ nonce(12). */
export function seal(key: SecretKey, plaintext: Uint8Array, associatedData?: Uint8Array): Buffer {
  const n = plaintext.length;
  const out = Buffer.allocUnsafe(n + OVERHEAD);
  const ivAt = n + TAG_LEN;
  randomFill(out, ivAt, IV_LEN + NONCE_LEN); // iv and nonce in one draw, straight into place
  const iv = out.subarray(ivAt, ivAt + IV_LEN);
  const nonce = out.subarray(ivAt + IV_LEN);
  // A KeyObject, not a Buffer: Node 24 probes a Buffer key for key-object slots by throwing and catching internally,
  // which costs ~25 µs per call here; createSecretKey costs ~2 µs. (The copy it keeps lives until GC, like the key.)
  withMessageKey(key, iv, (name, k) => {
    const c =
      name === 'aes-256-gcm'
        ? createCipheriv(name, createSecretKey(k), nonce, { authTagLength: TAG_LEN })
        : createCipheriv(name, createSecretKey(k), nonce, { authTagLength: TAG_LEN });
    if (associatedData !== undefined && associatedData.length > 0) c.setAAD(associatedData);
    const ct = c.update(plaintext);
    const fin = c.final(); // empty for GCM / ChaCha20-Poly1305
    ct.copy(out, 0);
    fin.copy(out, ct.length);
    if (ct.length + fin.length !== n) throw new Error('crypto: unexpected AEAD output length');
    c.getAuthTag().copy(out, n);
  });
  return out;
}

/** A fresh 32-byte data key and its sealed form (kes-protocol §8.5). */
export function generateDataKey(
  key: SecretKey,
  associatedData?: Uint8Array,
): { plaintext: Buffer; ciphertext: Buffer } {
  const plaintext = randomBytes(KEY_LEN);
  return { plaintext, ciphertext: seal(key, plaintext, associatedData) };
}

// ---------------------------------------------------------------------------------------------
// Open

interface Parts {
  readonly ctTag: Uint8Array; // ct ‖ tag
  readonly iv: Uint8Array;
  readonly nonce: Uint8Array;
}

/** Decrypts raw, msgpack or legacy-JSON ciphertexts. Throws ErrDecrypt on any failure. */
export function open(key: SecretKey, ciphertext: Uint8Array, associatedData?: Uint8Array): Buffer {
  let parts: Parts | undefined;
  const first = ciphertext.length > 0 ? ciphertext[0] : -1;
  if (first === 0x95) parts = parseMsgpack(ciphertext);
  else if (first === 0x7b) parts = parseJson(ciphertext);
  if (parts === undefined) parts = splitRaw(ciphertext);
  if (parts === undefined) throw ErrDecrypt;
  try {
    return openParts(key, parts, associatedData);
  } catch {
    throw ErrDecrypt;
  }
}

function splitRaw(b: Uint8Array): Parts | undefined {
  // Newest KES rejects length ≤ 28 outright; anything shorter than tag+iv+nonce cannot be authentic.
  if (b.length < OVERHEAD) return undefined;
  const ivAt = b.length - IV_LEN - NONCE_LEN;
  return { ctTag: b.subarray(0, ivAt), iv: b.subarray(ivAt, ivAt + IV_LEN), nonce: b.subarray(ivAt + IV_LEN) };
}

function openParts(key: SecretKey, p: Parts, associatedData?: Uint8Array): Buffer {
  if (p.iv.length !== IV_LEN || p.nonce.length !== NONCE_LEN || p.ctTag.length < TAG_LEN) throw ErrDecrypt;
  const ctLen = p.ctTag.length - TAG_LEN;
  return withMessageKey(key, p.iv, (name, k) => {
    const d =
      name === 'aes-256-gcm'
        ? createDecipheriv(name, createSecretKey(k), p.nonce, { authTagLength: TAG_LEN })
        : createDecipheriv(name, createSecretKey(k), p.nonce, { authTagLength: TAG_LEN });
    d.setAuthTag(p.ctTag.subarray(ctLen));
    if (associatedData !== undefined && associatedData.length > 0) d.setAAD(associatedData);
    const pt = d.update(p.ctTag.subarray(0, ctLen));
    let fin: Buffer;
    try {
      fin = d.final(); // throws when not authentic
    } catch {
      pt.fill(0);
      throw ErrDecrypt;
    }
    return fin.length === 0 ? pt : Buffer.concat([pt, fin]);
  });
}

// ---------------------------------------------------------------------------------------------
// msgpack: exactly fixarray(5) [str algorithm, str key-id, bin iv(16), bin nonce(12), bin ct‖tag],
// any str / bin width, no trailing bytes. The two strings are skipped (newest KES ignores them).

function parseMsgpack(b: Uint8Array): Parts | undefined {
  if (b[0] !== 0x95) return undefined;
  let pos = 1;
  const len = (width: 1 | 2 | 4): number => {
    if (pos + width > b.length) return -1;
    let v = 0;
    for (let i = 0; i < width; i++) v = v * 256 + b[pos + i];
    pos += width;
    return v;
  };
  const skipStr = (): boolean => {
    if (pos >= b.length) return false;
    const t = b[pos++];
    let n: number;
    if (t >= 0xa0 && t <= 0xbf) n = t & 0x1f;
    else if (t === 0xd9) n = len(1);
    else if (t === 0xda) n = len(2);
    else if (t === 0xdb) n = len(4);
    else return false;
    if (n < 0 || pos + n > b.length) return false;
    pos += n;
    return true;
  };
  const readBin = (): Uint8Array | undefined => {
    if (pos >= b.length) return undefined;
    const t = b[pos++];
    let n: number;
    if (t === 0xc4) n = len(1);
    else if (t === 0xc5) n = len(2);
    else if (t === 0xc6) n = len(4);
    else return undefined;
    if (n < 0 || pos + n > b.length) return undefined;
    const v = b.subarray(pos, pos + n);
    pos += n;
    return v;
  };
  if (!skipStr() || !skipStr()) return undefined;
  const iv = readBin();
  if (iv === undefined || iv.length !== IV_LEN) return undefined;
  const nonce = readBin();
  if (nonce === undefined || nonce.length !== NONCE_LEN) return undefined;
  const ctTag = readBin();
  if (ctTag === undefined || pos !== b.length) return undefined;
  return { ctTag, iv, nonce };
}

// ---------------------------------------------------------------------------------------------
// Legacy JSON (KES ≤ v0.19): {"aead":"AES-256-GCM-HMAC-SHA-256"|"ChaCha20Poly1305","id"?,"iv","nonce","bytes"}

const LEGACY_AEADS = new Set(['AES-256-GCM-HMAC-SHA-256', 'ChaCha20Poly1305']);
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function b64(v: unknown): Buffer | undefined {
  if (typeof v !== 'string' || !B64.test(v)) return undefined;
  return Buffer.from(v, 'base64');
}

function parseJson(b: Uint8Array): Parts | undefined {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.length).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  // The aead name is not used to pick the cipher (the stored key's algorithm is), but an unknown name
  // means this is not a KES ciphertext.
  if (typeof o.aead !== 'string' || !LEGACY_AEADS.has(o.aead)) return undefined;
  if (o.id !== undefined && typeof o.id !== 'string') return undefined;
  const iv = b64(o.iv);
  const nonce = b64(o.nonce);
  const ctTag = b64(o.bytes);
  if (
    iv === undefined ||
    iv.length !== IV_LEN ||
    nonce === undefined ||
    nonce.length !== NONCE_LEN ||
    ctTag === undefined
  ) {
    return undefined;
  }
  return { ctTag, iv, nonce };
}
